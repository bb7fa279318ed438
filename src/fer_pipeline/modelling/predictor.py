"""A trained model ready to classify face crops with PyTorch (the MLflow pyfunc model;
serving runs the ONNX export with ``OnnxClassifier`` instead)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fer_pipeline.data.images import resized_rgb
from fer_pipeline.modelling.device import predict_logits, resolve_device
from fer_pipeline.modelling.models import ModelBundle


class Predictor:
    """Class probabilities for face crops (uint8 grayscale or RGB arrays)."""

    def __init__(self, bundle: ModelBundle, device: str = "cpu", batch_size: int = 64):
        self.bundle, self.batch_size = bundle, batch_size
        self.classes: list[str] = bundle.spec.classes
        self.device = resolve_device(device)
        self.model = bundle.build().to(self.device)

    def probabilities(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """``(len(crops), classes)`` probabilities, calibrated by the model's
        temperature."""
        if not crops:
            return np.empty((0, len(self.classes)), dtype=np.float32)
        spec = self.bundle.spec
        batch = np.stack([resized_rgb(c, spec.image_size) for c in crops])
        images = torch.from_numpy(batch).permute(0, 3, 1, 2)
        with torch.inference_mode():
            logits = predict_logits(
                self.model, images, spec.mean, spec.std, self.device, self.batch_size
            )
        return (logits / spec.temperature).softmax(1).numpy()
