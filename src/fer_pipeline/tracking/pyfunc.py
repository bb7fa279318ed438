"""The trained model as an MLflow pyfunc model: encoded images in, probabilities out.

The weights travel as the model's ``weights`` artifact, a ``ModelBundle`` safetensors
file, not inside the pickled Python object, and its ONNX export as the ``onnx``
artifact, which serving runs without unpickling anything
(``fer_pipeline.tracking.load_registered_onnx``).

No `from __future__ import annotations` here: MLflow reads the type hints of `predict`.
"""

from typing import Any

import cv2
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from fer_pipeline.data.images import decode_image
from fer_pipeline.data.schema import CLASSES
from fer_pipeline.modelling.models import ModelBundle
from fer_pipeline.modelling.predictor import Predictor

WEIGHTS_ARTIFACT = "weights"
ONNX_ARTIFACT = "onnx"
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("binary", "image")]),
    outputs=Schema([*(ColSpec("double", name) for name in CLASSES), ColSpec("string", "label")]),
)


def input_example() -> pd.DataFrame:
    """One encoded 48 px grey image, the size of a FER+ face."""
    gradient = np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (48, 1))
    return pd.DataFrame({"image": [cv2.imencode(".png", gradient)[1].tobytes()]})


class FerPyfuncModel(mlflow.pyfunc.PythonModel):
    """``predict`` takes a DataFrame with an ``image`` column of encoded face crops and
    returns one probability column per class plus ``label``."""

    def __init__(self, bundle: ModelBundle | None = None):
        self.bundle = bundle
        self._predictor: Predictor | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"bundle": None, "_predictor": None}  # the weights are the artifact

    def load_context(self, context) -> None:
        self.bundle = ModelBundle.load(context.artifacts[WEIGHTS_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if self._predictor is None:
            self._predictor = Predictor(self.bundle)
        crops = [decode_image(data) for data in model_input["image"]]
        probs = pd.DataFrame(self._predictor.probabilities(crops), columns=self._predictor.classes)
        return probs.assign(label=probs.idxmax(axis=1))
