"""Merge the sources and move donor images into a recipient's training pool."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from fer_pipeline.data.schema import SOURCES

logger = logging.getLogger(__name__)


def _top_up_pool(faces: pd.DataFrame, neutral_top_up: dict[str, Any]) -> dict[str, Any]:
    """Move seeded ``donor`` training images of ``label`` into the ``recipient`` pool
    until the recipient's training count of that label reaches ``target`` (an int, or
    ``largest_class``: the recipient's largest training class; 0 disables). Donor images
    with a pixel twin anywhere are not moved. Changes ``faces["pool"]`` in place."""
    donor, recipient, label = (
        neutral_top_up["donor"],
        neutral_top_up["recipient"],
        neutral_top_up["label"],
    )
    target = neutral_top_up["target"]
    summary = {"donor": donor, "recipient": recipient, "label": label, "added": 0}
    pool_train = faces[(faces["pool"] == recipient) & (faces["source_split"] == "train")]
    if target == 0 or pool_train.empty or not (faces["source"] == donor).any():
        return {**summary, "target": 0}
    counts = pool_train["label_name"].value_counts()
    target = int(counts.max()) if target == "largest_class" else int(target)
    before = int(counts.get(label, 0))
    candidates = faces[
        (faces["source"] == donor)
        & (faces["source_split"] == "train")
        & (faces["label_name"] == label)
        & ~faces["pixel_hash"].duplicated(keep=False)
    ].sort_values("source_id")
    wanted = min(max(target - before, 0), len(candidates))
    rng = np.random.default_rng(neutral_top_up["seed"])
    chosen = candidates.index[np.sort(rng.choice(len(candidates), size=wanted, replace=False))]
    faces.loc[chosen, "pool"] = recipient
    logger.info(
        "Moved %d %s %s images into the %s pool (%d -> %d)",
        wanted,
        donor,
        label,
        recipient,
        before,
        before + wanted,
    )
    return {**summary, "target": target, "before": before, "added": wanted}


def merged_faces(
    neutral_top_up: dict[str, Any], *labelled: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """All sources' labelled faces in one table with a ``pool`` column (the source whose
    training pool a row belongs to), and a summary of the sources used and the pool
    top-up."""
    used = [frame for frame in labelled if len(frame)]
    if not used:
        raise ValueError("No source has any labelled faces; check the raw-data paths")
    faces = pd.concat(used, ignore_index=True)
    faces["pool"] = faces["source"]
    names = [str(frame["source"].iloc[0]) for frame in used]
    summary = {
        "sources_used": names,
        "sources_empty": [s for s in SOURCES if s not in names],
        "neutral_top_up": _top_up_pool(faces, neutral_top_up),
    }
    logger.info(
        "Sources used: %s; empty or absent: %s",
        ", ".join(names),
        ", ".join(summary["sources_empty"]) or "none",
    )
    return faces, summary
