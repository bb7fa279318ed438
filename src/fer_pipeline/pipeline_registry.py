"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

DEFAULT = ("data_processing", "training", "evaluation")
"""The pipelines ``__default__`` chains (inference and export run on demand)."""


def register_pipelines() -> dict[str, Pipeline]:
    """Every package under ``pipelines/`` by its name, and ``__default__``.

    Kedro imports only the requested pipelines, so ``__default__`` is built when its
    parts were loaded.
    """
    pipelines = find_pipelines(raise_errors=True)
    if all(name in pipelines for name in DEFAULT):
        pipelines["__default__"] = sum((pipelines[name] for name in DEFAULT), Pipeline([]))
    return pipelines
