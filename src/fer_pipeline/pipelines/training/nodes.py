"""Thin wrappers of ``fer_pipeline.modelling`` for the training pipeline."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from fer_pipeline.modelling.evaluate import history_figure
from fer_pipeline.modelling.models import ModelBundle
from fer_pipeline.modelling.pyfunc import FerPyfuncModel
from fer_pipeline.modelling.tensors import images_to_tensor
from fer_pipeline.modelling.train import TrainConfig, fit
from fer_pipeline.schema import CLASSES

logger = logging.getLogger(__name__)
RUN_KEYS = ("train_subset", "checkpoint_dir")
"""Training parameters about the run rather than the recipe."""


def _subset(frame: pd.DataFrame, size: int | None, seed: int) -> pd.DataFrame:
    """A seeded sample of ``size`` rows, stratified by source and label."""
    if not size or size >= len(frame):
        return frame
    fraction = size / len(frame)
    return (
        frame.groupby(["source", "label"], group_keys=False)
        .sample(frac=fraction, random_state=seed)
        .sort_index()
    )


def train_model(
    train: pd.DataFrame, val: pd.DataFrame, training: dict[str, Any]
) -> tuple[ModelBundle, pd.DataFrame]:
    """Train the configured model on ``train``, validating on ``val`` every epoch;
    returns the best model and the per-epoch history.

    A checkpoint keyed by the parameters and the training images is written after every
    epoch under ``checkpoint_dir``; the same run started again resumes from it.
    """
    config = TrainConfig.from_dict({k: v for k, v in training.items() if k not in RUN_KEYS})
    train = _subset(train, training.get("train_subset"), config.seed)
    key = hashlib.sha256(
        (json.dumps(training, sort_keys=True) + "".join(train["pixel_hash"])).encode()
    ).hexdigest()[:16]
    checkpoint = Path(training["checkpoint_dir"]) / f"{key}.pt"
    if config.soft_targets:
        targets = torch.from_numpy(np.stack(train["soft_label"]).astype(np.float32))
    else:
        targets = torch.eye(len(CLASSES))[torch.from_numpy(train["label"].to_numpy())]
    size = config.image_size
    bundle, history = fit(
        images_to_tensor(list(train["image"]), size, desc="decode train"),
        targets,
        images_to_tensor(list(val["image"]), size, desc="decode val"),
        torch.from_numpy(val["label"].to_numpy()),
        config,
        checkpoint,
    )
    checkpoint.unlink(missing_ok=True)  # finished: the versioned model takes its place
    bundle.spec["train_images"] = len(train)
    return bundle, pd.DataFrame(history)


def training_metrics(history: pd.DataFrame) -> dict[str, list[dict[str, float]]]:
    """Per-epoch histories for MLflow: ``{metric: [{value, step}, ...]}``."""
    return {
        column: [
            {"value": float(v), "step": int(e)} for e, v in zip(history["epoch"], history[column])
        ]
        for column in history.columns
        if column != "epoch"
    }


def training_curves(history: pd.DataFrame) -> plt.Figure:
    """Loss, accuracy and learning-rate curves."""
    return history_figure(history)


def pyfunc_model(model: ModelBundle) -> FerPyfuncModel:
    """The model as an MLflow pyfunc model (images in, probabilities out)."""
    return FerPyfuncModel(model)
