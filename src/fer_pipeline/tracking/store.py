"""The MLflow tracking store: opened only by the runs that track, and checked first.

kedro-mlflow's own hook opens the store (``mlflow.db``) when the Kedro context is
created, for every run, so a corrupt file stopped even batch inference, which records
nothing, with an SQL error that did not name the file. ``TrackingStoreHook`` takes its
place (``settings.py``: ``DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow",)``): a run whose
pipelines are all in ``tracking.disable_tracking.pipelines`` of ``mlflow.yml`` gets the
tracking URI set but the store is not opened; any other run has the SQLite file checked
first, and a file that is not a database stops it before the first node with a message
naming the file and what to do.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import mlflow
from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl
from kedro.framework.project import pipelines as project_pipelines
from kedro_mlflow.config.kedro_mlflow_config import KedroMlflowConfig, _validate_uri
from kedro_mlflow.config.resolvers import resolve_random_name
from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook
from kedro_mlflow.framework.hooks.mlflow_hook import mlflow_hook as plugin_hook
from kedro_mlflow.framework.hooks.utils import _assert_mlflow_enabled
from omegaconf import OmegaConf

from fer_pipeline.runtime.model_store import (
    TrackingStoreError,
    check_tracking_store,
    sqlite_file,
    store_advice,
)

MLFLOW_PATTERNS = ["mlflow*", "mlflow*/**", "**/mlflow*"]
"""Where kedro-mlflow looks for ``mlflow.yml`` (as its hook registers them)."""


def _sqlite_cause(error: BaseException) -> sqlite3.Error | None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, sqlite3.Error):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _mlflow_config(context: Any) -> KedroMlflowConfig:
    """``mlflow.yml`` as kedro-mlflow's hook reads it, without opening the store."""
    if not OmegaConf.has_resolver("km.random_name"):
        OmegaConf.register_new_resolver("km.random_name", resolve_random_name, use_cache=True)
    loader = context.config_loader
    loader.config_patterns.setdefault("mlflow", MLFLOW_PATTERNS)
    try:
        conf = loader["mlflow"]
    except MissingConfigException:
        conf = {}
    return KedroMlflowConfig.model_validate({**conf})


class TrackingStoreHook(MlflowHook):
    """kedro-mlflow's hook, which opens the tracking store only for runs that track and
    checks an SQLite store first.

    Register it in place of the plugin's: ``HOOKS = (TrackingStoreHook(), ...)`` and
    ``DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow",)``. Every hook runs first
    (``tryfirst``), as the plugin's did, so the other hooks find the MLflow run active.
    """

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        hooks = getattr(context, "_hook_manager", None)
        if hooks is not None and hooks.is_registered(plugin_hook):
            raise RuntimeError(
                "TrackingStoreHook replaces kedro-mlflow's own hook, which is registered "
                'too: add DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow",) to settings.py'
            )
        config = _mlflow_config(context)
        requested = getattr(project_pipelines, "_requested_pipelines", None) or ["__default__"]
        if mlflow.active_run() is None and not _assert_mlflow_enabled(requested, config):
            self._without_store(context, config)
            return
        tracking = config.server.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        for uri in (tracking, config.server.mlflow_registry_uri):
            check_tracking_store(uri)
        try:
            super().after_context_created(context)
        except Exception as error:
            cause = _sqlite_cause(error)
            path = sqlite_file(mlflow.get_tracking_uri()) or sqlite_file(tracking)
            if cause is None or path is None:
                raise
            raise TrackingStoreError(store_advice(path, cause)) from error

    def _without_store(self, context: Any, config: KedroMlflowConfig) -> None:
        """What kedro-mlflow's hook sets up, but not the experiment, which opens the
        store: the run records nothing (``before_pipeline_run`` sees its pipelines
        disabled), and a model read from the registry (``models:/``) finds the URI."""
        server = config.server
        uri = server.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "mlruns")
        server.mlflow_tracking_uri = _validate_uri(context.project_path, uri)
        if server.mlflow_registry_uri is not None:
            server.mlflow_registry_uri = _validate_uri(
                context.project_path, server.mlflow_registry_uri
            )
        mlflow.set_tracking_uri(server.mlflow_tracking_uri)
        mlflow.set_registry_uri(server.mlflow_registry_uri)
        self._already_active_mlflow = False
        self.run_id = None
        self.mlflow_config = config
        context.__setattr__("mlflow", config)

    # The plugin's other hooks, unchanged, but first as the plugin's were.
    @hook_impl(tryfirst=True)
    def after_catalog_created(  # noqa: PLR0913
        self,
        catalog: Any,
        conf_catalog: Any,
        conf_creds: Any,
        parameters: Any,
        save_version: Any,
        load_versions: Any,
    ) -> None:
        super().after_catalog_created(
            catalog, conf_catalog, conf_creds, parameters, save_version, load_versions
        )

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: Any, pipeline: Any, catalog: Any) -> None:
        super().before_pipeline_run(run_params, pipeline, catalog)

    @hook_impl(tryfirst=True)
    def before_node_run(self, node: Any, catalog: Any, inputs: Any, is_async: Any) -> None:
        super().before_node_run(node, catalog, inputs, is_async)

    @hook_impl(tryfirst=True)
    def after_pipeline_run(self, run_params: Any, pipeline: Any, catalog: Any) -> None:
        super().after_pipeline_run(run_params, pipeline, catalog)

    @hook_impl(tryfirst=True)
    def on_pipeline_error(self, error: Any, run_params: Any, pipeline: Any, catalog: Any) -> None:
        super().on_pipeline_error(error, run_params, pipeline, catalog)
