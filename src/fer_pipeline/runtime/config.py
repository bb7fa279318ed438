"""``RecognitionConfig``: how faces are found and cropped, the one settings object of the
Python API (``Recogniser``), the HTTP API (``ServingSettings.recognition``, each field
overridden by ``FER_<FIELD>``) and batch inference (``InferenceConfig`` extends it), so
that the ``inference`` parameters and the environment set the same fields."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from fer_pipeline.config.params import Params
from fer_pipeline.runtime.faces import DETECT_MAX_SIDE, MARGIN, MIN_FACE, SCORE_THRESHOLD


def _existing_file(value: str | None) -> str | None:
    if value is not None and not Path(value).is_file():
        raise ValueError(f"no such file: {value!r} (null: the YuNet model shipped)")
    return value


class RecognitionConfig(Params):
    """How faces are found (OpenCV's YuNet or Haar cascade) and cropped for the model."""

    detector: Literal["yunet", "haar"] = Field(
        "yunet", description="`yunet` (OpenCV's YuNet, shipped in the package) or `haar`"
    )
    yunet_model: Annotated[str | None, AfterValidator(_existing_file)] = Field(
        None,
        json_schema_extra={"shown": "none: the file shipped"},
        description="another YuNet ONNX file than the one shipped",
    )
    min_face: int = Field(MIN_FACE, gt=0, description="the smallest face side, in pixels")
    score_threshold: float = Field(
        SCORE_THRESHOLD, gt=0, le=1, description="YuNet's confidence threshold, in (0, 1]"
    )
    margin: float = Field(
        MARGIN,
        ge=0,
        allow_inf_nan=False,
        description="grow the square crop (as wide as the face's box) by this fraction of "
        "its width on each side",
    )
    detect_max_side: int = Field(
        DETECT_MAX_SIDE,
        gt=0,
        description="larger images are searched for faces on a copy downscaled to this "
        "longest side (boxes in the image's pixels)",
    )
