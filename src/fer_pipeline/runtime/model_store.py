"""A logged model's files read back from MLflow's store (``models:/`` or ``runs:/``
URIs) without unpickling code, and the check that an SQLite store (``mlflow.db``) is a
readable database before MLflow opens it. MLflow is imported only when a URI is read:
the runtime works without it."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

MLFLOW_SCHEMES = ("models:/", "runs:/")
"""The prefixes of a model reference read from MLflow rather than from a file."""


class TrackingStoreError(RuntimeError):
    """The MLflow tracking store cannot be opened; the message names the file."""


def sqlite_file(uri: str | None) -> Path | None:
    """The database file of an ``sqlite:///`` URI, absolute (a relative one is relative
    to the working directory, as SQLAlchemy opens it); ``None`` for other stores and for
    an in-memory database."""
    if not uri or not uri.split(":", 1)[0].startswith("sqlite") or ":///" not in uri:
        return None
    path = uri.split(":///", 1)[1].split("?", 1)[0]
    if path in ("", ":memory:") or path.startswith("file:"):
        return None
    return Path(path).absolute()


def store_advice(path: Path, error: BaseException) -> str:
    """The message for a tracking database that cannot be read: the file, the error,
    and what to do."""
    return (
        f"The MLflow tracking database {path} cannot be read as an SQLite database "
        f"({error}). Move it aside, e.g. `mv {path} {path}.corrupt`: MLflow creates a new, "
        "empty one on the next run (the runs and registered models of the old file are "
        "then no longer listed). Or set MLFLOW_TRACKING_URI to another store."
    )


def check_tracking_store(uri: str | None) -> None:
    """Raises ``TrackingStoreError`` naming the file when ``uri`` is an SQLite file that
    is not a readable database. Other stores, and a file not there yet (MLflow creates
    it), pass. The file is opened read-only and only its schema is read."""
    path = sqlite_file(uri)
    if path is None or not path.exists():
        return
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as error:
        raise TrackingStoreError(store_advice(path, error)) from error


def check_active_stores() -> None:
    """``check_tracking_store`` on MLflow's current tracking and registry URIs (what a
    ``models:/`` or ``runs:/`` URI is read from)."""
    import mlflow

    for uri in dict.fromkeys((mlflow.get_tracking_uri(), mlflow.get_registry_uri())):
        check_tracking_store(uri)


def model_files(uri: str, suffix: str) -> list[Path]:
    """The ``artifacts/*<suffix>`` files of an MLflow model, downloaded: nothing is
    unpickled."""
    import mlflow

    check_active_stores()
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    files = sorted(local.glob(f"artifacts/*{suffix}"))
    if not files:
        raise FileNotFoundError(
            f"{uri} holds no {suffix} file under artifacts/: not a model logged by this "
            "project's training pipeline"
        )
    return files


def load_registered_weights(uri: str) -> Path:
    """The weights of an MLflow model (a ``ModelBundle`` safetensors file, its
    ``weights`` artifact), downloaded: what a teacher is loaded from."""
    return model_files(uri, ".safetensors")[0]


def load_registered_onnx(uri: str) -> bytes:
    """The ONNX export of an MLflow model (``models:/<name>@champion``,
    ``models:/<name>/<version>``, ``runs:/...``), metadata included."""
    return model_files(uri, ".onnx")[0].read_bytes()
