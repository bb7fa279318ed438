"""Turn a source's release table into faces with pixel and perceptual hashes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fer_pipeline.errors import InputDataError
from fer_pipeline.images import (
    PHASH_SIZE,
    decode_image,
    parallel_map,
    phash_thumbnail,
    phashes,
    pixel_hash,
)
from fer_pipeline.schema import DROPPED_COLUMNS


def _fingerprint(item: np.ndarray | tuple[str, bytes]) -> tuple[str, np.ndarray, tuple]:
    """Pixel hash, perceptual-hash thumbnail and shape of decoded pixels, or of the
    image bytes of a ``(origin, bytes)`` pair."""
    if isinstance(item, tuple):
        origin, data = item
        try:
            item = decode_image(data)
        except ValueError as exc:
            raise InputDataError(f"{origin}: corrupt image: {exc}") from exc
    return pixel_hash(item), phash_thumbnail(item), item.shape


def faces_from_release(release: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a release table into faces (decoded once to add ``pixel_hash``, ``phash``,
    ``height``, ``width``, ``channels``) and the rows the release marks as skipped."""
    keep = release["skip_reason"].isna().to_numpy()
    skipped = release.loc[~keep].rename(columns={"skip_reason": "reason"})[list(DROPPED_COLUMNS)]
    faces = release.loc[keep].drop(columns=["skip_reason"]).reset_index(drop=True)
    if "pixels" in faces:
        items = list(faces.pop("pixels"))
    else:
        items = list(zip(faces["origin"], faces["image"]))
    source = faces["source"].iloc[0] if len(faces) else "source"
    prints = parallel_map(_fingerprint, items, desc=f"{source}: decode and hash")
    thumbnails = (
        np.stack([p[1] for p in prints]) if prints else np.empty((0, PHASH_SIZE, PHASH_SIZE))
    )
    shapes = [p[2] for p in prints]
    return (
        faces.assign(
            pixel_hash=[p[0] for p in prints],
            phash=phashes(thumbnails),
            height=[s[0] for s in shapes],
            width=[s[1] for s in shapes],
            channels=[s[2] if len(s) == 3 else 1 for s in shapes],
        ),
        skipped.reset_index(drop=True),
    )
