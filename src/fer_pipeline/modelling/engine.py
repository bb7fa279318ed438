"""The training engine, split as timm's ``train.py`` splits it: ``setup`` builds every
part from timm's factories, ``train_one_epoch`` and ``validate`` run an epoch, and a
checkpoint written after every epoch lets a restarted run resume where it stopped.

Images stay uint8 tensors, decoded once; augmentation runs per batch on the device.
Under torchrun (several ranks) the same functions run in every rank: each rank reads
and decodes only its own share of the shards (``rank_rows``), the model is wrapped in
DDP, the figures are summed over the ranks, and rank 0 alone writes.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import torch
import torch.nn.functional as F
from timm.data import Mixup, resolve_model_data_config
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, NativeScaler, dispatch_clip_grad
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from fer_pipeline.data.schema import CLASSES
from fer_pipeline.data.shards import Shards
from fer_pipeline.data.versions import write_atomically
from fer_pipeline.modelling.augment import BatchAugment, SoftTargetMixer
from fer_pipeline.modelling.calibration import fit_temperature
from fer_pipeline.modelling.config import TrainConfig
from fer_pipeline.modelling.device import (
    autocast,
    autocast_dtype,
    normalise,
    predict_logits,
    resolve_device,
)
from fer_pipeline.modelling.distill import (
    Teacher,
    distillation_loss,
    inference_logits,
    load_teachers,
)
from fer_pipeline.modelling.distributed import (
    Ranks,
    all_reduce_sum,
    broadcast_from_main,
    current_ranks,
)
from fer_pipeline.modelling.estimate import SlowRecipeProbe
from fer_pipeline.modelling.metrics import confusion_macro_f1
from fer_pipeline.modelling.models import ModelBundle, ModelSpec, build_model
from fer_pipeline.modelling.tensors import (
    EncodedImages,
    StreamedImages,
    encoded_gb,
    shards_to_encoded,
    shards_to_tensor,
)

logger = logging.getLogger(__name__)


@dataclass
class Trainer:
    """Everything a run holds between epochs."""

    config: TrainConfig
    model: torch.nn.Module
    forward: Any  # the model, wrapped in DDP under several ranks, compiled when asked
    ema: ModelEmaV3 | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: NativeScaler | None  # fp16 only: bf16 and fp32 need no loss scaling
    device: torch.device
    dtype: torch.dtype | None
    mean: list[float]
    std: list[float]
    batch_size: int  # per rank
    steps_per_epoch: int
    ranks: Ranks = field(default_factory=Ranks)
    teacher: Teacher | None = None  # training.teacher, on the device
    distillation: str = "soft"  # hard | soft: training.distillation, auto resolved
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(
        default_factory=lambda: {"score": -math.inf, "epoch": 0, "state": None}
    )

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights that are validated and kept: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model


def setup(
    config: TrainConfig,
    train_size: int,
    teachers: Sequence[tuple[str, ModelBundle]] | None = None,
) -> Trainer:
    """The model, optimiser, schedule, EMA and scaler of a run over ``train_size`` images
    (in every rank, when there are several). ``teachers``: those of ``config.teacher``
    already loaded (``load_teachers``), else they are loaded here."""
    ranks = current_ranks()
    per_rank = train_size // ranks.world_size
    if per_rank < 2:
        raise ValueError(f"training needs at least 2 images per rank, got {train_size} in all")
    device = resolve_device(config.device)
    if device.type == "cuda" and ranks.world_size > 1:
        device = torch.device("cuda", ranks.local_rank)
    dtype = autocast_dtype(config.precision, device)
    torch.manual_seed(config.seed)  # the same initial weights in every rank
    model = build_model(config.model, config.image_size, config.pretrained, **config.model_kwargs)
    data_config = resolve_model_data_config(model, args={"mean": config.mean, "std": config.std})
    model = _sync_batchnorm(model, ranks, device).to(device)
    forward = model
    if teachers is None:
        teachers = load_teachers(config.teacher)
    teacher = Teacher(teachers).to(device) if teachers else None
    token = hasattr(model, "set_distilled_training")  # DeiT's distillation token
    if teacher is not None and token:
        model.set_distilled_training(True)  # DeiT: the distillation head learns the teacher
    distillation = config.distillation
    if distillation == "auto":  # DeiT's choice for its token; Hinton's soft targets for a CNN
        distillation = "hard" if token else "soft"
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher.to(memory_format=torch.channels_last)
    if ranks.world_size > 1:  # after the layout change: DDP's buckets follow the parameters
        forward = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    batch_size = min(config.batch_size, per_rank - per_rank % 2)  # Mixup pairs images
    steps_per_epoch = train_size // (batch_size * ranks.world_size)
    optimizer = create_optimizer_v2(
        model,
        opt="adamw",
        lr=config.lr,
        weight_decay=config.weight_decay,
        **({"fused": True} if device.type == "cuda" else {}),
    )
    scheduler, _ = create_scheduler_v2(  # the cosine starts at the peak, after the warmup
        optimizer,
        sched="cosine",
        num_epochs=config.epochs - config.warmup_epochs,
        warmup_epochs=config.warmup_epochs,
        warmup_prefix=True,
        warmup_lr=config.min_lr,
        min_lr=config.min_lr,
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    ema = (
        ModelEmaV3(model, decay=config.ema_decay, use_warmup=True) if config.ema_decay > 0 else None
    )
    return Trainer(
        config=config,
        model=model,
        forward=torch.compile(forward) if config.compile else forward,
        ema=ema,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=NativeScaler(device.type) if dtype == torch.float16 else None,
        device=device,
        dtype=dtype,
        mean=list(data_config["mean"]),
        std=list(data_config["std"]),
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        ranks=ranks,
        teacher=teacher,
        distillation=distillation,
    )


def _sync_batchnorm(model: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """Under several ranks on GPUs, BatchNorm layers that normalise with the statistics
    of the whole global batch (PyTorch's SyncBatchNorm has no CPU kernel: on CPUs each
    rank normalises with its own share)."""
    batchnorm = torch.nn.modules.batchnorm._BatchNorm
    if ranks.world_size == 1 or not any(isinstance(m, batchnorm) for m in model.modules()):
        return model
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if ranks.main:
        logger.info("BatchNorm statistics stay per rank: SyncBatchNorm needs GPUs")
    return model


def class_weights(targets: torch.Tensor, power: float) -> torch.Tensor:
    """Per-class weights ``frequency ** -power``, scaled so that the training set's
    average weight is 1 (frequencies over every rank's share)."""
    counts = all_reduce_sum(targets.sum(0))
    weights = counts.clamp(min=1) ** -power
    return weights * counts.sum() / (weights * counts).sum()


def epoch_seed(config: TrainConfig, epoch: int) -> int:
    """The seed of ``epoch``: a function of (seed, epoch) alone."""
    return config.seed * 1000 + epoch


def seed_epoch(
    config: TrainConfig, epoch: int, device: torch.device, ranks: Ranks
) -> torch.Generator:
    """Seeds every random source from (seed, epoch), so that a resumed run draws what an
    uninterrupted one would; returns the generator for the epoch's order and augments.
    Each rank draws its own order and augmentations: the generator and Python's random
    (random erasing's boxes) from (seed, epoch, rank), the same as (seed, epoch) on one
    process."""
    seed = epoch_seed(config, epoch)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # timm's Mixup draws from NumPy
    seed = rank_seed(config, epoch, ranks)
    random.seed(seed)  # timm's RandomErasing draws from it
    return torch.Generator(device=device).manual_seed(seed)


def rank_seed(config: TrainConfig, epoch: int, ranks: Ranks) -> int:
    """The seed of ``epoch`` in this rank: (seed, epoch) on one process."""
    return epoch_seed(config, epoch) * ranks.world_size + ranks.rank


def _loss(
    trainer: Trainer,
    outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    targets: torch.Tensor,
    taught: torch.Tensor | None,
    weight: torch.Tensor | None,
) -> torch.Tensor:
    """The loss of a batch: on ``targets`` (distributions), and on the teacher's
    probabilities ``taught`` when there is a teacher."""
    if taught is None:
        # Cross-entropy on probability targets, as timm's SoftTargetCrossEntropy, but
        # with the optional class weights that it lacks.
        return F.cross_entropy(outputs.float(), targets, weight=weight)
    config = trainer.config
    return distillation_loss(
        outputs,
        targets,
        taught,
        trainer.distillation,
        config.distillation_alpha,
        config.distillation_tau,
        weight,
    )


def train_one_epoch(
    trainer: Trainer,
    epoch: int,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    augment: BatchAugment,
    mixer: Mixup | SoftTargetMixer,
    loss_weight: torch.Tensor | None = None,
    sample_weight: torch.Tensor | None = None,
    after_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One pass over ``images``; ``targets`` are integer labels (timm's ``Mixup``) or
    distributions (``SoftTargetMixer``); ``after_step`` is called after each step (the
    first epoch's ``SlowRecipeProbe``). Returns the epoch's training figures.

    ``images`` are this rank's share (``rank_rows``): each rank draws its own order of
    them every epoch, so the ranks' batches are disjoint and a global batch is
    ``batch_size x ranks`` images of the whole set.
    """
    config, model, device, ranks = trainer.config, trainer.model, trainer.device, trainer.ranks
    generator = seed_epoch(config, epoch, device, ranks)
    n, batch = len(images), trainer.batch_size
    if sample_weight is not None:
        order = torch.multinomial(sample_weight, n, replacement=True, generator=generator)
    else:
        order = torch.randperm(n, generator=generator, device=device)
    if isinstance(images, StreamedImages):  # its own generator: the augmentations stay
        grouping = torch.Generator(device=device).manual_seed(rank_seed(config, epoch, ranks))
        order = images.localise(order, grouping)
    hard = targets if targets.ndim == 1 else targets.argmax(1)
    tau = config.distillation_tau if trainer.distillation == "soft" else 1.0
    model.train()
    seen, started = 0, time.perf_counter()
    loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
    bar = tqdm(
        range(trainer.steps_per_epoch),
        desc=f"epoch {epoch}/{config.epochs}",
        unit="batch",
        mininterval=2.0,
        leave=False,
        disable=not ranks.main,
    )
    updates = (epoch - 1) * trainer.steps_per_epoch
    for step in bar:
        index = order[step * batch : (step + 1) * batch]
        x = augment(images[index.to(images.device)].to(device, non_blocking=True), generator)
        x, mixed = mixer(x, targets[index])
        with autocast(device, trainer.dtype):
            outputs = trainer.forward(x)
            taught = None
            if trainer.teacher is not None:  # the same augmented, mixed batch
                taught = trainer.teacher(x, trainer.mean, trainer.std, tau)
        loss = _loss(trainer, outputs, mixed, taught, loss_weight)
        logits = inference_logits(outputs)
        trainer.optimizer.zero_grad(set_to_none=True)
        clip = config.grad_clip or None
        if trainer.scaler is not None:
            trainer.scaler(loss, trainer.optimizer, clip_grad=clip, parameters=model.parameters())
        else:
            loss.backward()
            if clip:
                dispatch_clip_grad(model.parameters(), clip)
            trainer.optimizer.step()
        updates += 1
        trainer.scheduler.step_update(num_updates=updates)
        if trainer.ema is not None:
            trainer.ema.update(model, step=updates)
        seen += len(index)
        loss_sum += loss.detach() * len(index)
        correct += (logits.argmax(1) == hard[index]).sum()
        if after_step is not None:
            after_step()
        if step % 10 == 9 or step == trainer.steps_per_epoch - 1:
            bar.set_postfix(  # rank 0's share
                loss=f"{float(loss_sum) / seen:.3f}",
                acc=f"{float(correct) / seen:.3f}",
                img_s=f"{seen * ranks.world_size / (time.perf_counter() - started):.0f}",
            )
    seconds = time.perf_counter() - started
    totals = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device)])
    loss_total, correct_total, seen_total = all_reduce_sum(totals).tolist()
    return {
        "lr": trainer.optimizer.param_groups[0]["lr"],
        "train_loss": loss_total / max(seen_total, 1),
        "train_accuracy": correct_total / max(seen_total, 1),
        "images_per_second": seen_total / seconds,
        "seconds": seconds,
    }


def validate(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Loss, accuracy and macro-F1 of the evaluated weights on integer labels, at the
    model's ``image_size`` (images stored smaller are resized on the device). Each rank
    predicts its share of the images (every ``world_size``-th); the loss and the
    confusion matrix are summed over the ranks, so every rank gets the figures of the
    whole set."""
    logits = _val_logits(trainer, images)
    classes = len(CLASSES)
    confusion = torch.bincount(labels * classes + logits.argmax(1), minlength=classes**2)
    loss = F.cross_entropy(logits, labels, reduction="sum")
    totals = torch.cat([confusion.double(), loss.double().view(1)]).to(trainer.device)
    totals = all_reduce_sum(totals).cpu()
    confusion, count = totals[:-1].view(classes, classes).numpy(), float(totals[:-1].sum())
    if not count:
        return {"val_loss": math.nan, "val_accuracy": math.nan, "val_macro_f1": math.nan}
    return {
        "val_loss": float(totals[-1]) / count,
        "val_accuracy": float(confusion.trace()) / count,
        "val_macro_f1": confusion_macro_f1(confusion),
    }


def _val_logits(trainer: Trainer, images: torch.Tensor) -> torch.Tensor:
    """Logits of the evaluated weights at the model's ``image_size``."""
    size = trainer.config.image_size
    return predict_logits(
        trainer.evaluated,
        images,
        trainer.mean,
        trainer.std,
        trainer.device,
        trainer.config.eval_batch_size,
        trainer.dtype,
        transform=lambda x: normalise(x, trainer.mean, trainer.std, size),
    )


def calibrate(
    trainer: Trainer, state: dict[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor
) -> float:
    """The temperature of the weights ``state`` (loaded into the evaluated model: the
    training is over), fitted on this rank's share of val, the NLL summed over ranks."""
    trainer.evaluated.load_state_dict(state)
    logits = _val_logits(trainer, images)
    temperature = fit_temperature(
        logits, labels, reduce=lambda totals: all_reduce_sum(totals.to(trainer.device)).cpu()
    )
    if trainer.ranks.main:
        logger.info("Temperature scaling on val: T = %.3f", temperature)
    return temperature


def save_checkpoint(trainer: Trainer, path: Path, epoch: int) -> None:
    """Everything needed to resume after ``epoch``, written atomically (a kill while
    writing leaves the previous checkpoint) by rank 0 alone."""
    if not trainer.ranks.main:
        return
    payload = {
        "epoch": epoch,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler else {},
        "ema": trainer.ema.state_dict() if trainer.ema else {},
        "history": trainer.history,
        "best": trainer.best,
    }
    write_atomically(path, lambda temporary: torch.save(payload, temporary))


def load_checkpoint(trainer: Trainer, path: Path) -> int:
    """Restores ``trainer`` from ``path``; returns the last finished epoch (0 when there
    is no checkpoint). Rank 0 reads the file and sends it to the other ranks, so that
    all resume from the same state without a shared filesystem. A checkpoint that
    cannot be read is reported and set aside as ``<name>.corrupt``, and ``ValueError``
    asks the caller to start afresh."""
    state: dict[str, Any] | str | None = None
    if trainer.ranks.main and path.exists():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            state = f"{type(exc).__name__}: {exc}"
    state = broadcast_from_main(state, trainer.device)
    if state is None:
        return 0
    try:
        if isinstance(state, str):
            raise ValueError(state)
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        if trainer.scaler is not None:
            trainer.scaler.load_state_dict(state["scaler"])
        if trainer.ema is not None:
            trainer.ema.load_state_dict(state["ema"])
        trainer.history, trainer.best = state["history"], state["best"]
        epoch = int(state["epoch"])
    except Exception as exc:
        if trainer.ranks.main:
            corrupt = path.with_suffix(".corrupt")
            os.replace(path, corrupt)
            logger.warning("Checkpoint %s is unreadable (%s); moved to %s", path, exc, corrupt)
        raise ValueError(f"unreadable checkpoint {path}") from exc
    trainer.scheduler.step_update(num_updates=epoch * trainer.steps_per_epoch)
    logger.info("Resuming from %s after epoch %d", path, epoch)
    return epoch


def _place_train_images(trainer: Trainer, images: torch.Tensor) -> torch.Tensor:
    """On the GPU when ``data_on_device`` allows and it fits in half the free memory;
    pinned for fast copies otherwise; encoded or streamed images stay as they are."""
    device, wanted = trainer.device, trainer.config.data_on_device
    if device.type != "cuda" or isinstance(images, EncodedImages | StreamedImages):
        return images
    fits = images.numel() < 0.5 * torch.cuda.mem_get_info(device)[0]
    if wanted is True or (wanted == "auto" and fits):
        return images.to(device)
    return images.pin_memory()


def fit(
    train_images: torch.Tensor | EncodedImages | StreamedImages,
    train_targets: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    config: TrainConfig,
    checkpoint: Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    teachers: Sequence[tuple[str, ModelBundle]] | None = None,
) -> tuple[ModelBundle, list[dict[str, float]]]:
    """Train on uint8 images ``(N, 3, S, S)`` with target distributions ``(N, 7)``
    (one-hot unless ``config.soft_targets``); validate on integer labels after every
    epoch. ``S`` may be below ``config.image_size`` (``storage_size``): batches are
    resized on the device. Under several ranks, each passes its equal share of the
    training and validation images. ``EncodedImages`` or ``StreamedImages`` instead of
    the training tensor: each batch is decoded (and read from disk) when drawn.

    With ``checkpoint``, every epoch ends by saving one there, and a call that finds one
    resumes after its epoch. ``on_epoch`` gets each epoch's history row in rank 0 (a
    resumed run's restored rows first, once each): live tracking. Returns the best
    model by ``config.monitor`` (the EMA weights when enabled), its temperature fitted on
    val (``calibrate``), and the per-epoch history. ``teachers``: as ``setup`` takes
    them.
    """
    train_size = len(train_images) * current_ranks().world_size
    trainer = setup(config, train_size, teachers)
    start = 0
    if checkpoint is not None:
        try:
            start = load_checkpoint(trainer, checkpoint)
        except ValueError:
            trainer = setup(config, train_size, teachers)  # a partial restore is discarded
    report = on_epoch if on_epoch is not None and trainer.ranks.main else lambda row: None
    for row in trainer.history:
        report(row)
    device = trainer.device
    train_images = _place_train_images(trainer, train_images)
    train_targets = train_targets.to(device)
    labels = train_targets.argmax(1)
    if config.soft_targets:
        targets = train_targets
        mixer = SoftTargetMixer(
            len(CLASSES),
            config.mixup_alpha,
            config.cutmix_alpha,
            config.mix_prob,
            config.switch_prob,
            config.label_smoothing,
        )
    else:
        targets = labels
        mixer = Mixup(
            mixup_alpha=config.mixup_alpha,
            cutmix_alpha=config.cutmix_alpha,
            prob=config.mix_prob,
            switch_prob=config.switch_prob,
            mode="batch",
            label_smoothing=config.label_smoothing,
            num_classes=len(CLASSES),
        )
    weights = class_weights(train_targets, config.balance_power)
    augment = BatchAugment(
        trainer.mean,
        trainer.std,
        config.hflip,
        config.rotation,
        config.scale,
        config.translate,
        size=config.image_size,
        grayscale=config.grayscale,
        brightness=config.brightness,
        contrast=config.contrast,
        low_resolution=config.low_resolution,
        erasing=config.erasing,
    )

    probe = None  # a recipe meant for a GPU says so when it starts on a CPU
    if device.type == "cpu" and trainer.ranks.main:
        recipe = f"This recipe ({config.model}, {config.image_size} px, {config.epochs} epochs)"
        probe = SlowRecipeProbe(trainer.steps_per_epoch, config.epochs - start, device.type, recipe)
    for epoch in range(start + 1, config.epochs + 1):
        patience = config.early_stopping_patience
        if patience and epoch - trainer.best["epoch"] > patience:
            logger.info("Early stop: no %s gain for %d epochs", config.monitor, patience)
            break
        row = {"epoch": epoch}
        row |= train_one_epoch(
            trainer,
            epoch,
            train_images,
            targets,
            augment=augment,
            mixer=mixer,
            loss_weight=weights if config.balance == "loss" else None,
            sample_weight=weights[labels] if config.balance == "sampler" else None,
            after_step=probe if epoch == start + 1 else None,
        )
        row |= validate(trainer, val_images, val_labels)
        trainer.history.append(row)
        if trainer.ranks.main:  # every rank holds the same figures
            logger.info(
                "epoch %d/%d: %s",
                epoch,
                config.epochs,
                ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"),
            )
        report(row)
        score = row[config.monitor]
        if math.isnan(score):
            score = -row["train_loss"]
        if score > trainer.best["score"] or trainer.best["state"] is None:
            state = trainer.evaluated.state_dict()
            trainer.best = {
                "score": score,
                "epoch": epoch,
                "state": {k: v.detach().clone() for k, v in state.items()},
            }
        if checkpoint is not None:
            save_checkpoint(trainer, checkpoint, epoch)

    best_row = trainer.history[trainer.best["epoch"] - 1]
    state = {k: v.detach().cpu() for k, v in trainer.best["state"].items()}
    spec = ModelSpec(
        name=config.model,
        image_size=config.image_size,
        mean=trainer.mean,
        std=trainer.std,
        model_kwargs=config.model_kwargs,
        epochs=len(trainer.history),
        best_epoch=trainer.best["epoch"],
        val_accuracy=best_row["val_accuracy"],
        val_macro_f1=best_row["val_macro_f1"],
        train_images=train_size,
        sources=list(config.sources) if config.sources else None,
        teacher=trainer.teacher.records if trainer.teacher is not None else None,
        temperature=calibrate(trainer, trainer.best["state"], val_images, val_labels),
    )
    return ModelBundle(spec=spec, state_dict=state), trainer.history


def stratified_subset(frame: pd.DataFrame, size: int | None, seed: int) -> pd.DataFrame:
    """A seeded sample of ``size`` rows, stratified by source and label."""
    if not size or size >= len(frame):
        return frame
    return (
        frame.groupby(["source", "label"], group_keys=False)
        .sample(frac=size / len(frame), random_state=seed)
        .sort_index()
    )


def rank_rows(n: int, seed: int, ranks: Ranks) -> np.ndarray:
    """The rows of an ``n``-row split that this rank decodes and trains on, sorted. One
    rank: all of them. Several: a seeded permutation cut into ``world_size`` equal
    shares (the last ``n % world_size`` rows of it left out), fixed for the run. Fixed,
    not reassigned every epoch: each rank decodes its share once (reassigning would read
    and decode the whole set again every epoch), and a random share is, like the whole
    set, an unbiased sample of it; the order within the share changes every epoch."""
    if ranks.world_size == 1:
        return np.arange(n)
    share = n // ranks.world_size
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[ranks.rank * share : (ranks.rank + 1) * share])


def training_images(
    train: Shards, rows: pd.DataFrame, size: int, budget_gb: float | None, ranks: Ranks
) -> torch.Tensor | EncodedImages | StreamedImages:
    """The images of ``rows`` (this rank's share of ``train``) in the form that fits
    ``budget_gb`` (``training.decoded_memory_gb``; default: half the free memory, shared
    by the ranks on this machine):
    decoded once at ``size`` when that fits; else kept encoded, decoded a batch at a
    time (about a tenth of the memory); else left in the shards, read and decoded a
    batch at a time (``StreamedImages``: a few row groups in memory)."""
    decoded = len(rows) * 3 * size**2 / 1e9
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # ranks sharing this memory
    budget = budget_gb or psutil.virtual_memory().available / 2e9 / local_ranks
    if decoded <= budget:
        return shards_to_tensor(train, rows, size, desc="decode train")
    encoded = encoded_gb(train, rows)
    form = "kept encoded" if encoded <= budget else "streamed from the shards"
    logger.warning(
        "rank %d: its %d training images would take %.1f GB decoded at %d px (%.2f GB "
        "encoded), above training.decoded_memory_gb (%.2f GB): %s, decoded a batch at a time",
        ranks.rank,
        len(rows),
        decoded,
        size,
        encoded,
        budget,
        form,
    )
    if encoded <= budget:
        return shards_to_encoded(train, rows, size)
    return StreamedImages(train, rows, size)


def rank_data(
    train: Shards, val: Shards, config: TrainConfig, ranks: Ranks
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What ``fit`` takes, for this rank: the images of its share of ``train`` (rows
    whose ``label_quality`` is in ``label_qualities`` and, when set, whose source is in
    ``sources``; ``train_subset`` of them when set; ``rank_rows``) and their targets,
    and every ``world_size``-th image of ``val`` (of ``sources``) and their labels. It
    reads the labels of every row, then decodes only its share of the images, at
    ``storage_size`` (default: ``image_size``), a shard at a time, and keeps no encoded
    bytes."""
    columns = ["label", "soft_label", "source", "label_quality"]
    rows = train.read([c for c in columns if c in train.columns], positions=True)
    if "label_quality" in rows:
        rows = rows[rows["label_quality"].isin(config.label_qualities)]
    all_val = val.read(["label", "source"], positions=True)
    if config.sources is not None:  # validated in-domain: val picks the epoch and temperature
        rows = rows[rows["source"].isin(config.sources)]
        all_val = all_val[all_val["source"].isin(config.sources)]
        if rows.empty:
            raise ValueError(f"training.sources {list(config.sources)}: no training images")
    rows = stratified_subset(rows, config.train_subset, config.seed)
    rows = rows.iloc[rank_rows(len(rows), config.seed, ranks)]
    if config.soft_targets:
        targets = torch.from_numpy(np.stack(rows["soft_label"]).astype(np.float32))
    else:
        targets = torch.eye(len(CLASSES))[torch.tensor(rows["label"].to_numpy())]
    val_rows = all_val.iloc[ranks.rank :: ranks.world_size]
    logger.info(
        "rank %d of %d decodes %d of %d training images and %d of %d validation images",
        ranks.rank,
        ranks.world_size,
        len(rows),
        len(rows) * ranks.world_size,
        len(val_rows),
        len(all_val),
    )
    size = config.storage_size or config.image_size
    train_images = training_images(train, rows, size, config.decoded_memory_gb, ranks)
    return (
        train_images,
        targets,
        shards_to_tensor(val, val_rows, size, desc="decode val"),
        torch.tensor(val_rows["label"].to_numpy()),
    )


def fit_shards(
    train: Shards,
    val: Shards,
    config: TrainConfig,
    checkpoint: Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    teachers: Sequence[tuple[str, ModelBundle]] | None = None,
) -> tuple[ModelBundle, list[dict[str, float]]]:
    """``fit`` on this rank's share of the ``train`` and ``val`` shards
    (``rank_data``)."""
    data = rank_data(train, val, config, current_ranks())
    return fit(*data, config, checkpoint, on_epoch, teachers)
