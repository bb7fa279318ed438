"""The export's parameters: every key, its default, and the checks run before any work.

``ExportConfig`` is the one place for the defaults; ``conf/base/parameters_export.yml``
sets only what a run changes. The export node's parameter is typed as ``ExportConfig``,
so Kedro builds and checks it before the first node runs: an unknown key, a wrong type or
a value out of range stops the run at once, naming the key.
"""

from __future__ import annotations

from pydantic import Field

from fer_pipeline.config.params import Params


class ExportConfig(Params):
    """How the export pipeline checks the ONNX and TorchScript exports and calibrates and
    measures the int8 model."""

    parity_images: int = Field(64, gt=0)  # real test images the exports are checked on
    tolerance: float = Field(1e-4, gt=0, allow_inf_nan=False)  # largest logit difference
    calibration_images: int = Field(256, gt=0)  # real validation images for int8 calibration
    timing_faces: int = Field(50, gt=0)  # faces timed one at a time for ms_per_face (median)
    seed: int = 42  # of the image samples; conf/base sets the project's ${globals:seed}
