"""The served Kedro project's configuration, read without a Kedro session: a session
would import every pipeline, and with them torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fer_pipeline.config.loader import CONFIG_LOADER_ARGS  # as kedro run reads the project


def is_project(path: Path) -> bool:
    """Whether ``path`` has a Kedro configuration folder (``conf``)."""
    return (path / "conf").is_dir()


def project_config(project: Path, env: str | None = None) -> Any:
    """The ``OmegaConfigLoader`` of ``project`` in Kedro environment ``env`` (default
    ``local``), as a ``kedro run`` there reads it; without ``env``, a project deployed
    with no ``conf/local`` folder is read from ``conf/base`` alone."""
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
