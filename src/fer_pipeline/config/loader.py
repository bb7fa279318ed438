"""How the project's configuration is read: Kedro's ``CONFIG_LOADER_ARGS``, here apart
from ``settings.py`` (which imports the hooks and MLflow) so that the API reads the
served project as ``kedro run`` does without importing them."""

from __future__ import annotations

import os
from typing import Any

CONFIG_LOADER_ARGS: dict[str, Any] = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment's parameters override only the keys they name (conf/quick/).
    "merge_strategy": {"parameters": "soft"},
    # ${env:NAME,default}: an environment variable, e.g. MLFLOW_TRACKING_URI.
    "custom_resolvers": {"env": lambda name, default=None: os.environ.get(name, default)},
}
