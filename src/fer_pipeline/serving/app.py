"""The HTTP API: ``uvicorn fer_pipeline.serving.app:app`` from the project root.

The model is an ONNX export run by ONNX Runtime and NumPy (``OnnxClassifier``; neither
torch nor timm is imported): the ONNX file in ``FER_ONNX_MODEL``, the ONNX artifact of
the MLflow model in ``FER_MODEL_URI`` (``models:/fer_pipeline@champion``; nothing is
unpickled), or by default the latest versioned ``model_onnx`` of the project in
``FER_PROJECT_PATH`` (default: the working directory; environment ``FER_KEDRO_ENV``),
which ``kedro run --pipelines export`` writes (``FER_INT8=1``: its int8 twin). Every
other setting comes from the environment too: see ``Settings`` (docs/serving.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import (
    Depends,
    FastAPI,
    File,
    HTTPException,
    Query,
    Request,
    Response,
    Security,
    UploadFile,
)
from fastapi.exception_handlers import http_exception_handler
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from swagger_ui_bundle import swagger_ui_path

from fer_pipeline.faces import DETECT_MAX_SIDE, MIN_FACE, FaceDetector
from fer_pipeline.images import Header, NotAnImage, TooManyPixels, decode_image, read_header
from fer_pipeline.serving.classifier import OnnxClassifier
from fer_pipeline.serving.recognise import FaceRecogniser
from fer_pipeline.versions import latest_complete

PAGE = Path(__file__).with_name("static") / "index.html"
logger = logging.getLogger("fer_pipeline.serving")


LIGHT_WORKERS = 1
"""Workers of the lane for images up to ``Settings.light_pixels``."""


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


@dataclass
class Settings:
    """What the environment sets (``FER_<NAME>``); cropping uses the defaults of
    ``FaceRecogniser``."""

    max_upload_bytes: int = 10 * 1024 * 1024  # FER_MAX_UPLOAD_BYTES
    max_pixels: int = 40_000_000  # FER_MAX_PIXELS
    max_faces: int = 32  # FER_MAX_FACES: the largest faces classified per image
    detector: str = "yunet"  # FER_DETECTOR: yunet | haar
    yunet_model: str | None = None  # FER_YUNET_MODEL: another YuNet ONNX file
    min_face: int = MIN_FACE  # FER_MIN_FACE
    detect_max_side: int = (
        DETECT_MAX_SIDE  # FER_DETECT_MAX_SIDE: larger images: searched downscaled
    )
    workers: int = 2  # FER_WORKERS: images decoded and searched at once (+1 for light ones)
    light_pixels: int = 4_000_000  # FER_LIGHT_PIXELS: images with a worker of their own
    queue: int = 8  # FER_QUEUE: requests waiting for a worker before 503
    api_key: str | None = None  # FER_API_KEY: required as the X-API-Key header when set
    allowed_hosts: list[str] = field(  # FER_ALLOWED_HOSTS: Host headers served
        default_factory=lambda: ["localhost", "127.0.0.1", "[::1]", "::1"]
    )
    cors_origins: list[str] = field(default_factory=list)  # FER_CORS_ORIGINS: none = off
    body_timeout_s: float = 30.0  # FER_BODY_TIMEOUT_S: longest wait for a body's next chunk
    max_uploads: int = 64  # FER_MAX_UPLOADS: bodies received at once; more get 503

    @classmethod
    def from_env(cls) -> Settings:
        env, default = os.environ.get, cls()

        def number(name: str, value: int) -> int:
            return int(env(f"FER_{name}", value))

        return cls(
            max_upload_bytes=number("MAX_UPLOAD_BYTES", default.max_upload_bytes),
            max_pixels=number("MAX_PIXELS", default.max_pixels),
            max_faces=number("MAX_FACES", default.max_faces),
            detector=env("FER_DETECTOR", default.detector),
            yunet_model=env("FER_YUNET_MODEL") or None,
            min_face=number("MIN_FACE", default.min_face),
            detect_max_side=number("DETECT_MAX_SIDE", default.detect_max_side),
            workers=number("WORKERS", default.workers),
            light_pixels=number("LIGHT_PIXELS", default.light_pixels),
            queue=number("QUEUE", default.queue),
            api_key=env("FER_API_KEY") or None,
            allowed_hosts=_names(env("FER_ALLOWED_HOSTS", ",".join(default.allowed_hosts))),
            cors_origins=_names(env("FER_CORS_ORIGINS", "")),
            body_timeout_s=float(env("FER_BODY_TIMEOUT_S", default.body_timeout_s)),
            max_uploads=number("MAX_UPLOADS", default.max_uploads),
        )


class BodyLimit:
    """Guards request bodies. One over ``limit`` bytes gets 413: at once from its
    ``Content-Length``, before any of it is read, and while a body without one streams
    in. One whose next chunk takes over ``timeout`` seconds gets 408. One that finds
    ``uploads`` bodies being received gets 503 with ``Retry-After`` at once. These
    answers, and any other sent before its request's body has all come, close the
    connection."""

    def __init__(
        self, app: Any, limit: int, timeout: float | None = None, uploads: int | None = None
    ):
        self.app, self.limit, self.timeout, self.uploads = app, limit, timeout, uploads
        self.receiving = 0  # bodies being received now

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        size = int(declared) if declared.isdigit() else 0
        if size > self.limit:
            return await _refuse(scope, send, self._too_large(f"{size:,} bytes declared"))
        pending = size > 0 or b"transfer-encoding" in headers  # a body is to come
        if pending and self.uploads is not None and self.receiving >= self.uploads:
            busy = f"too many uploads at once ({self.receiving} under way): try again shortly"
            return await _refuse(scope, send, _Refusal(503, busy, {"Retry-After": "1"}))
        self.receiving += pending
        seen, started = 0, False

        def received() -> None:
            nonlocal pending
            self.receiving -= pending
            pending = False

        async def counted() -> dict:
            nonlocal seen
            try:  # no time limit once the body is in: what follows waits for a disconnect
                async with asyncio.timeout(self.timeout if pending else None):
                    message = await receive()
            except TimeoutError:
                received()
                raise _Refusal(408, f"no more of the body came for {self.timeout:g} s") from None
            seen += len(message.get("body", b""))
            if seen > self.limit:
                received()
                raise self._too_large(f"over {self.limit:,} bytes sent")
            if not message.get("more_body", False):
                received()
            return message

        async def tracked(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if pending:  # the rest of the body is not read: the connection goes
                    message = {**message, "headers": _closing(message.get("headers", []))}
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _Refusal as refusal:  # raised outside FastAPI's body parsing
            if not started:
                await _refuse(scope, send, refusal)
        finally:
            received()

    def _too_large(self, what: str) -> _Refusal:
        return _Refusal(413, f"the request body is larger than {self.limit:,} bytes ({what})")


class _Refusal(StarletteHTTPException):
    """A request body refused while it comes in; an HTTP exception, as FastAPI passes
    those on from its body parsing (others become 400). The connection is closed."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(status, detail, headers={"Connection": "close", **(headers or {})})


def _closing(headers: list) -> list:
    if any(name.lower() == b"connection" for name, _ in headers):
        return headers
    return [*headers, (b"connection", b"close")]


async def _refuse(scope: dict, send: Any, refusal: _Refusal) -> None:
    logger.warning(
        "%d %s %s: %s", refusal.status_code, scope["method"], scope["path"], refusal.detail
    )
    response = JSONResponse(
        {"detail": refusal.detail}, status_code=refusal.status_code, headers=refusal.headers
    )
    await response(scope, _no_body, send)


async def _no_body() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


def load_model() -> tuple[OnnxClassifier, str]:
    """The model to serve and a version string for ``/health``."""
    path = os.environ.get("FER_ONNX_MODEL")
    if path:
        return OnnxClassifier(Path(path)), path
    uri = os.environ.get("FER_MODEL_URI")
    if uri:
        if _int8():
            raise ValueError(
                "FER_INT8 serves the export pipeline's int8 model; a registered model has "
                "only its fp32 ONNX artifact: unset FER_INT8 or set FER_ONNX_MODEL"
            )
        from fer_pipeline.tracking import load_registered_onnx

        return OnnxClassifier(load_registered_onnx(uri), source=f"the ONNX model of {uri}"), uri
    return _latest_export()


def _int8() -> bool:
    return os.environ.get("FER_INT8", "").lower() in ("1", "true", "yes")


def _latest_export() -> tuple[OnnxClassifier, str]:
    """The newest complete version of the catalog's ``model_onnx`` (``model_onnx_int8``
    with ``FER_INT8=1``) in ``FER_PROJECT_PATH``, found from the configuration alone: a
    Kedro session would import every pipeline, and with them torch. Versions an export
    did not finish are skipped with a warning."""
    from kedro.config import OmegaConfigLoader

    project = Path(os.environ.get("FER_PROJECT_PATH", Path.cwd())).resolve()
    config = OmegaConfigLoader(
        str(project / "conf"),
        env=os.environ.get("FER_KEDRO_ENV"),
        base_env="base",
        default_run_env="local",
    )
    folder = project / config["catalog"]["model_onnx_int8" if _int8() else "model_onnx"]["filepath"]
    latest = latest_complete(folder)
    if latest is None:
        raise RuntimeError(
            f"no exported model in {project}: run `kedro run --pipelines export` first, or "
            "set FER_ONNX_MODEL to an ONNX file or FER_MODEL_URI to an MLflow model"
        )
    return OnnxClassifier(latest), latest.parent.name


def create_app(
    recogniser: FaceRecogniser | None = None, version: str = "", settings: Settings | None = None
) -> FastAPI:
    """The app; without a ``recogniser`` it loads the model when it starts."""
    settings = settings or Settings.from_env()
    state: dict[str, Any] = {"recogniser": recogniser, "version": version}
    model_lock = threading.Lock()  # one classification at a time: it uses every core
    # Decoding and detection (OpenCV releases the GIL) run in bounded pools outside the
    # model lock, so a heavy image holds one worker and not the requests behind it, and
    # images up to `light_pixels` have a worker of their own: they never queue behind
    # large ones. A lane whose workers and queue are full answers 503.
    lanes = {
        name: (
            ThreadPoolExecutor(workers, thread_name_prefix=f"fer-{name}"),
            threading.BoundedSemaphore(workers + settings.queue),
        )
        for name, workers in (
            ("large", settings.workers),
            ("light", LIGHT_WORKERS),
            # Headers are parsed in a lane of their own, off the event loop: Pillow walks
            # a PNG's chunks in Python, and 800,000 of them take seconds.
            ("header", settings.workers),
        )
    }

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if state["recogniser"] is None:
            classifier, state["version"] = load_model()
            state["recogniser"] = FaceRecogniser(
                classifier,
                FaceDetector(
                    settings.detector,
                    settings.yunet_model,
                    settings.min_face,
                    max_side=settings.detect_max_side,
                ),
            )
        yield
        for pool, _ in lanes.values():
            pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="fer_pipeline",
        summary="Facial expressions of the faces in a photo",
        lifespan=lifespan,
        docs_url=None,  # served below from the package's files, not from a CDN
        redoc_url=None,
    )
    app.add_middleware(
        BodyLimit,
        limit=settings.max_upload_bytes + 64 * 1024,  # + the form around the file
        timeout=settings.body_timeout_s,
        uploads=settings.max_uploads,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST"],
            allow_headers=["X-API-Key"],
        )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    app.mount("/docs-static", StaticFiles(directory=swagger_ui_path), name="docs-static")

    @app.exception_handler(StarletteHTTPException)
    async def log_refusal(request: Request, exc: StarletteHTTPException) -> Response:
        if 400 <= exc.status_code < 500:
            logger.warning(
                "%d %s %s: %s", exc.status_code, request.method, request.url.path, exc.detail
            )
        return await http_exception_handler(request, exc)

    def get(path: str, **options: Any) -> Any:
        """``app.get`` that answers HEAD too, as load balancers and uptime checks ask."""

        def register(endpoint: Any) -> Any:
            head = {**options, "include_in_schema": False}
            app.add_api_route(path, endpoint, methods=["HEAD"], **head)
            return app.get(path, **options)(endpoint)

        return register

    key_header = APIKeyHeader(name="X-API-Key", auto_error=False)

    async def authorised(key: str | None = Security(key_header)) -> None:  # noqa: B008
        if settings.api_key and key != settings.api_key:
            raise HTTPException(401, "a valid X-API-Key header is required")

    @get("/health", dependencies=[Depends(authorised)])
    def health() -> dict[str, Any]:
        """The model being served."""
        spec = state["recogniser"].predictor.spec
        return {
            "status": "ok",
            "model": spec["name"],
            "version": state["version"],
            "image_size": spec["image_size"],
            "classes": spec["classes"],
            "val_accuracy": spec.get("val_accuracy"),
        }

    def recognise(
        data: bytes, header: Header, detect: bool, timings: dict[str, float]
    ) -> dict[str, Any]:
        """Decode (EXIF orientation applied), find and classify; in a pool worker."""
        started = time.perf_counter()
        try:
            pixels = decode_image(data, header)
        except ValueError as exc:
            raise HTTPException(422, f"the image cannot be decoded: {exc}") from exc
        timings["decode"] = time.perf_counter() - started
        recogniser = state["recogniser"]
        boxes = recogniser.find(pixels, detect, timings)
        kept = boxes[: settings.max_faces]
        with model_lock:
            faces = recogniser.classify(pixels, kept, timings)
        height, width = pixels.shape[:2]
        answer = {"width": width, "height": height, "faces": faces}
        if len(boxes) > len(kept):
            answer |= {"faces_found": len(boxes), "faces_capped": True}
        return answer

    async def in_lane(name: str, work: Any, *args: Any) -> Any:
        """``work(*args)`` in a worker of lane ``name``; 503 when its workers and queue
        are taken."""
        pool, slots = lanes[name]
        if not slots.acquire(blocking=False):
            raise HTTPException(503, "busy: try again shortly", headers={"Retry-After": "1"})
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, work, *args)
        finally:
            slots.release()

    @app.post("/predict", dependencies=[Depends(authorised)])
    async def predict(
        file: Annotated[UploadFile, File(description="an image (JPEG, PNG, ...)")],
        detect: Annotated[bool, Query(description="false: the image is one cropped face")] = True,
    ) -> JSONResponse:
        """Faces found, largest first (at most ``FER_MAX_FACES``; ``faces_capped`` says
        when there were more), each with its box ``[x, y, w, h]``, ``label`` and the
        probability of every class; an empty list when there is no face. ``width`` and
        ``height`` are those of the image as shown (EXIF orientation applied), the
        frame of the boxes. The ``Server-Timing`` header gives the milliseconds spent
        decoding, detecting and classifying. 503 with ``Retry-After`` when the server
        is full."""
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, f"the file is larger than {settings.max_upload_bytes} bytes")
        header = await in_lane("header", _header, data, file.filename, settings.max_pixels)
        light = header.width * header.height <= settings.light_pixels
        timings: dict[str, float] = {}
        answer = await in_lane(
            "light" if light else "large", recognise, data, header, detect, timings
        )
        timing = ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in timings.items())
        # The answer holds only str, int, float, list and dict: returned as it is, it
        # skips FastAPI's jsonable_encoder walk (a tenth of the framework's time).
        return JSONResponse(answer, headers={"Server-Timing": timing})

    @get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title="fer_pipeline API",
            swagger_js_url="/docs-static/swagger-ui-bundle.js",
            swagger_css_url="/docs-static/swagger-ui.css",
            swagger_favicon_url="/docs-static/favicon-32x32.png",
        )

    @get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text()

    return app


def _header(data: bytes, filename: str | None, max_pixels: int) -> Header:
    """The image's header, before anything is decoded: 415 when ``data`` is no image,
    422 when its header is broken, 413 when it claims over ``max_pixels`` (a
    decompression bomb)."""
    try:
        header = read_header(data)
    except TooManyPixels as exc:  # Pillow's own ceiling, far above ours
        raise HTTPException(413, f"the image claims too many pixels ({exc})") from None
    except NotAnImage as exc:
        raise HTTPException(415, f"not an image: {filename}") from exc
    except ValueError as exc:
        raise HTTPException(422, f"the image cannot be decoded: {exc}") from exc
    if header.width * header.height > max_pixels:
        raise HTTPException(
            413,
            f"the image has {header.width * header.height:,} pixels; the limit is {max_pixels:,}",
        )
    return header


app = create_app()
