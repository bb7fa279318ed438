"""Encoded images -> one uint8 tensor at the model's resolution, decoded once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from fer_pipeline.data.images import decode_image, parallel_map, resized_rgb
from fer_pipeline.data.shards import Shards


def _decode_into(out: np.ndarray, images: Sequence[bytes], desc: str) -> None:
    def fill(i: int) -> None:
        out[i] = resized_rgb(decode_image(images[i]), out.shape[1])

    parallel_map(fill, range(len(images)), desc=desc)


def images_to_tensor(images: Sequence[bytes], size: int, desc: str = "decode") -> torch.Tensor:
    """``(N, 3, size, size)`` uint8 RGB in channels-last memory; grayscale is replicated."""
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    _decode_into(out, images, desc)
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def shards_to_tensor(
    shards: Shards, positions: pd.DataFrame, size: int, desc: str = "decode"
) -> torch.Tensor:
    """``images_to_tensor`` of the images at ``positions`` of ``shards`` (sorted
    ``shard``, ``row``), read and decoded a shard at a time: the encoded bytes of one
    shard at most are in memory."""
    out = np.empty((len(positions), size, size, 3), dtype=np.uint8)
    start = 0
    with tqdm(total=len(positions), desc=desc, unit="img", mininterval=2.0) as bar:
        for part in shards.take(positions, columns=["image"]):
            images = part["image"].tolist()
            _decode_into(out[start : start + len(images)], images, desc="")
            start += len(images)
            bar.update(len(images))
    return torch.from_numpy(out).permute(0, 3, 1, 2)


class EncodedImages:
    """A rank's training images kept encoded and decoded a batch at a time at ``size``:
    what training indexes instead of a decoded tensor when that would not fit in
    memory (about 10x less memory, one decode per image per epoch)."""

    device = torch.device("cpu")

    def __init__(self, images: list[bytes], size: int):
        self.images, self.size = images, size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        batch = [self.images[i] for i in index.tolist()]
        out = np.empty((len(batch), self.size, self.size, 3), dtype=np.uint8)
        _decode_into(out, batch, desc="")
        return torch.from_numpy(out).permute(0, 3, 1, 2)


def shards_to_encoded(shards: Shards, positions: pd.DataFrame, size: int) -> EncodedImages:
    """The images at ``positions`` of ``shards`` (sorted), kept encoded."""
    images = [image for part in shards.take(positions, ["image"]) for image in part["image"]]
    return EncodedImages(images, size)
