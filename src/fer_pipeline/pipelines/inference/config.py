"""Batch inference's parameters: every key, its default, and the checks run before any work.

``InferenceConfig`` is the one place for the defaults; ``conf/base/parameters_inference.yml``
sets only what a run changes. The inference nodes' parameter is typed as
``InferenceConfig``, so Kedro builds and checks it before the first node runs: an unknown
key (``video_fsp``), a bad choice (``detector: dlib``), a wrong type or a value out of
range (``video_fps: 0``) stops the run at once, naming the key and what it may be.

``InferenceConfig`` extends ``RecognitionConfig`` (``fer_pipeline.runtime.config``: what
finds and crops faces), which the API shares: it reads the recognition keys of these same
``inference`` parameters, and its ``FER_<KEY>`` environment variables override them
(``fer_pipeline.serving.settings``). This module imports neither torch nor the pipeline's
nodes.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from fer_pipeline.runtime.config import RecognitionConfig

__all__ = ["InferenceConfig", "RecognitionConfig"]


class InferenceConfig(RecognitionConfig):
    """Batch inference: which model, what to write, how often to sample videos."""

    model_uri: str | None = Field(
        None,
        description="an MLflow model instead of the latest `model_onnx`, e.g. "
        "`models:/fer_pipeline@champion`",
    )
    annotate: bool = Field(True, description="also write copies with boxes and labels drawn")
    video_fps: float = Field(
        2.0, gt=0, allow_inf_nan=False, description="video frames classified per second of video"
    )
    max_pixels: int = Field(
        40_000_000, gt=0, description="images whose header claims more pixels are skipped undecoded"
    )

    def recognition(self) -> dict[str, Any]:
        """The recognition settings as the dict ``recogniser_from_params`` takes."""
        return self.model_dump(include=set(RecognitionConfig.model_fields))
