"""Project hooks."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import matplotlib.pyplot as plt
import mlflow
from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)


class MlflowArtifactsHook:
    """Logs a saved dataset to the active MLflow run when its catalog entry has
    ``metadata: {mlflow_artifact: <path in the run>}``: figures as images, anything
    else JSON-serialisable as a JSON file. The dataset itself stays a plain versioned
    Kedro dataset."""

    def __init__(self) -> None:
        self._paths: dict[str, str] = {}

    @hook_impl
    def after_catalog_created(self, catalog: Any) -> None:
        self._paths = {}
        for name in catalog.keys():  # noqa: SIM118 (explicit entries; patterns resolve on use)
            metadata = getattr(catalog.get(name), "metadata", None) or {}
            if "mlflow_artifact" in metadata:
                self._paths[name] = metadata["mlflow_artifact"]

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        path = self._paths.get(dataset_name)
        if path is None or mlflow.active_run() is None:
            return
        if isinstance(data, plt.Figure):
            mlflow.log_figure(data, path)
        else:
            mlflow.log_dict(data, path)
        logger.info("Logged %s to MLflow as %s", dataset_name, path)


class DataclassParamsHook:
    """Logs the fields of node parameters that Kedro validated into dataclasses (the
    training recipe) as flat MLflow parameters, ``training.lr`` and so on, defaults
    included: kedro-mlflow flattens only dicts."""

    @hook_impl
    def before_node_run(self, node: Any, inputs: dict[str, Any]) -> None:
        if mlflow.active_run() is None:
            return
        for name, value in inputs.items():
            if name.startswith("params:") and dataclasses.is_dataclass(value):
                prefix = name.removeprefix("params:")
                mlflow.log_params(
                    {f"{prefix}.{k}": v for k, v in dataclasses.asdict(value).items()}
                )
