"""Project settings; see https://docs.kedro.org/en/stable/configure/configuration_basics/"""

import os

from kedro.config import OmegaConfigLoader

from fer_pipeline.hooks import DataclassParamsHook, SplitInputsHook, SystemMetricsHook

HOOKS = (DataclassParamsHook(), SplitInputsHook(), SystemMetricsHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment's parameters override only the keys they name (conf/quick/).
    "merge_strategy": {"parameters": "soft"},
    # ${env:NAME,default}: an environment variable, e.g. MLFLOW_TRACKING_URI.
    "custom_resolvers": {"env": lambda name, default=None: os.environ.get(name, default)},
}
