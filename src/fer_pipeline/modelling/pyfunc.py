"""The trained model as an MLflow pyfunc model: encoded images in, probabilities out.

No `from __future__ import annotations` here: MLflow reads the type hints of `predict`.
"""

from typing import Any

import mlflow.pyfunc
import pandas as pd
import torch

from fer_pipeline.modelling.models import ModelBundle
from fer_pipeline.modelling.tensors import images_to_tensor
from fer_pipeline.modelling.train import predict_logits


class FerPyfuncModel(mlflow.pyfunc.PythonModel):
    """``predict`` takes a DataFrame with an ``image`` column of encoded face crops and
    returns one probability column per class plus ``label``."""

    def __init__(self, bundle: ModelBundle):
        self.bundle = bundle
        self._model: torch.nn.Module | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "_model": None}

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if self._model is None:
            self._model = self.bundle.build()
        spec = self.bundle.spec
        images = images_to_tensor(list(model_input["image"]), spec["image_size"], desc="predict")
        logits = predict_logits(self._model, images, spec["mean"], spec["std"], torch.device("cpu"))
        probs = pd.DataFrame(logits.softmax(1).numpy(), columns=spec["classes"])
        return probs.assign(label=probs.idxmax(axis=1))
