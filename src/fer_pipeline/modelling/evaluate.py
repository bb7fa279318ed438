"""Predictions with optional test-time augmentation, and the evaluation plots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from fer_pipeline.data.shards import Shards  # noqa: E402
from fer_pipeline.modelling.augment import BatchAugment  # noqa: E402
from fer_pipeline.modelling.device import (  # noqa: E402
    autocast_dtype,
    normalise,
    predict_logits,
    resolve_device,
)
from fer_pipeline.modelling.models import ModelBundle  # noqa: E402
from fer_pipeline.modelling.tensors import images_to_tensor  # noqa: E402


def predict_views(
    bundle: ModelBundle,
    images: torch.Tensor,
    *,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 256,
    tta_views: int | None = None,
    tta_augment: dict[str, Any] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Logits ``(V, N, C)`` (on the CPU, not temperature-scaled) of uint8 images
    ``(N, 3, S, S)``: ``V`` is 1, the image alone, or with ``tta_views`` (an int >= 0)
    ``2 + tta_views``: the image, its mirror and ``tta_views`` augmented views
    (``tta_augment``: ``BatchAugment`` arguments)."""
    torch_device = resolve_device(device)
    dtype = autocast_dtype(precision, torch_device)
    model = bundle.build().to(torch_device).to(memory_format=torch.channels_last)
    mean, std = bundle.spec.mean, bundle.spec.std

    def run(transform: Any = None) -> torch.Tensor:
        return predict_logits(model, images, mean, std, torch_device, batch_size, dtype, transform)

    views = [run()]
    if tta_views is not None:
        views.append(run(lambda x: normalise(x.flip(3), mean, std)))
        augment = BatchAugment(mean, std, **(tta_augment or {}))
        for view in range(tta_views):
            generator = torch.Generator(device=torch_device).manual_seed(seed + view)
            views.append(run(lambda x, g=generator: augment(x, g)))
    return torch.stack(views)


def predict_shards(
    bundle: ModelBundle, shards: Shards, **options: Any
) -> tuple[pd.DataFrame, torch.Tensor]:
    """The label, source and id of every row of ``shards``, and the logits
    ``(views, rows, classes)`` of their images (``predict_views``, which takes the
    ``options``), read and decoded a row group at a time."""
    parts, views = [], []
    bar = tqdm(total=len(shards), desc=f"predict {shards.folder.name}", unit="img", mininterval=2.0)
    for part in shards.batches(["image", "label", "source", "source_id"]):
        bar.update(len(part))
        images = images_to_tensor(part.pop("image").tolist(), bundle.spec.image_size, desc="")
        views.append(predict_views(bundle, images, **options))
        parts.append(part)
    bar.close()
    return pd.concat(parts, ignore_index=True), torch.cat(views, dim=1)


def predict_proba(
    bundle: ModelBundle, images: torch.Tensor, **options: Any
) -> tuple[np.ndarray, np.ndarray | None]:
    """The model's probabilities (its ``temperature`` applied) of uint8 images
    ``(N, 3, S, S)``; with ``tta_views`` also their average over the views
    (``predict_views``, which takes the ``options``)."""
    views = (predict_views(bundle, images, **options) / bundle.spec.temperature).softmax(-1)
    tta = views.mean(0).numpy() if options.get("tta_views") is not None else None
    return views[0].numpy(), tta


def confusion_figure(matrices: dict[str, list[list[int]]], classes: Sequence[str]) -> plt.Figure:
    """Row-normalised confusion matrices side by side, one per split."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(6 * len(matrices), 5.2), squeeze=False)
    for ax, (name, counts) in zip(axes[0], matrices.items()):
        cm = np.asarray(counts, dtype=float)
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name} (rows sum to 1, n={int(cm.sum()):,})")
    fig.tight_layout()
    return fig


def reliability_figure(calibrations: dict[str, dict[str, Any]]) -> plt.Figure:
    """Reliability diagrams, two to a row: accuracy against confidence per bin, with
    the ECE."""
    columns = min(2, len(calibrations))
    rows = -(-len(calibrations) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 4.5 * rows), squeeze=False)
    for ax in axes.flat[len(calibrations) :]:
        ax.remove()
    for ax, (name, cal) in zip(axes.flat, calibrations.items()):
        bins = len(cal["count"])
        centres = (np.arange(bins) + 0.5) / bins
        ax.bar(
            centres,
            np.nan_to_num(cal["accuracy"]),
            width=1 / bins,
            edgecolor="black",
            alpha=0.7,
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        ax.plot(cal["confidence"], cal["accuracy"], "o", color="C3", label="bin (mean confidence)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{name}: ECE {cal['ece']:.3f}")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def history_figure(history: Any) -> plt.Figure:
    """Loss, accuracy and learning rate per epoch."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    epoch = history["epoch"]
    axes[0].plot(epoch, history["train_loss"], label="train")
    axes[0].plot(epoch, history["val_loss"], label="val")
    axes[0].set_title("loss")
    axes[1].plot(epoch, history["train_accuracy"], label="train (augmented)")
    axes[1].plot(epoch, history["val_accuracy"], label="val")
    axes[1].plot(epoch, history["val_macro_f1"], label="val macro-F1")
    axes[1].set_title("accuracy")
    axes[2].plot(epoch, history["lr"])
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    return fig
