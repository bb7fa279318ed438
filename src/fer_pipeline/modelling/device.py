"""Running a model: the device, autocast, input normalisation and batched prediction.

Training, evaluation and serving share this module; it holds no part of the training
recipe.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from fer_pipeline.data.schema import CLASSES

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a ``precision`` setting, or ``None`` for fp32; ``auto`` is
    bf16 on CUDA where supported, else fp16 there, and fp32 on a CPU. bf16 on a CPU
    without bf16 instructions (AVX-512 BF16 or AMX) is fp32, with a warning: emulated
    bf16 trains ~10x slower than fp32 there (2 AVX2 cores, fer_resnet18 at 40 px: 14
    against 140 images/s)."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        logger.warning(
            "precision bf16 asked for, but this CPU has no bf16 instructions (emulated bf16 "
            "is ~10x slower than fp32): running in fp32"
        )
        return None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's check: AVX-512 BF16 or AMX)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return True if check is None else bool(check())


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def normalise(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float], size: int | None = None
) -> torch.Tensor:
    """uint8 or [0, 1] float images -> normalised float32, channels-last; resized
    (bilinear) to ``size`` pixels square when given and different."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    batch_size: int = 256,
    dtype: torch.dtype | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Logits (float32, on the CPU) of uint8 images ``(N, 3, S, S)``, in batches;
    ``transform`` maps a uint8 batch to a normalised one (default: normalisation)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device, non_blocking=True)
        x = transform(batch) if transform else normalise(batch, mean, std)
        with autocast(device, dtype):
            out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0, len(CLASSES))
