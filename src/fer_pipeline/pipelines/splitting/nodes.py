"""Deduplicate across sources, hold out the official test sets, split off validation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fer_pipeline.data.images import NEAR_THUMBNAIL_SIDE  # noqa: E402
from fer_pipeline.data.near_duplicates import (  # noqa: E402
    components,
    hamming_pairs,
    shifted_correlation,
)
from fer_pipeline.data.schema import (  # noqa: E402
    CLASSES,
    POSITION_COLUMNS,
    SOURCES,
    SPLIT_COLUMNS,
    SPLITS,
)
from fer_pipeline.data.shards import Shards  # noqa: E402

_SPLIT_RANK = {"test": 0, "val": 1, "train": 2}


def _members(group: pd.DataFrame) -> list[dict[str, Any]]:
    return group[["source", "source_id", "source_split", "label_name"]].to_dict("records")


def _exact_duplicates(faces: pd.DataFrame, examples: int) -> tuple[pd.DataFrame, dict]:
    """Remove repeated images (same ``pixel_hash``) before splitting. Official test
    rows are never removed, so each test set stays as released; a train or val row
    whose image is in a test set is removed; other repeats are kept once, val before
    train, then by source order and id. Returns the kept rows and a summary."""
    ranked = faces.assign(
        _split=faces["source_split"].map(_SPLIT_RANK),
        _source=faces["source"].map({s: i for i, s in enumerate(SOURCES)}),
    ).sort_values(["pixel_hash", "_split", "_source", "source_id"])
    is_test = ranked["source_split"] == "test"
    in_test = ranked["pixel_hash"].isin(ranked.loc[is_test, "pixel_hash"])
    removed = ~is_test & (in_test | ranked["pixel_hash"].duplicated(keep="first"))
    repeated = ranked[ranked["pixel_hash"].duplicated(keep=False)]
    groups = repeated.groupby("pixel_hash", sort=True)
    spread = groups.agg(
        sources=("source", "nunique"),
        splits=("source_split", "nunique"),
        labels=("label", "nunique"),
    )
    summary = {
        "groups": len(spread),
        "rows_removed": int(removed.sum()),
        "test_repeats_kept": int(is_test.sum() - ranked.loc[is_test, "pixel_hash"].nunique()),
        "groups_across_sources": int((spread["sources"] > 1).sum()),
        "groups_across_official_splits": int((spread["splits"] > 1).sum()),
        "groups_with_conflicting_labels": int((spread["labels"] > 1).sum()),
        "examples": [_members(g) for _, g in list(groups)[:examples]],
    }
    return ranked[~removed].drop(columns=["_split", "_source"]), summary


def _near_pairs(
    faces: pd.DataFrame, k: int, min_correlation: float | None
) -> tuple[np.ndarray, int]:
    """Row pairs whose perceptual hashes differ in at most ``k`` bits and, unless
    ``min_correlation`` is None, whose thumbnails correlate at least that much, one
    shifted by up to 2 pixels; and the number of candidates the hashes gave."""
    pairs = hamming_pairs(faces["phash"].to_numpy(), k)
    candidates = len(pairs)
    if min_correlation is not None and candidates:
        rows = np.unique(pairs)  # only the candidates' thumbnails, as one array
        side = NEAR_THUMBNAIL_SIDE
        small = np.frombuffer(b"".join(faces["thumbnail"].to_numpy()[rows]), np.uint8)
        small = small.reshape(len(rows), side, side)
        pairs = pairs[shifted_correlation(small, np.searchsorted(rows, pairs)) >= min_correlation]
    return pairs, candidates


def _near_duplicates(
    faces: pd.DataFrame, split: np.ndarray, splitting: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Groups of distinct images whose perceptual hashes differ in at most
    ``near_duplicate_bits`` bits and whose thumbnails correlate at least
    ``near_duplicate_correlation`` (linked pairs: resized, re-encoded, shifted copies),
    kept in one split: a group with
    an official test image keeps only its test images, one with an official val image
    loses its train images, and one across train and a sampled val goes to train.
    Returns each row's group (the index of its first row), the rows kept, their split
    (changed), and a summary."""
    k, min_correlation = splitting["near_duplicate_bits"], splitting["near_duplicate_correlation"]
    pairs, candidates = _near_pairs(faces, k, min_correlation)
    group = components(len(faces), pairs)
    official = faces["source_split"].to_numpy(dtype=object)

    def per_group(flags: np.ndarray) -> np.ndarray:
        """Whether any row of each row's group has ``flags``."""
        return (np.bincount(group, weights=flags, minlength=len(group)) > 0)[group]

    in_group = np.bincount(group, minlength=len(group))[group] > 1
    straddling = sum(per_group(split == name) for name in SPLITS) > 1
    with_test, with_val = per_group(official == "test"), per_group(official == "val")
    near_test = with_test & (split != "test")
    near_val = with_val & ~with_test & (split == "train")
    keep = ~(near_test | near_val)
    moved = keep & straddling & (split == "val") & (official == "train") & ~with_val
    repeated = faces.assign(split=split, _group=group)[in_group]  # before the changes
    split = np.where(moved, "train", split)
    codes, names = pd.factorize(faces["source"], sort=True)
    low, high = np.sort(codes[pairs], axis=1).T if len(pairs) else ([], [])
    pair_sources = pd.Series(np.asarray(low) * len(names) + high, dtype=np.int64).value_counts()
    across = repeated.groupby("_group")["split"].nunique() > 1
    summary = {
        "max_bits": k,
        "min_correlation": min_correlation,
        "candidates": candidates,
        "pairs": len(pairs),
        "pairs_by_sources": {
            f"{names[key // len(names)]} + {names[key % len(names)]}": int(n)
            for key, n in pair_sources.items()
        },
        "groups": int(repeated["_group"].nunique()),
        "rows": len(repeated),
        "largest_group": int(repeated.groupby("_group").size().max()) if len(repeated) else 0,
        "groups_across_splits_before": int(across.sum()),
        "rows_removed_near_test": int(near_test.sum()),
        "rows_removed_near_val": int(near_val.sum()),
        "rows_moved_val_to_train": int(moved.sum()),
        "examples": [
            _members(repeated[repeated["_group"] == key])
            for key in across[across].index[: splitting["examples"]]
        ],
    }
    return group, keep, split, summary


def _assign_splits(faces: pd.DataFrame, val_fraction: float, seed: int) -> np.ndarray:
    """Official test -> test; official val -> val; pools without an official val give a
    seeded, class-stratified ``val_fraction`` of their training rows; the rest train."""
    split = faces["source_split"].to_numpy(dtype=object).copy()
    pools_with_val = set(faces.loc[faces["source_split"] == "val", "pool"])
    candidates = faces[(faces["source_split"] == "train") & ~faces["pool"].isin(pools_with_val)]
    rng = np.random.default_rng(seed)
    position = pd.Series(np.arange(len(faces)), index=faces.index)
    for _, group in candidates.sort_values(["pool", "label", "source_id"]).groupby(
        ["pool", "label"], sort=True
    ):
        take = round(val_fraction * len(group))
        chosen = rng.choice(len(group), size=take, replace=False)
        split[position[group.index[chosen]].to_numpy()] = "val"
    return split


def split_faces(
    faces_all: pd.DataFrame, splitting: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Deduplicate ``faces_all`` by decoded pixels across all sources, give each row its
    ``split`` (train, val or test), and keep each group of near-duplicates
    (``near_duplicate_bits``; ``near_group``) in one split; rows sorted by source and id.
    Also a summary of the duplicates and near-duplicates found."""
    faces, duplicates = _exact_duplicates(faces_all, splitting["examples"])
    faces = faces.sort_values(["source", "source_id"]).reset_index(drop=True)
    split = _assign_splits(faces, splitting["val_fraction"], splitting["seed"])
    group, keep, split, near = _near_duplicates(faces, split, splitting)
    summary = {
        "val_fraction": splitting["val_fraction"],
        "seed": splitting["seed"],
        "duplicates": duplicates,
        "near_duplicates": near,
    }
    faces = faces.assign(split=split, near_group=group)[keep].drop(columns="thumbnail")
    return faces.reset_index(drop=True), summary


def _split_parts(name: str, split_index: pd.DataFrame, faces: dict[str, Shards]):
    """The rows of split ``name``, source by source in id order, a shard at a time,
    with their images read from the sources' shards."""
    rows = split_index[split_index["split"] == name]
    for source, group in rows.groupby("source", sort=True):
        group = group.sort_values(list(POSITION_COLUMNS))
        start = 0
        for images in faces[source].take(group, columns=["image"]):
            part = group.iloc[start : start + len(images)]
            start += len(images)
            yield part.assign(image=images["image"].to_numpy())[list(SPLIT_COLUMNS)]
    if rows.empty:
        yield rows.assign(image=pd.Series(dtype=object))[list(SPLIT_COLUMNS)]


def split_shards(split_index: pd.DataFrame, *faces: Shards) -> tuple[Iterator[pd.DataFrame], ...]:
    """``train``, ``val`` and ``test`` as streams of shards: the rows of each split with
    their images, read from ``faces`` (each source's shards, in ``SOURCES`` order) a
    shard at a time as the datasets write them."""
    by_source = dict(zip(SOURCES, faces, strict=True))
    return tuple(_split_parts(name, split_index, by_source) for name in SPLITS)


def _counts(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    table = pd.crosstab(frame["source"], frame["label_name"]).reindex(columns=CLASSES, fill_value=0)
    return {source: {c: int(n) for c, n in row.items()} for source, row in table.iterrows()}


def data_report(
    split_index: pd.DataFrame,
    merge_summary: dict[str, Any],
    split_summary: dict[str, Any],
    *dropped: pd.DataFrame,
) -> tuple[dict[str, Any], plt.Figure]:
    """Counts per split x source x class, drops by source and reason, the merge and
    split summaries, and a bar chart of the counts."""
    splits = {name: split_index[split_index["split"] == name] for name in SPLITS}
    train = splits["train"]
    drops = pd.concat(dropped, ignore_index=True)
    report = {
        "classes": list(CLASSES),
        "sizes": {name: len(frame) for name, frame in splits.items()},
        "counts": {name: _counts(frame) for name, frame in splits.items()},
        "train_pools": _counts(train.assign(source=train["pool"])),
        "dropped": {
            source: {r: int(n) for r, n in group["reason"].value_counts().sort_index().items()}
            for source, group in drops.groupby("source", sort=True)
        },
        **merge_summary,
        **split_summary,
    }
    return report, _counts_figure(report)


def _counts_figure(report: dict[str, Any]) -> plt.Figure:
    fig, axes = plt.subplots(1, len(SPLITS), figsize=(5 * len(SPLITS), 4), sharey=False)
    x = np.arange(len(CLASSES))
    for ax, name in zip(axes, SPLITS):
        bottom = np.zeros(len(CLASSES))
        for source, counts in report["counts"][name].items():
            heights = np.array([counts[c] for c in CLASSES])
            ax.bar(x, heights, bottom=bottom, label=source)
            bottom += heights
        ax.set_title(f"{name} ({report['sizes'][name]:,} images)")
        ax.set_xticks(x, CLASSES, rotation=45, ha="right")
        ax.legend()
    axes[0].set_ylabel("images")
    fig.tight_layout()
    return fig
