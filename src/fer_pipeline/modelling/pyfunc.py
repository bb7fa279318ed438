"""The trained model as an MLflow pyfunc model: encoded images in, probabilities out.

No `from __future__ import annotations` here: MLflow reads the type hints of `predict`.
"""

from typing import Any

import mlflow.pyfunc
import pandas as pd

from fer_pipeline.images import decode_image
from fer_pipeline.modelling.models import ModelBundle
from fer_pipeline.modelling.predictor import Predictor


class FerPyfuncModel(mlflow.pyfunc.PythonModel):
    """``predict`` takes a DataFrame with an ``image`` column of encoded face crops and
    returns one probability column per class plus ``label``."""

    def __init__(self, bundle: ModelBundle):
        self.bundle = bundle
        self._predictor: Predictor | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "_predictor": None}

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if self._predictor is None:
            self._predictor = Predictor(self.bundle)
        crops = [decode_image(data) for data in model_input["image"]]
        probs = pd.DataFrame(self._predictor.probabilities(crops), columns=self._predictor.classes)
        return probs.assign(label=probs.idxmax(axis=1))
