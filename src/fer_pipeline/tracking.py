"""What runs tell MLflow beyond kedro-mlflow's datasets: metrics live at every epoch, the
splits as dataset inputs, a teacher's digest and accuracy, the registered model and its
``champion`` / ``challenger`` aliases, reading a registered model's ONNX export or
weights back without unpickling code, and checking an SQLite tracking store
(``mlflow.db``) before MLflow opens it."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


class EpochMetricsLogger:
    """Logs each history row to an MLflow run as it comes: every figure at step = epoch,
    so the UI draws the curves while the run trains."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.client = mlflow.MlflowClient()

    def __call__(self, row: dict[str, float]) -> None:
        now, step = int(time.time() * 1000), int(row["epoch"])
        metrics = [Metric(k, float(v), now, step) for k, v in row.items() if k != "epoch"]
        self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)


def active_run_id() -> str | None:
    run = mlflow.active_run()
    return run.info.run_id if run else None


def split_digest(frame: pd.DataFrame) -> str:
    """A digest of a split's content: its images' pixel hashes and labels, in order."""
    content = "\n".join(f"{h}:{y}" for h, y in zip(frame["pixel_hash"], frame["label"]))
    return hashlib.sha256(content.encode()).hexdigest()[:20]


def log_split_input(name: str, frame: pd.DataFrame, source: str) -> None:
    """``frame`` (a train/val/test split) as a dataset input of the active run: its
    table without the image bytes, a content digest, row count and faces per source."""
    dataset = mlflow.data.from_pandas(
        frame.drop(columns=["image"], errors="ignore"),
        source=source,
        name=name,
        targets="label",
        digest=split_digest(frame),
    )
    counts = frame["source"].value_counts().sort_index()
    tags = {"sources": ", ".join(f"{s}={n}" for s, n in counts.items())}
    mlflow.log_input(dataset, context=name, tags=tags)


def register(model_uri: str, name: str, weights_digest: str) -> dict[str, Any]:
    """Registers the logged model at ``model_uri`` under ``name``; returns what the
    evaluation needs to find it again."""
    version = mlflow.register_model(model_uri, name)
    logger.info("Registered %s as %s version %s", model_uri, name, version.version)
    return {
        "name": name,
        "version": str(version.version),
        "model_uri": model_uri,
        "run_id": version.run_id,
        "weights_digest": weights_digest,
    }


def promote(registration: dict[str, Any], accuracy: float, test_digest: str) -> dict[str, Any]:
    """Sets ``champion`` on the registered version when its test accuracy beats the
    current champion's on the same test set (same digest), ``challenger`` otherwise;
    returns the decision with both figures. The figures stay on each version as tags."""
    client = mlflow.MlflowClient()
    name, version = registration["name"], registration["version"]
    client.set_model_version_tag(name, version, "test_accuracy", str(accuracy))
    client.set_model_version_tag(name, version, "test_digest", test_digest)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    decision: dict[str, Any] = {
        "name": name,
        "version": version,
        "test_accuracy": accuracy,
        "test_digest": test_digest,
        "champion_version": str(champion.version) if champion else None,
        "champion_test_accuracy": None,
    }
    if champion is None:
        alias, reason = CHAMPION, "no champion yet"
    elif str(champion.version) == version:
        alias, reason = CHAMPION, "already the champion"
    elif champion.tags.get("test_digest") != test_digest:
        alias, reason = CHALLENGER, "the champion was scored on another test set"
    else:
        best = float(champion.tags["test_accuracy"])
        decision["champion_test_accuracy"] = best
        if accuracy > best:
            alias, reason = CHAMPION, f"test accuracy {accuracy:.4f} > champion's {best:.4f}"
        else:
            alias, reason = CHALLENGER, f"test accuracy {accuracy:.4f} <= champion's {best:.4f}"
    client.set_registered_model_alias(name, alias, version)
    logger.info("%s version %s is now %s: %s", name, version, alias, reason)
    return decision | {"alias": alias, "reason": reason}


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
    for uri in dict.fromkeys((mlflow.get_tracking_uri(), mlflow.get_registry_uri())):
        check_tracking_store(uri)


def _model_files(uri: str, suffix: str) -> list[Path]:
    """The ``artifacts/*<suffix>`` files of an MLflow model, downloaded: nothing is
    unpickled."""
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
    return _model_files(uri, ".safetensors")[0]


def log_teacher_params(records: list[dict[str, Any]]) -> None:
    """The teachers' weights digests and validation accuracies (from their specs) as
    parameters of the active run, if any; ``training.teacher``, the references, is
    logged with the rest of the recipe (``TypedParamsHook``)."""
    if not records or mlflow.active_run() is None:
        return
    mlflow.log_params(
        {
            "teacher.digest": ",".join(r["digest"] for r in records),
            "teacher.val_accuracy": ",".join(str(r["val_accuracy"]) for r in records),
        }
    )


def load_registered_onnx(uri: str) -> bytes:
    """The ONNX export of an MLflow model (``models:/<name>@champion``,
    ``models:/<name>/<version>``, ``runs:/...``), metadata included."""
    return _model_files(uri, ".onnx")[0].read_bytes()
