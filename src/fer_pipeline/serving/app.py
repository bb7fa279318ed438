"""The HTTP API: ``uvicorn fer_pipeline.serving.app:app`` from the project root.

The model is the latest versioned ``model`` in the Kedro catalog of the project in
``FER_PROJECT_PATH`` (default: the working directory; environment ``FER_KEDRO_ENV``), or
the MLflow model at ``FER_MODEL_URI`` when that is set (``models:/fer_pipeline@champion``,
read from its weights file without unpickling anything). Other settings, also from the
environment: ``FER_MAX_UPLOAD_BYTES`` (default 10 MB), ``FER_MAX_PIXELS`` (default 40
megapixels), ``FER_DETECTOR`` (``haar`` or ``yunet``), ``FER_YUNET_MODEL`` (its ONNX file),
``FER_MIN_FACE`` (smallest face side in pixels, default 48),
``FER_BACKEND`` (``onnx``, the default: the model exported at start-up and run by ONNX
Runtime; or ``torch``).
"""

from __future__ import annotations

import io
import os
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, HTTPException, Query, Response, UploadFile
from fastapi.responses import HTMLResponse
from PIL import Image, UnidentifiedImageError

from fer_pipeline.faces import MIN_FACE, FaceDetector
from fer_pipeline.images import decode_image
from fer_pipeline.modelling.models import ModelBundle
from fer_pipeline.modelling.predictor import Predictor
from fer_pipeline.serving.recognise import FaceRecogniser

PAGE = Path(__file__).with_name("static") / "index.html"


@dataclass
class Settings:
    """What the environment sets; cropping uses the defaults of ``FaceRecogniser``."""

    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    detector: str = "haar"
    yunet_model: str | None = None
    min_face: int = MIN_FACE
    backend: str = "onnx"

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            max_upload_bytes=int(os.environ.get("FER_MAX_UPLOAD_BYTES", cls.max_upload_bytes)),
            max_pixels=int(os.environ.get("FER_MAX_PIXELS", cls.max_pixels)),
            detector=os.environ.get("FER_DETECTOR", cls.detector),
            yunet_model=os.environ.get("FER_YUNET_MODEL") or None,
            min_face=int(os.environ.get("FER_MIN_FACE", cls.min_face)),
            backend=os.environ.get("FER_BACKEND", cls.backend),
        )


def load_model() -> tuple[ModelBundle, str]:
    """The model to serve and a version string for ``/health``."""
    uri = os.environ.get("FER_MODEL_URI")
    if uri:  # its safetensors weights: nothing is unpickled
        from fer_pipeline.tracking import load_registered_bundle

        return load_registered_bundle(uri), uri
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project = Path(os.environ.get("FER_PROJECT_PATH", Path.cwd())).resolve()
    bootstrap_project(project)
    env = os.environ.get("FER_KEDRO_ENV")
    catalog = KedroSession.create(project_path=project, env=env).load_context().catalog
    dataset = catalog.get("model")
    if not dataset.exists():
        raise RuntimeError(
            f"no trained model in {project}: run `kedro run` first, "
            "or set FER_MODEL_URI to an MLflow model"
        )
    return dataset.load(), dataset.resolve_load_version()


def create_app(
    recogniser: FaceRecogniser | None = None, version: str = "", settings: Settings | None = None
) -> FastAPI:
    """The app; without a ``recogniser`` it loads the model when it starts."""
    settings = settings or Settings.from_env()
    state: dict[str, Any] = {"recogniser": recogniser, "version": version}
    lock = threading.Lock()  # one inference at a time: torch already uses every core

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if state["recogniser"] is None:
            bundle, state["version"] = load_model()
            state["recogniser"] = FaceRecogniser(
                Predictor(bundle, backend=settings.backend),
                FaceDetector(settings.detector, settings.yunet_model, settings.min_face),
            )
        yield

    app = FastAPI(
        title="fer_pipeline",
        summary="Facial expressions of the faces in a photo",
        lifespan=lifespan,
    )

    @app.get("/health")
    def health() -> dict[str, Any]:
        """The model being served."""
        spec = state["recogniser"].predictor.bundle.spec
        return {
            "status": "ok",
            "model": spec.name,
            "version": state["version"],
            "image_size": spec.image_size,
            "classes": spec.classes,
        }

    @app.post("/predict")
    def predict(
        file: Annotated[UploadFile, File(description="an image (JPEG, PNG, ...)")],
        response: Response,
        detect: Annotated[bool, Query(description="false: the image is one cropped face")] = True,
    ) -> dict[str, Any]:
        """Faces found, largest first, each with its box ``[x, y, w, h]``, ``label`` and
        the probability of every class; an empty list when there is no face. The
        ``Server-Timing`` header gives the milliseconds spent decoding, detecting and
        classifying."""
        started = time.perf_counter()
        data = file.file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, f"the file is larger than {settings.max_upload_bytes} bytes")
        try:
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
        except (UnidentifiedImageError, OSError) as exc:
            raise HTTPException(415, f"not an image: {file.filename}") from exc
        if width * height > settings.max_pixels:
            raise HTTPException(
                413,
                f"the image has {width * height:,} pixels; the limit is {settings.max_pixels:,}",
            )
        try:
            pixels = decode_image(data)
        except ValueError as exc:
            raise HTTPException(422, f"the image cannot be decoded: {exc}") from exc
        timings = {"decode": time.perf_counter() - started}
        with lock:
            faces = state["recogniser"].recognise(pixels, detect=detect, timings=timings)
        response.headers["Server-Timing"] = ", ".join(
            f"{name};dur={seconds * 1000:.2f}" for name, seconds in timings.items()
        )
        return {"width": width, "height": height, "faces": faces}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text()

    return app


app = create_app()
