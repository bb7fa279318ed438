"""How well descriptors tell planted near copies from other faces, on a release made by
``benchmarks/scale_data.py`` (its ``planted.csv``).

Every face of the generated AffectNet release, and the FER+ and RAF-DB faces that
planted copies were made from, is stored as ingestion stores it (``ingestion.max_side``);
then for each descriptor it prints the share of planted near copies it finds and how
many other pairs it links, all pairs compared (so keep the release small):

- ``phash <= k``: the 64-bit perceptual hash the pipeline uses, within ``k`` bits;
- ``phash <= k, shifted >= t``: those candidates kept when their stored thumbnails
  correlate at least ``t``, one shifted by up to 2 pixels (``shifted_correlation``, as
  splitting does);
- ``dct6 >= t``: the cosine of the 35 lowest DCT frequencies of the 32x32 thumbnail.

``linked per planted`` is the other pairs linked per planted copy found: at a million
faces, the pairs it would link grow with the square of the faces.

    python benchmarks/scale_data.py --faces 6000 --near-duplicates 2000 --out /tmp/near6k
    python benchmarks/near_copies.py /tmp/near6k
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from _scratch import SHARED_DATA

from fer_pipeline.data.images import (
    NEAR_THUMBNAIL_SIDE,
    _dct_matrix,
    near_thumbnail,
    phash_thumbnail,
    phashes,
    to_gray,
)
from fer_pipeline.data.near_duplicates import hamming_pairs, shifted_correlation
from fer_pipeline.datasets import AffectNetRelease, FerPlusRelease, RafDbRelease
from fer_pipeline.pipelines.ingestion.config import IngestionConfig
from fer_pipeline.pipelines.ingestion.nodes import _stored


def stored_faces(release: Path) -> tuple[list[np.ndarray], dict[tuple[str, str], int]]:
    """Grey faces as ingestion stores them: the release's, and the real ones its
    planted copies came from; and each face's index by (source, id)."""
    planted = pd.read_csv(release / "planted.csv", dtype=str)
    wanted = {
        source: set(planted["a_id"][planted["a_source"] == source])
        for source in ("ferplus", "rafdb")
    }
    readers = {
        "affectnet": AffectNetRelease(str(release)),
        "ferplus": FerPlusRelease(str(SHARED_DATA / "ferplus")),
        "rafdb": RafDbRelease(str(SHARED_DATA / "rafdb/basic")),
    }
    config, faces, where = IngestionConfig(), [], {}
    for source, dataset in readers.items():
        loaded = dataset.load()
        reader, table = loaded.reader, loaded.table.drop_duplicates("source_id")
        if source in wanted:
            table = table[table["source_id"].isin(wanted[source])]
        for source_id, origin, item in zip(
            table["source_id"], table["origin"], reader.images(table), strict=True
        ):
            where[(source, source_id)] = len(faces)
            faces.append(to_gray(_stored(item, origin, reader, config)[1]))
    return faces, where


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", type=Path, help="made by scale_data.py (a few thousand rows)")
    args = parser.parse_args()
    faces, where = stored_faces(args.release)
    planted = pd.read_csv(args.release / "planted.csv", dtype=str)
    pairs = np.sort(
        [
            (where[(a, x)], where[(b, y)])
            for a, x, b, y in planted[["a_source", "a_id", "b_source", "b_id"]].to_numpy()
        ],
        axis=1,
    )
    n, near = len(faces), (planted["kind"] == "near").to_numpy()
    is_near, is_exact = np.zeros(n * n, bool), np.zeros(n * n, bool)
    is_near[pairs[near, 0] * n + pairs[near, 1]] = True
    is_exact[pairs[~near, 0] * n + pairs[~near, 1]] = True  # neither found nor other
    thumbnails = np.stack([phash_thumbnail(face) for face in faces])
    side = NEAR_THUMBNAIL_SIDE  # as ingestion stores them
    small = np.stack([np.frombuffer(near_thumbnail(face), np.uint8) for face in faces])
    small = small.reshape(n, side, side)
    dct = _dct_matrix(thumbnails.shape[1])
    low = (dct @ thumbnails.astype(np.float32) @ dct.T)[:, :6, :6].reshape(n, 36)[:, 1:]
    low = _unit_rows(low)
    print(f"{n} faces, {near.sum()} planted near copies, {n * (n - 1) // 2} pairs compared")
    rows = []

    def row(name: str, i: np.ndarray, j: np.ndarray) -> None:
        hit, other = is_near[i * n + j], ~(is_near | is_exact)[i * n + j]
        rows.append(
            {
                "descriptor": name,
                "planted found": f"{hit.sum() / near.sum():.1%}",
                "other pairs": int(other.sum()),
                "linked per planted": round(float(other.sum() / max(hit.sum(), 1)), 2),
                "share of all pairs": f"{len(i) / (n * (n - 1) / 2):.1e}",
            }
        )

    hashes = phashes(thumbnails)
    for k in (6, 10, 14):
        i, j = hamming_pairs(hashes, k).T
        row(f"phash <= {k}", i, j)
        shifted = shifted_correlation(small, np.stack([i, j], axis=1))
        for threshold in (0.8, 0.85, 0.9):
            keep = shifted >= threshold
            row(f"phash <= {k}, shifted >= {threshold}", i[keep], j[keep])
    cosine = low @ low.T
    for threshold in (0.8, 0.85, 0.9):
        i, j = np.nonzero(np.triu(cosine >= threshold, 1))
        row(f"dct6 >= {threshold}", i, j)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
