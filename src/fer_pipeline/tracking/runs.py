"""What a run tells MLflow beyond kedro-mlflow's datasets: metrics live at every epoch,
the splits as dataset inputs, and a teacher's digest and accuracy."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Metric


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


def tracking_uri() -> str:
    """The store MLflow writes to now (what training ranks are told to open)."""
    return mlflow.get_tracking_uri()


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
