"""Project settings; see https://docs.kedro.org/en/stable/configure/configuration_basics/"""

from kedro.config import OmegaConfigLoader

from fer_pipeline.config.loader import CONFIG_LOADER_ARGS as LOADER_ARGS
from fer_pipeline.hooks import (
    CompleteVersionsHook,
    SplitInputsHook,
    SystemMetricsHook,
    TypedParamsHook,
)
from fer_pipeline.tracking.store import TrackingStoreHook

# CompleteVersionsHook: a run killed half-way leaves no version that loaders would read.
# TrackingStoreHook: kedro-mlflow's hook, but the store is opened only by runs that
# track, and checked first; it takes the place of the plugin's own.
HOOKS = (
    CompleteVersionsHook(),
    TrackingStoreHook(),
    TypedParamsHook(),
    SplitInputsHook(),
    SystemMetricsHook(),
)
DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow",)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = LOADER_ARGS  # fer_pipeline/config/loader.py
