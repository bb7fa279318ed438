"""The HTTP API, built by a factory: ``uvicorn --factory
fer_pipeline.serving.app:create_app`` from the project root. Importing this module
builds nothing.

``create_app`` reads its settings (``ServingSettings``: ``FER_*`` environment variables
and the project's ``inference`` parameters, docs/serving.md), adds the guards (upload
limits, allowed hosts, CORS) and the routes (``routes.router``); the model is loaded and
the recognition service built when the app starts (``lifespan``), and both the settings
and the service live on ``app.state``, where the routes find them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from swagger_ui_bundle import swagger_ui_path

from fer_pipeline.runtime.faces import FaceRecogniser, recogniser_from_params
from fer_pipeline.serving.middleware import BodyLimit
from fer_pipeline.serving.model import load_model
from fer_pipeline.serving.routes import router
from fer_pipeline.serving.service import RecognitionService
from fer_pipeline.serving.settings import ServingSettings

__all__ = ["create_app", "load_model"]

logger = logging.getLogger("fer_pipeline.serving")


def create_app(
    settings: ServingSettings | None = None,
    *,
    recogniser: FaceRecogniser | None = None,
    version: str = "",
) -> FastAPI:
    """The API. ``settings``: by default from the environment and the project. Without
    a ``recogniser`` the model is loaded (``load_model``) and the detector built from
    ``settings.recognition`` when the app starts; ``version`` is that of a
    ``recogniser`` given."""
    settings = settings or ServingSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        found, served = recogniser, version
        if found is None:
            classifier, served = load_model(settings)
            found = recogniser_from_params(classifier, settings.recognition.model_dump())
        app.state.service = RecognitionService(found, served, settings)
        try:
            yield
        finally:
            app.state.service.close()

    app = FastAPI(
        title="fer_pipeline",
        summary="Facial expressions of the faces in a photo",
        lifespan=lifespan,
        docs_url=None,  # served by routes.docs from the package's files, not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
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
    app.add_exception_handler(StarletteHTTPException, _logged)
    app.mount("/docs-static", StaticFiles(directory=swagger_ui_path), name="docs-static")
    app.include_router(router)
    return app


async def _logged(request: Request, exc: Exception) -> Response:
    """HTTP errors as FastAPI answers them, client errors logged with their reason."""
    assert isinstance(exc, StarletteHTTPException)
    if 400 <= exc.status_code < 500:
        logger.warning(
            "%d %s %s: %s", exc.status_code, request.method, request.url.path, exc.detail
        )
    return await http_exception_handler(request, exc)
