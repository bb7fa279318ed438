"""kedro-mlflow's datasets, as this project uses them: artifacts that stay versioned Kedro
datasets, and the pyfunc model with what a catalog entry cannot hold."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from kedro.io import Version
from kedro_mlflow.io.artifacts import MlflowArtifactDataset
from kedro_mlflow.io.models import MlflowModelTrackingDataset

from fer_pipeline.modelling.export import to_onnx
from fer_pipeline.tracking.pyfunc import (
    ONNX_ARTIFACT,
    SIGNATURE,
    WEIGHTS_ARTIFACT,
    FerPyfuncModel,
    input_example,
)


class VersionedArtifactDataset(MlflowArtifactDataset):
    """``MlflowArtifactDataset`` around a dataset versioned with the catalog's own save
    version: set ``versioned: true`` on this entry, not on the wrapped ``dataset``.

    kedro-mlflow builds the wrapped dataset from its config alone, so a wrapped
    ``versioned: true`` draws its own timestamp, which Kedro 1.x refuses ("All datasets
    in the catalog must have the same save version"), and Kedro drops a ``version``
    key from a dataset's config. Here the wrapped dataset is built versioned, then
    given the catalog's ``Version``.
    """

    def __new__(cls, dataset: dict[str, Any], version: Version | None = None, **kwargs: Any):
        wrapped = super().__new__(
            cls, dataset={**dataset, "versioned": version is not None}, **kwargs
        )
        if version is not None:
            wrapped._version = version
        return wrapped


class PyfuncModelDataset(MlflowModelTrackingDataset):
    """``MlflowModelTrackingDataset`` (flavour ``mlflow.pyfunc``) that logs a
    ``FerPyfuncModel`` with its signature, an input example and its weights as the
    ``weights`` artifact (a safetensors file), none of which a catalog entry can hold."""

    def __init__(self, save_args: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(
            flavor="mlflow.pyfunc", pyfunc_workflow="python_model", save_args=save_args, **kwargs
        )

    def _save(self, model: FerPyfuncModel) -> None:
        with tempfile.TemporaryDirectory() as folder:
            weights, exported = Path(folder) / "model.safetensors", Path(folder) / "model.onnx"
            model.bundle.save(weights)
            exported.write_bytes(to_onnx(model.bundle))
            self._save_args.update(
                artifacts={WEIGHTS_ARTIFACT: str(weights), ONNX_ARTIFACT: str(exported)},
                signature=SIGNATURE,
                input_example=input_example(),
            )
            super()._save(model)
