"""The exported model at run time, with ONNX Runtime and NumPy only (and OpenCV to resize
crops): no torch, no timm. Everything needed to feed the model (classes, input size,
normalisation) and the facts of its training come from the ONNX file's own metadata,
written by the ``export`` pipeline."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from fer_pipeline.data.images import resized_rgb
from fer_pipeline.data.schema import METADATA_KEY


class OnnxClassifier:
    """Class probabilities for face crops (uint8 grayscale or RGB arrays) from an ONNX
    file (path or bytes) exported by this project; ``source`` names bytes in errors
    (where they came from)."""

    def __init__(
        self, model: bytes | str | Path, threads: int | None = None, source: str | None = None
    ):
        where = source or (str(model) if isinstance(model, (str, Path)) else "the ONNX model")
        if isinstance(model, (str, Path)) and not Path(model).is_file():
            raise FileNotFoundError(f"no ONNX model file at {model}")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(
                str(model) if isinstance(model, Path) else model,
                options,
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # ONNX Runtime's own kinds: InvalidProtobuf, Fail, ...
            raise ValueError(
                f"{where} is not a valid ONNX model ({exc}); it may be truncated: "
                "re-export it with `kedro run --pipelines export`"
            ) from exc
        metadata = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in metadata:
            raise ValueError(
                f"{where} has no {METADATA_KEY!r} metadata: export it with "
                "`kedro run --pipelines export`"
            )
        self.spec: dict[str, Any] = json.loads(metadata[METADATA_KEY])
        self.classes: list[str] = list(self.spec["classes"])
        self.image_size: int = int(self.spec["image_size"])
        # Fitted on val after training (ModelSpec.temperature); exports made before it: 1.
        self.temperature = float(self.spec.get("temperature", 1.0))
        mean = np.asarray(self.spec["mean"], np.float32)
        std = np.asarray(self.spec["std"], np.float32)
        self._scale = (1 / (255 * std))[:, None, None]
        self._shift = (-mean / std)[:, None, None]
        self._input = self.session.get_inputs()[0].name

    def probabilities(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """``(len(crops), classes)`` probabilities, calibrated by the model's
        temperature."""
        if not len(crops):
            return np.empty((0, len(self.classes)), dtype=np.float32)
        batch = np.stack([resized_rgb(c, self.image_size) for c in crops])
        x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2)).astype(np.float32)
        x *= self._scale  # in place: 8x faster than (x / 255 - mean) / std
        x += self._shift
        logits = self.session.run(None, {self._input: x})[0] / self.temperature
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
