"""Thin wrappers of ``fer_pipeline.modelling`` for the training pipeline."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from mlflow.pyfunc import PyFuncModel

from fer_pipeline.data.shards import Shards
from fer_pipeline.modelling.config import TrainConfig
from fer_pipeline.modelling.distill import load_teachers, teacher_record, teacher_references
from fer_pipeline.modelling.distributed import launch_fit
from fer_pipeline.modelling.engine import fit_shards
from fer_pipeline.modelling.evaluate import history_figure
from fer_pipeline.modelling.models import ModelBundle
from fer_pipeline.tracking.pyfunc import FerPyfuncModel
from fer_pipeline.tracking.registry import register
from fer_pipeline.tracking.runs import (
    EpochMetricsLogger,
    active_run_id,
    log_teacher_params,
    tracking_uri,
)

logger = logging.getLogger(__name__)


def train_model(
    train: Shards, val: Shards, config: TrainConfig
) -> tuple[ModelBundle, pd.DataFrame, str]:
    """Train the configured model on ``train``, validating on ``val`` every epoch;
    returns the best model, the per-epoch history and the checkpoint's path.

    A checkpoint keyed by the recipe and the training images (``resume_key``) is written
    after every epoch under ``checkpoint_dir``; the same run started again resumes from
    it. It is removed by ``remove_checkpoint`` once the model is saved. With
    ``nproc_per_node`` or ``nnodes`` above 1, torchrun's launcher runs the training in
    that many ranks (DDP); the rest of the run stays in this process.

    The teachers (``training.teacher``) are loaded first, so that a missing one stops
    the run before any image is read; their digests and accuracies go to the run.
    """
    teachers = load_teachers(config.teacher)  # once: a models:/ alias may move meanwhile
    records = [teacher_record(*teacher) for teacher in teachers]
    log_teacher_params(records)
    digests = [record["digest"] for record in records]
    key = resume_key(config, train.read(["pixel_hash"])["pixel_hash"], digests)
    checkpoint = Path(config.checkpoint_dir) / f"{key}.pt"
    run_id = active_run_id()  # the epochs' figures go to it as they come
    if config.nproc_per_node * config.nnodes > 1:
        bundle, history = launch_fit(train, val, config, checkpoint, run_id, tracking_uri())
    else:
        on_epoch = EpochMetricsLogger(run_id) if run_id else None
        bundle, history = fit_shards(train, val, config, checkpoint, on_epoch, teachers)
    return bundle, pd.DataFrame(history), str(checkpoint)


def resume_key(
    config: TrainConfig, pixel_hashes: Iterable[str], teacher_digests: Sequence[str] = ()
) -> str:
    """The checkpoint's name: a hash of the recipe (``TrainConfig.recipe``, without the
    run settings such as ``checkpoint_dir``, ``device`` or ``compile``) and of the
    training images in order. A run that changes only run settings resumes; one that
    changes the recipe or the images starts afresh.

    The teachers count by their weights' digests (``teacher_digests``, one per
    reference), not by their references: the same file moved, or a ``models:/`` alias
    still on the same version, resumes; an alias moved to another version, or a file
    retrained in place, starts afresh."""
    recipe = config.recipe()
    if len(teacher_digests) != len(teacher_references(config.teacher)):
        raise ValueError("resume_key needs the digest of each teacher of training.teacher")
    if teacher_digests:
        recipe["teacher"] = list(teacher_digests)
    recipe = json.dumps(recipe, sort_keys=True)
    return hashlib.sha256((recipe + "".join(pixel_hashes)).encode()).hexdigest()[:16]


def remove_checkpoint(model: ModelBundle, checkpoint: str) -> None:
    """Deletes the finished run's checkpoint; takes the saved ``model`` as input so that
    it runs only once the versioned model is on disk."""
    Path(checkpoint).unlink(missing_ok=True)
    logger.info("Model %s saved; removed its checkpoint %s", model.spec.name, checkpoint)


def training_curves(history: pd.DataFrame) -> plt.Figure:
    """Loss, accuracy and learning-rate curves."""
    return history_figure(history)


def pyfunc_model(model: ModelBundle) -> FerPyfuncModel:
    """The model as an MLflow pyfunc model (images in, probabilities out)."""
    return FerPyfuncModel(model)


def register_model(mlflow_model: PyFuncModel, registry: dict[str, Any]) -> dict[str, Any]:
    """Registers the model just logged under ``registry.name``; returns the version
    (the evaluation pipeline sets its alias)."""
    bundle = mlflow_model.unwrap_python_model().bundle
    uri = f"models:/{mlflow_model.metadata.model_id}"
    return register(uri, registry["name"], bundle.digest())
