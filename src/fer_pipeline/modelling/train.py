"""The training loop: on-device data and augmentation, AMP, EMA, early stopping, and
a checkpoint after every epoch that a restarted run resumes from."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from tqdm.auto import tqdm

from fer_pipeline.modelling.augment import BatchAugment, TargetMixer, normalise
from fer_pipeline.modelling.metrics import macro_f1
from fer_pipeline.modelling.models import ModelBundle, build_model
from fer_pipeline.modelling.schedule import lr_at
from fer_pipeline.schema import CLASSES

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Every part of the recipe; ``conf/base/parameters_training.yml`` documents them."""

    model: str = "vit_tiny_patch16_224"
    image_size: int = 224
    pretrained: bool | str = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    mean: list[float] | None = None  # default: the model's own (timm's pretrained_cfg)
    std: list[float] | None = None
    epochs: int = 60
    batch_size: int = 64
    lr: float = 3e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_epochs: float = 5.0
    hflip: float = 0.5
    rotation: float = 10.0
    scale: list[float] = field(default_factory=lambda: [0.9, 1.1])
    translate: float = 0.05
    mixup_alpha: float = 0.2
    cutmix_alpha: float = 1.0
    mix_prob: float = 0.3
    switch_prob: float = 0.5
    label_smoothing: float = 0.1
    soft_targets: bool = False
    balance: str = "none"  # none | sampler | loss
    grad_clip: float = 1.0  # 0: off
    ema_decay: float = 0.0  # 0: off
    early_stopping_patience: int = 0  # epochs without val improvement; 0: off
    monitor: str = "val_accuracy"
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 / fp16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    channels_last: bool = True
    compile: bool = False
    data_on_device: bool | str = "auto"  # auto (when it fits) | true | false
    eval_batch_size: int = 256

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown training parameter(s): {', '.join(unknown)}")
        config = cls(**params)
        choices = {
            "balance": ("none", "sampler", "loss"),
            "precision": ("auto", "fp32", "bf16", "fp16"),
            "data_on_device": ("auto", True, False),
        }
        for name, allowed in choices.items():
            if getattr(config, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(config, name)!r}")
        return config


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or ``None`` for fp32."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def model_norm(config: TrainConfig, model: torch.nn.Module) -> tuple[list[float], list[float]]:
    """Normalisation mean and std: configured, else the timm model's, else 0.5."""
    if config.mean and config.std:
        return list(config.mean), list(config.std)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return list(cfg.get("mean", (0.5,) * 3)), list(cfg.get("std", (0.5,) * 3))


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    images: torch.Tensor,
    mean: list[float],
    std: list[float],
    device: torch.device,
    batch_size: int = 256,
    dtype: torch.dtype | None = None,
    transform: Any = None,
) -> torch.Tensor:
    """Logits (float32, on the CPU) for uint8 images, in batches; ``transform`` maps a
    uint8 batch to a normalised one (default: normalisation only)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device, non_blocking=True)
        x = transform(batch) if transform else normalise(batch, mean, std)
        with autocast(device, dtype):
            out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0, len(CLASSES))


def _atomic_save(payload: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _class_weights(targets: torch.Tensor) -> torch.Tensor:
    counts = targets.sum(0).clamp(min=1)
    return counts.sum() / (len(counts) * counts)


def fit(
    train_images: torch.Tensor,
    train_targets: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    config: TrainConfig,
    checkpoint: Path | None = None,
) -> tuple[ModelBundle, list[dict[str, float]]]:
    """Train on uint8 images ``(N, 3, S, S)`` with target distributions ``(N, 7)``;
    validate on integer labels after every epoch.

    With ``checkpoint``, every epoch ends by saving one there, and a call that finds one
    resumes after its epoch. Returns the best model by ``config.monitor`` (the EMA
    weights when enabled) and the per-epoch history.
    """
    device = resolve_device(config.device)
    dtype = autocast_dtype(config.precision, device)
    torch.manual_seed(config.seed)
    model = build_model(config.model, config.image_size, config.pretrained, **config.model_kwargs)
    mean, std = model_norm(config, model)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(model, decay=config.ema_decay) if config.ema_decay > 0 else None
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        fused=device.type == "cuda",
    )
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    step_fn = torch.compile(model) if config.compile else model

    on_device = config.data_on_device is True or (
        config.data_on_device == "auto"
        and device.type == "cuda"
        and train_images.numel() < 0.5 * torch.cuda.mem_get_info(device)[0]
    )
    if on_device:
        train_images = train_images.to(device)
    elif device.type == "cuda":
        train_images = train_images.pin_memory()
    train_targets = train_targets.to(device)
    hard = train_targets.argmax(1)
    augment = BatchAugment(mean, std, config.hflip, config.rotation, config.scale, config.translate)
    mixer = TargetMixer(
        len(CLASSES),
        config.mixup_alpha,
        config.cutmix_alpha,
        config.mix_prob,
        config.switch_prob,
        config.label_smoothing,
    )
    loss_weight = _class_weights(train_targets) if config.balance == "loss" else None
    sample_weight = (
        (1 / train_targets.sum(0).clamp(min=1))[hard] if config.balance == "sampler" else None
    )

    n = len(train_images)
    if n < 2:
        raise ValueError(f"training needs at least 2 images, got {n}")
    batch = min(config.batch_size, n - n % 2)  # Mixup needs an even batch
    steps_per_epoch = n // batch
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"score": -math.inf, "epoch": 0, "state": None}
    start_epoch = 1
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        history, best = state["history"], state["best"]
        start_epoch = state["epoch"] + 1
        logger.info("Resuming from %s after epoch %d", checkpoint, state["epoch"])

    for epoch in range(start_epoch, config.epochs + 1):
        if (
            config.early_stopping_patience
            and epoch - best["epoch"] > config.early_stopping_patience
        ):
            logger.info(
                "Early stop: no %s gain for %d epochs",
                config.monitor,
                config.early_stopping_patience,
            )
            break
        # Seeding each epoch from (seed, epoch) makes a resumed run repeat the same draws.
        torch.manual_seed(config.seed * 1000 + epoch)
        np.random.seed((config.seed * 1000 + epoch) % 2**32)
        generator = torch.Generator(device=device).manual_seed(config.seed * 1000 + epoch)
        if sample_weight is not None:
            order = torch.multinomial(sample_weight, n, replacement=True, generator=generator)
        else:
            order = torch.randperm(n, generator=generator, device=device)
        model.train()
        seen, loss_sum, correct, started = 0, 0.0, 0, time.perf_counter()
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch}/{config.epochs}",
            unit="batch",
            mininterval=2.0,
            leave=False,
        )
        for step in bar:
            lr = lr_at(
                (epoch - 1) * steps_per_epoch + step,
                steps_per_epoch=steps_per_epoch,
                epochs=config.epochs,
                warmup_epochs=config.warmup_epochs,
                lr=config.lr,
                min_lr=config.min_lr,
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            index = order[step * batch : (step + 1) * batch]
            images = train_images[index.to(train_images.device)].to(device, non_blocking=True)
            x = augment(images, generator)
            x, targets = mixer(x, train_targets[index])
            with autocast(device, dtype):
                logits = step_fn(x)
                loss = F.cross_entropy(logits.float(), targets, weight=loss_weight)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(model)
            seen += len(index)
            loss_sum += loss.detach() * len(index)
            correct += (logits.argmax(1) == hard[index]).sum()
            if step % 10 == 9 or step == steps_per_epoch - 1:
                rate = seen / (time.perf_counter() - started)
                bar.set_postfix(
                    loss=f"{float(loss_sum) / seen:.3f}",
                    acc=f"{float(correct) / seen:.3f}",
                    img_s=f"{rate:.0f}",
                )
        seconds = time.perf_counter() - started
        evaluated = ema.module if ema is not None else model
        logits = predict_logits(
            evaluated, val_images, mean, std, device, config.eval_batch_size, dtype
        )
        predicted = logits.argmax(1)
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": float(loss_sum) / max(seen, 1),
            "train_accuracy": float(correct) / max(seen, 1),
            "val_loss": float(F.cross_entropy(logits, val_labels)) if len(val_labels) else math.nan,
            "val_accuracy": float((predicted == val_labels).float().mean())
            if len(val_labels)
            else math.nan,
            "val_macro_f1": macro_f1(val_labels.numpy(), predicted.numpy(), len(CLASSES)),
            "images_per_second": seen / seconds,
            "seconds": seconds,
        }
        history.append(row)
        logger.info(
            "epoch %d/%d: %s",
            epoch,
            config.epochs,
            ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"),
        )
        score = row[config.monitor] if not math.isnan(row[config.monitor]) else -row["train_loss"]
        if score > best["score"] or best["state"] is None:
            state = evaluated.state_dict()
            best = {
                "score": score,
                "epoch": epoch,
                "state": {k: v.detach().clone() for k, v in state.items()},
            }
        if checkpoint is not None:
            _atomic_save(
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "ema": ema.state_dict() if ema else {},
                    "history": history,
                    "best": best,
                },
                checkpoint,
            )

    best_row = history[best["epoch"] - 1]
    spec = {
        "name": config.model,
        "image_size": config.image_size,
        "model_kwargs": config.model_kwargs,
        "mean": mean,
        "std": std,
        "classes": list(CLASSES),
        "epochs": len(history),
        "best_epoch": best["epoch"],
        "val_accuracy": best_row["val_accuracy"],
        "val_macro_f1": best_row["val_macro_f1"],
    }
    state = {k: v.detach().cpu() for k, v in best["state"].items()}
    return ModelBundle(spec=spec, state_dict=state), history
