"""Project hooks: what kedro-mlflow has no dataset for."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pydantic
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset, CachedDataset, DatasetError, Version
from kedro.io.core import generate_timestamp

from fer_pipeline.data.schema import SPLITS
from fer_pipeline.data.shards import Shards
from fer_pipeline.data.versions import is_complete, latest_complete, mark_complete, mark_incomplete
from fer_pipeline.tracking.runs import active_run_id, log_split_input

logger = logging.getLogger(__name__)


class TypedParamsHook:
    """Logs the fields of node parameters that Kedro validated into typed models (the
    training recipe's dataclass, the pydantic models of evaluation, export and inference)
    as flat MLflow parameters, ``training.lr``, ``evaluation.tta_augment.scale`` and so
    on, defaults included: kedro-mlflow flattens only dicts."""

    @hook_impl
    def before_node_run(self, node: Any, inputs: dict[str, Any]) -> None:
        if mlflow.active_run() is None:
            return
        for name, value in inputs.items():
            if not name.startswith("params:"):
                continue
            if dataclasses.is_dataclass(value):
                fields = dataclasses.asdict(value)
            elif isinstance(value, pydantic.BaseModel):
                fields = value.model_dump(mode="json")
            else:
                continue
            mlflow.log_params(_flat(name.removeprefix("params:"), fields))


def _flat(prefix: str, fields: dict[str, Any]) -> dict[str, Any]:
    """``{prefix.key: value}``, nested dicts as ``prefix.key.sub`` (as kedro-mlflow
    flattens dicts)."""
    flat: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(f"{prefix}.{key}", value))
        else:
            flat[f"{prefix}.{key}"] = value
    return flat


class SplitInputsHook:
    """Logs each split a run reads or writes (``train``, ``val``, ``test``) as an MLflow
    dataset input of the run: digest of its content, row count, faces per source."""

    def __init__(self) -> None:
        self._logged: set[tuple[str, str]] = set()
        self._sources: dict[str, str] = {}
        self._catalog: Any = None

    @hook_impl
    def after_catalog_created(self, catalog: Any) -> None:
        self._catalog = catalog
        for name in SPLITS:
            dataset = catalog.get(name) if name in catalog else None
            self._sources[name] = str(getattr(dataset, "_filepath", name))

    def _log(self, name: str, data: Any) -> None:
        run_id = active_run_id()
        if name not in SPLITS or run_id is None or (run_id, name) in self._logged:
            return
        if not isinstance(data, pd.DataFrame | Shards):  # a stream, now saved: read it back
            data = self._catalog.load(name)
        if isinstance(data, Shards):
            data = data.read([c for c in data.columns if c != "image"])
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


def _versioned_local(catalog: Any, name: str) -> AbstractVersionedDataset | None:
    """The catalog's dataset ``name`` when it is versioned and on the local disk."""
    if catalog is None or name not in catalog:
        return None
    dataset = catalog.get(name)
    if isinstance(dataset, CachedDataset):
        dataset = dataset._dataset
    if not isinstance(dataset, AbstractVersionedDataset) or not dataset._version:
        return None
    if getattr(dataset, "_protocol", "file") != "file":
        return None
    return dataset


def _save_folder(dataset: AbstractVersionedDataset) -> Path:
    """``<filepath>/<version>/``: the folder the run saves ``dataset`` in."""
    return Path(str(dataset._filepath)) / dataset.resolve_save_version()


class CompleteVersionsHook:
    """Every versioned output appears complete or not at all (see ``versions``).

    Saving: ``before_dataset_saved`` marks the version folder incomplete before the first
    byte; once a node has saved *all* its outputs, ``after_dataset_saved`` removes the
    marks of its outputs together (Kedro's ``after_node_run`` fires before the outputs
    are saved). A generator node saves its outputs chunk by chunk, so its marks go at
    ``after_pipeline_run``. A run that fails or is killed leaves its marks.

    Loading: ``before_pipeline_run`` pins each versioned input of the run (a dataset it
    reads but does not write) to its newest complete version, with a warning for each
    incomplete version skipped; the run's own outputs still load what the run saved, and
    versions pinned with ``--load-versions`` are kept.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._catalog: Any = None  # the catalog of this process's nodes
        self._saved: dict[str, set[str]] = {}  # node -> outputs saved so far
        self._marked: dict[str, set[Path]] = {}  # node -> version folders it marked

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        with self._lock:
            self._catalog = catalog
            self._saved.clear()
            self._marked.clear()
        pinned = run_params.get("load_versions") or {}
        for name in sorted(pipeline.inputs()):
            dataset = _versioned_local(catalog, name)
            if dataset is not None:
                self._pin_complete(name, dataset, pinned.get(name))

    @staticmethod
    def _pin_complete(name: str, dataset: AbstractVersionedDataset, pinned: str | None) -> None:
        filepath = Path(str(dataset._filepath))
        version = dataset._version.load or pinned
        if version:  # the user's choice
            if not is_complete(filepath / version):
                logger.warning(
                    "Loading %s version %s, as pinned, though its run did not finish it",
                    name,
                    version,
                )
            return
        latest = latest_complete(filepath)  # warns about each version it skips
        if latest is not None:
            dataset._version = Version(latest.parent.name, dataset._version.save)
        elif any(filepath.glob(f"*/{filepath.name}")):
            raise DatasetError(
                f"{name}: no complete version in {filepath}, only versions whose run did "
                "not finish: run the pipeline that writes it again"
            )

    @hook_impl
    def before_node_run(self, catalog: Any) -> None:
        self._catalog = catalog  # before_dataset_saved is not given it

    @hook_impl
    def before_dataset_saved(self, dataset_name: str, node: Any) -> None:
        dataset = _versioned_local(self._catalog, dataset_name)
        if dataset is None:
            return
        if dataset._version.save is None:  # else each save would draw a new timestamp
            dataset._version = Version(dataset._version.load, generate_timestamp())
        folder = _save_folder(dataset)
        mark_incomplete(folder)
        with self._lock:
            self._marked.setdefault(node.name, set()).add(folder)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, node: Any) -> None:
        if inspect.isgeneratorfunction(node.func):
            return  # saved chunk by chunk: complete at after_pipeline_run
        with self._lock:
            saved = self._saved.setdefault(node.name, set())
            saved.add(dataset_name)
            if not saved.issuperset(node.outputs):
                return
            del self._saved[node.name]
            folders = self._marked.pop(node.name, set())
        for folder in sorted(folders):
            mark_complete(folder)

    @hook_impl
    def after_pipeline_run(self, pipeline: Any, catalog: Any) -> None:
        """Every node ran and saved all its outputs: none is left marked (those of
        generator nodes are unmarked here)."""
        for name in sorted(pipeline.all_outputs()):
            dataset = _versioned_local(catalog, name)
            if dataset is not None:
                mark_complete(_save_folder(dataset))

    @hook_impl
    def on_pipeline_error(self, pipeline: Any, catalog: Any) -> None:
        left = []
        for name in sorted(pipeline.all_outputs()):
            dataset = _versioned_local(catalog, name)
            if dataset is not None and not is_complete(folder := _save_folder(dataset)):
                left.append(str(folder))
        if left:
            logger.warning(
                "The run failed: loaders will skip the versions it did not finish: %s",
                ", ".join(left),
            )
