"""Turn a source's release into shards of faces with pixel and perceptual hashes."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from fer_pipeline.data.errors import InputDataError
from fer_pipeline.data.executors import bounded_map, open_executor, worker_count
from fer_pipeline.data.images import (
    decode_image,
    encode_jpeg,
    encode_png,
    near_thumbnail,
    phash_thumbnail,
    phashes,
    pixel_hash,
    resized_to_side,
)
from fer_pipeline.data.schema import DROPPED_COLUMNS, IMAGE_COLUMNS
from fer_pipeline.datasets.base import Release, SourceDataset
from fer_pipeline.pipelines.ingestion.config import IngestionConfig


def _stored(
    item: bytes | np.ndarray, origin: str, reader: SourceDataset, config: IngestionConfig
) -> tuple[bytes, np.ndarray]:
    """The bytes to store for one image (as released when it is encoded and small
    enough, else re-encoded at most ``max_side`` a side) and the pixels they decode to."""
    data = item if isinstance(item, bytes) else None
    if data is not None:
        try:
            item = decode_image(data)
        except ValueError as exc:
            raise InputDataError(f"{origin}: corrupt image: {exc}") from exc
    if max(item.shape[:2]) > config.max_side:
        item, data = resized_to_side(item, config.max_side), None
    if data is not None:
        return data, item
    if reader.pixel_format == "png":
        return encode_png(item), item
    data = encode_jpeg(item, config.jpeg_quality)
    return data, decode_image(data)  # the hashes describe what training will decode


def face_shard(task: tuple[SourceDataset, pd.DataFrame, IngestionConfig]) -> pd.DataFrame:
    """One shard: the rows' faces, stored and measured (runs in a worker process)."""
    reader, rows, config = task
    images, hashes, thumbnails, small, shapes = [], [], [], [], []
    for origin, item in zip(rows["origin"], reader.images(rows), strict=True):
        data, pixels = _stored(item, origin, reader, config)
        images.append(data)
        hashes.append(pixel_hash(pixels))
        thumbnails.append(phash_thumbnail(pixels))
        small.append(near_thumbnail(pixels))
        shapes.append(pixels.shape)
    measured = pd.DataFrame(
        {
            "image": images,
            "pixel_hash": hashes,
            "phash": phashes(np.stack(thumbnails)),
            "thumbnail": small,
            "height": [s[0] for s in shapes],
            "width": [s[1] for s in shapes],
            "channels": [s[2] if len(s) == 3 else 1 for s in shapes],
        },
        index=rows.index,
    )[list(IMAGE_COLUMNS)]
    return pd.concat([rows.drop(columns=list(reader.locators)), measured], axis=1).reset_index(
        drop=True
    )


def _face_shards(
    reader: SourceDataset, faces: pd.DataFrame, config: IngestionConfig
) -> Iterator[pd.DataFrame]:
    if not len(faces):  # an absent optional source: one empty shard with the columns
        yield faces.drop(columns=list(reader.locators), errors="ignore").assign(
            **{column: pd.Series(dtype=object) for column in IMAGE_COLUMNS}
        )
        return
    if config.executor == "processes" and len(faces) <= config.shard_rows:
        yield face_shard((reader, faces, config))  # one shard: not worth starting workers
        return
    chunks = (
        (reader, faces.iloc[start : start + config.shard_rows], config)
        for start in range(0, len(faces), config.shard_rows)
    )
    with (
        open_executor(config.executor, config.workers, config.dask_address) as executor,
        tqdm(total=len(faces), desc=f"{reader.source}: faces", unit="img", mininterval=2) as bar,
    ):
        window = 2 * worker_count(config.workers)
        for shard in bounded_map(executor, face_shard, chunks, window):
            bar.update(len(shard))
            yield shard


def faces_from_release(
    release: Release, ingestion: IngestionConfig
) -> tuple[Iterator[pd.DataFrame], pd.DataFrame]:
    """The release's faces as shards of ``shard_rows`` rows in ``source_id`` order, each
    face stored at most ``max_side`` a side and measured (``pixel_hash``, ``phash``,
    ``height``, ``width``, ``channels``), and the rows the release marks as skipped.

    The shards are made in ``ingestion.executor`` as the dataset writes them, a few at a
    time, so memory does not grow with the source.
    """
    table = release.table.sort_values("source_id", kind="stable")
    keep = table["skip_reason"].isna().to_numpy()
    skipped = table.loc[~keep].rename(columns={"skip_reason": "reason"})[list(DROPPED_COLUMNS)]
    faces = table.loc[keep].drop(columns=["skip_reason"]).reset_index(drop=True)
    return _face_shards(release.reader, faces, ingestion), skipped.reset_index(drop=True)
