"""The evaluation's parameters: every key, its default, and the checks run before any work.

These models are the one place for the defaults; ``conf/base/parameters_evaluation.yml``
and the environments set only what they change. The evaluation node's parameter is typed
as ``EvaluationConfig``, so Kedro builds and checks it before the first node runs: an
unknown key, a bad choice, a wrong type or a value out of range stops the run at once,
naming the key.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from fer_pipeline.config.params import Params


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {value!r}")
    return value


Device = Annotated[str, AfterValidator(_device)]
"""``auto`` (CUDA when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
Precision = Literal["auto", "fp32", "bf16", "fp16"]
"""Autocast dtype; ``auto``: bf16 (or fp16) on CUDA, fp32 on a CPU."""
Zoom = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class TtaAugment(Params):
    """The augmented test-time views: random flip, rotation, zoom and shift of each image
    (``BatchAugment``), drawn from ``seed`` + the view's index."""

    hflip: float = Field(0.5, ge=0, le=1)  # probability of a mirrored view
    rotation: float = Field(5.0, ge=0, le=180)  # degrees, +/-
    scale: tuple[Zoom, Zoom] = (0.95, 1.05)  # random zoom, [low, high]
    translate: float = Field(0.03, ge=0, le=1)  # fraction of the side, +/-

    @model_validator(mode="after")
    def _scale_range(self) -> TtaAugment:
        if self.scale[0] > self.scale[1]:
            raise ValueError(f"scale must be [low, high] with low <= high, got {list(self.scale)}")
        return self


class EvaluationConfig(Params):
    """How the evaluation pipeline scores the latest model on ``val`` and ``test``."""

    device: Device = "auto"
    precision: Precision = "auto"
    batch_size: int = Field(256, gt=0)  # images per forward pass
    tta: bool = True  # also report test-time augmentation beside the plain figures
    tta_views: int = Field(4, ge=0)  # the image, its mirror and this many augmented views
    tta_augment: TtaAugment = TtaAugment()  # the augmented views
    seed: int = 42  # of the augmented views; conf/base sets the project's ${globals:seed}
