"""The API's routes. What they use comes from the app they serve: its settings
(``app.state.settings``) and its recognition service (``app.state.service``, built when
the app starts)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, Security, UploadFile
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader

from fer_pipeline.serving.service import RecognitionService
from fer_pipeline.serving.settings import ServingSettings

PAGE = Path(__file__).with_name("static") / "index.html"

router = APIRouter()


# The dependencies are async: a sync one would run in FastAPI's thread pool, a hop per
# request.
async def app_settings(request: Request) -> ServingSettings:
    return request.app.state.settings


async def app_service(request: Request) -> RecognitionService:
    return request.app.state.service


AppSettings = Annotated[ServingSettings, Depends(app_settings)]
AppService = Annotated[RecognitionService, Depends(app_service)]
_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def authorised(
    settings: AppSettings, key: Annotated[str | None, Security(_key_header)] = None
) -> None:
    """401 unless the ``X-API-Key`` header is ``FER_API_KEY``, when that is set."""
    expected = settings.api_key
    if expected is not None and not (
        key is not None
        and secrets.compare_digest(key.encode(), expected.get_secret_value().encode())
    ):
        raise HTTPException(401, "a valid X-API-Key header is required")


def _get(path: str, **options: Any) -> Any:
    """``router.get`` that answers HEAD too, as load balancers and uptime checks ask."""

    def register(endpoint: Any) -> Any:
        head = {**options, "include_in_schema": False}
        router.add_api_route(path, endpoint, methods=["HEAD"], **head)
        return router.get(path, **options)(endpoint)

    return register


@_get("/health", dependencies=[Depends(authorised)])
async def health(service: AppService) -> dict[str, Any]:
    """The model being served."""
    return service.health()


@router.post("/predict", dependencies=[Depends(authorised)])
async def predict(
    file: Annotated[UploadFile, File(description="an image (JPEG, PNG, ...)")],
    service: AppService,
    detect: Annotated[bool, Query(description="false: the image is one cropped face")] = True,
) -> JSONResponse:
    """Faces found, largest first (at most ``FER_MAX_FACES``; ``faces_capped`` says
    when there were more), each with its box ``[x, y, w, h]``, ``label`` and the
    probability of every class; an empty list when there is no face. ``width`` and
    ``height`` are those of the image as shown (EXIF orientation applied), the frame of
    the boxes. The ``Server-Timing`` header gives the milliseconds spent decoding,
    detecting and classifying. 503 with ``Retry-After`` when the server is full."""
    limit = service.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"the file is larger than {limit} bytes")
    answer, timings = await service.predict(data, file.filename, detect)
    timing = ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in timings.items())
    # The answer holds only str, int, float, list and dict: returned as it is, it skips
    # FastAPI's jsonable_encoder walk (a tenth of the framework's time).
    return JSONResponse(answer, headers={"Server-Timing": timing})


@_get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI, from the package's files (``/docs-static``), not from a CDN."""
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title="fer_pipeline API",
        swagger_js_url="/docs-static/swagger-ui-bundle.js",
        swagger_css_url="/docs-static/swagger-ui.css",
        swagger_favicon_url="/docs-static/favicon-32x32.png",
    )


@_get("/", response_class=HTMLResponse, include_in_schema=False)
def page() -> str:
    return PAGE.read_text()
