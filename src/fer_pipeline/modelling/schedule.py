"""Learning rate: linear warmup counted in epochs, then cosine decay."""

from __future__ import annotations

import math


def lr_at(
    step: int, *, steps_per_epoch: int, epochs: int, warmup_epochs: float, lr: float, min_lr: float
) -> float:
    """The learning rate of optimizer step ``step`` (0-based)."""
    warmup = round(warmup_epochs * steps_per_epoch)
    total = epochs * steps_per_epoch
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))
