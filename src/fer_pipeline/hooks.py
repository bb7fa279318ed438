"""Project hooks: what kedro-mlflow has no dataset for."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl

from fer_pipeline.schema import SPLITS
from fer_pipeline.tracking import active_run_id, log_split_input

logger = logging.getLogger(__name__)


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


class SplitInputsHook:
    """Logs each split a run reads or writes (``train``, ``val``, ``test``) as an MLflow
    dataset input of the run: digest of its content, row count, faces per source."""

    def __init__(self) -> None:
        self._logged: set[tuple[str, str]] = set()
        self._sources: dict[str, str] = {}

    @hook_impl
    def after_catalog_created(self, catalog: Any) -> None:
        for name in SPLITS:
            dataset = catalog.get(name) if name in catalog else None
            self._sources[name] = str(getattr(dataset, "_filepath", name))

    def _log(self, name: str, data: Any) -> None:
        run_id = active_run_id()
        if name not in SPLITS or run_id is None or (run_id, name) in self._logged:
            return
        log_split_input(name, data, self._sources.get(name, name))
        self._logged.add((run_id, name))

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data: Any) -> None:
        self._log(dataset_name, data)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        self._log(dataset_name, data)


class SystemMetricsHook:
    """Turns on MLflow's system metrics (CPU, memory, disk, network, and GPU when there
    is one) for the run kedro-mlflow starts, when the ``tracking`` parameters say so."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        tracking = context.params.get("tracking") or {}
        if tracking.get("system_metrics"):
            mlflow.set_system_metrics_sampling_interval(tracking["system_metrics_interval"])
            mlflow.enable_system_metrics_logging()
        else:
            mlflow.disable_system_metrics_logging()
