"""Batch inference's parameters: every key, its default, and the checks run before any work.

``InferenceConfig`` is the one place for the defaults; ``conf/base/parameters_inference.yml``
sets only what a run changes. The inference nodes' parameter is typed as
``InferenceConfig``, so Kedro builds and checks it before the first node runs: an unknown
key (``video_fsp``), a bad choice (``detector: dlib``), a wrong type or a value out of
range (``video_fps: 0``) stops the run at once, naming the key and what it may be.

``RecognitionConfig`` holds what finds and classifies faces (the detector, the smallest
face, the crop margin...), apart from what batch inference adds, so that the API can share
it. This module imports neither torch nor the pipeline's nodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from fer_pipeline.faces import DETECT_MAX_SIDE, MARGIN, MIN_FACE, SCORE_THRESHOLD
from fer_pipeline.params import Params


def _existing_file(value: str | None) -> str | None:
    if value is not None and not Path(value).is_file():
        raise ValueError(f"no such file: {value!r} (null: the YuNet model shipped)")
    return value


class RecognitionConfig(Params):
    """How faces are found (OpenCV's YuNet or Haar cascade) and cropped for the model."""

    detector: Literal["yunet", "haar"] = "yunet"  # YuNet ships in the package
    yunet_model: Annotated[str | None, AfterValidator(_existing_file)] = None  # another ONNX
    min_face: int = Field(MIN_FACE, gt=0)  # smallest face side, pixels
    score_threshold: float = Field(SCORE_THRESHOLD, gt=0, le=1)  # YuNet's confidence threshold
    margin: float = Field(MARGIN, ge=0, allow_inf_nan=False)  # of the face size, each side
    detect_max_side: int = Field(DETECT_MAX_SIDE, gt=0)  # larger images: searched downscaled


class InferenceConfig(RecognitionConfig):
    """Batch inference: which model, what to write, how often to sample videos."""

    model_uri: str | None = None  # an MLflow model, e.g. models:/fer_pipeline@champion
    annotate: bool = True  # also write copies with boxes and labels drawn
    video_fps: float = Field(2.0, gt=0, allow_inf_nan=False)  # frames classified per second
    max_pixels: int = Field(40_000_000, gt=0)  # larger images are skipped before decoding

    def recognition(self) -> dict[str, Any]:
        """The recognition settings as the dict ``recogniser_from_params`` takes."""
        return self.model_dump(include=set(RecognitionConfig.model_fields))
