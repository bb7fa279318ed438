"""The model the API serves: an ONNX export run by ONNX Runtime and NumPy
(``OnnxClassifier``; neither torch nor timm is imported)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fer_pipeline.runtime.classifier import OnnxClassifier
from fer_pipeline.runtime.model_store import load_registered_onnx
from fer_pipeline.runtime.recogniser import latest_export

if TYPE_CHECKING:
    from fer_pipeline.serving.settings import ServingSettings


def load_model(settings: ServingSettings | None = None) -> tuple[OnnxClassifier, str]:
    """The model to serve and a version string for ``/health``: the ONNX file
    ``settings.onnx_model``, else the ONNX artifact of the MLflow model
    ``settings.model_uri`` (nothing is unpickled), else the newest complete export of
    the project. ``settings``: by default from the environment."""
    if settings is None:
        from fer_pipeline.serving.settings import ServingSettings

        settings = ServingSettings()
    if settings.onnx_model:
        return OnnxClassifier(settings.onnx_model), str(settings.onnx_model)
    if settings.model_uri:
        uri = settings.model_uri
        return OnnxClassifier(load_registered_onnx(uri), source=f"the ONNX model of {uri}"), uri
    return _latest_export(settings)


def _latest_export(settings: ServingSettings) -> tuple[OnnxClassifier, str]:
    """The newest complete version of the catalog's ``model_onnx`` (``model_onnx_int8``
    with ``FER_INT8=1``) in the project, found as the Python API finds it
    (``runtime.recogniser.latest_export``). Versions an export did not finish are
    skipped with a warning."""
    try:
        latest = latest_export(settings.project_path, settings.kedro_env, settings.int8)
    except FileNotFoundError as exc:
        raise RuntimeError(
            f"{exc} (the API: or set FER_ONNX_MODEL to an ONNX file, or FER_MODEL_URI to "
            "an MLflow model)"
        ) from exc
    return OnnxClassifier(latest), latest.parent.name
