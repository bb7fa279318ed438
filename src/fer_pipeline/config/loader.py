"""How the project's configuration is read: Kedro's ``CONFIG_LOADER_ARGS``, here apart
from ``settings.py`` (which imports the hooks and MLflow), and the project's
configuration read with them without a Kedro session (a session would import every
pipeline, and with them torch): what the API and the benchmarks read, as ``kedro run``
does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CONFIG_LOADER_ARGS: dict[str, Any] = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment's parameters override only the keys they name (conf/quick/).
    "merge_strategy": {"parameters": "soft"},
    # ${env:NAME,default}: an environment variable, e.g. MLFLOW_TRACKING_URI.
    "custom_resolvers": {"env": lambda name, default=None: os.environ.get(name, default)},
}


def is_project(path: Path) -> bool:
    """Whether ``path`` has a Kedro configuration folder (``conf``)."""
    return (path / "conf").is_dir()


def project_config(project: Path, env: str | None = None) -> Any:
    """The ``OmegaConfigLoader`` of ``project`` in Kedro environment ``env`` (default
    ``local``; ``base``: the base alone), as a ``kedro run`` there reads it; without
    ``env``, a project deployed with no ``conf/local`` folder is read from ``conf/base``."""
    from kedro.config import OmegaConfigLoader

    args = CONFIG_LOADER_ARGS
    if env is None and not (project / "conf" / args["default_run_env"]).is_dir():
        args = {**args, "default_run_env": args["base_env"]}
    return OmegaConfigLoader(str(project / "conf"), env=env, **args)


def inference_parameters(project: Path, env: str | None = None) -> dict[str, Any]:
    """The ``inference`` parameters of ``project`` (``conf/*/parameters_inference.yml``
    and any other parameters file), as batch inference gets them."""
    parameters = project_config(project, env)["parameters"]
    return dict(parameters.get("inference") or {})


def raw_data(project: Path, env: str | None = None) -> Path:
    """Where the raw releases are: the ``raw_data`` global (``conf/base/globals.yml``,
    overridable per environment), relative to ``project``."""
    return (project / project_config(project, env)["globals"]["raw_data"]).resolve()
