"""Encoded images -> one uint8 tensor at the model's resolution, decoded once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fer_pipeline.images import decode_image, parallel_map, resized_rgb


def images_to_tensor(images: Sequence[bytes], size: int, desc: str = "decode") -> torch.Tensor:
    """``(N, 3, size, size)`` uint8 RGB in channels-last memory; grayscale is replicated."""
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)

    def fill(i: int) -> None:
        out[i] = resized_rgb(decode_image(images[i]), size)

    parallel_map(fill, range(len(images)), desc=desc)
    return torch.from_numpy(out).permute(0, 3, 1, 2)
