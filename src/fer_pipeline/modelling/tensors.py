"""Encoded images -> uint8 tensors at the model's resolution: decoded once (a tensor),
kept encoded and decoded per batch (``EncodedImages``), or read from the shards on disk
per batch (``StreamedImages``)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from fer_pipeline.data.images import decode_image, parallel_map, resized_rgb
from fer_pipeline.data.schema import POSITION_COLUMNS
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


def encoded_gb(shards: Shards, positions: pd.DataFrame) -> float:
    """What the images at ``positions`` of ``shards`` take encoded, in GB, from the
    Parquet metadata (each row group's compressed ``image`` column, shared out over its
    rows), without reading an image."""
    shard = positions[POSITION_COLUMNS[0]].to_numpy()
    group, _ = shards.locate(positions)
    keys, counts = np.unique(np.stack([shard, group], 1), axis=0, return_counts=True)
    total = 0.0
    for index in np.unique(keys[:, 0]):
        metadata = pq.ParquetFile(shards.files[int(index)]).metadata
        paths = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
        image = paths.index("image")
        for number, count in zip(keys[keys[:, 0] == index, 1], counts[keys[:, 0] == index]):
            rows = metadata.row_group(int(number))
            total += rows.column(image).total_compressed_size * count / rows.num_rows
    return total / 1e9


class StreamedImages:
    """A rank's training images left in the shards on disk: each batch reads the row
    groups that hold it (the ``image`` column only; the last ``2 x window`` row groups
    stay in memory) and decodes its images at ``size``. What training indexes when even
    the encoded share would not fit in memory. An epoch's draws must come in the order
    ``localise`` gives, or every batch reads a row group per image."""

    device = torch.device("cpu")

    def __init__(self, shards: Shards, positions: pd.DataFrame, size: int, window: int = 8):
        self.shards, self.size, self.window = shards, size, window
        shard = positions[POSITION_COLUMNS[0]].to_numpy()
        group, self.row_in_group = shards.locate(positions)
        keys, block = np.unique(np.stack([shard, group], 1), axis=0, return_inverse=True)
        self.block = block.reshape(-1)
        self.keys = [(int(s), int(g)) for s, g in keys]  # block -> (shard, row group)
        self.cache: OrderedDict[int, pa.BinaryArray] = OrderedDict()
        self.groups_read = 0

    def __len__(self) -> int:
        return len(self.block)

    def _group(self, block: int) -> pa.Array:
        if block in self.cache:
            self.cache.move_to_end(block)
            return self.cache[block]
        shard, group = self.keys[block]
        images = pq.ParquetFile(self.shards.files[shard]).read_row_group(group, ["image"])
        self.cache[block] = images.column("image").combine_chunks()
        self.groups_read += 1
        while len(self.cache) > 2 * self.window:
            self.cache.popitem(last=False)
        return self.cache[block]

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        wanted = index.tolist()
        batch = [self._group(int(self.block[i]))[int(self.row_in_group[i])].as_py() for i in wanted]
        out = np.empty((len(batch), self.size, self.size, 3), dtype=np.uint8)
        _decode_into(out, batch, desc="")
        return torch.from_numpy(out).permute(0, 3, 1, 2)

    def localise(self, order: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The epoch's draws ``order`` (image indices) reordered so that they come a
        window of ``window`` row groups at a time: the row groups in a random order,
        the draws within each window shuffled. Which images an epoch sees, and how
        often, are ``order``'s (a shuffle buffer's trade: an image's neighbours in a
        batch come from the same ``window`` row groups)."""
        device = order.device
        blocks = torch.from_numpy(self.block).to(device)[order]
        rank = torch.randperm(len(self.keys), generator=generator, device=device).argsort()
        window = torch.div(rank[blocks], self.window, rounding_mode="floor")  # each group's
        noise = torch.rand(len(order), generator=generator, device=device, dtype=torch.float64)
        return order[torch.argsort(window.double() + noise)]
