"""Map each source's labels, or FER+ votes, onto the seven canonical classes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fer_pipeline.data.errors import InputDataError
from fer_pipeline.data.schema import CLASSES, DROPPED_COLUMNS, LABELLED_COLUMNS, MANUAL
from fer_pipeline.data.shards import Shards

VOTE_PREFIX = "vote_"
VOTE_POLICIES = ("majority", "plurality", "probability")


def _key(value: Any) -> str:
    """A label as a map key: ``7``, ``7.0`` and ``"7"`` are the same label."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        value = int(value)
    return str(value)


def _check_labels(labels: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    label_map = {_key(k): v for k, v in labels["label_map"].items()}
    drop = {_key(k): v for k, v in (labels.get("drop_labels") or {}).items()}
    wrong = sorted({v for v in label_map.values() if v not in CLASSES})
    if wrong:
        raise ValueError(f"label_map targets {wrong} are not among the classes {list(CLASSES)}")
    return label_map, drop


def _vote_winners(votes: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Winning vote index per row, the policy's failure reason (or ``None``), and the
    votes that count (after outlier removal where the policy does it)."""
    if policy not in VOTE_POLICIES:
        raise ValueError(f"vote_policy must be one of {VOTE_POLICIES}, got {policy!r}")
    if policy == "plurality":
        top = votes.max(axis=1, keepdims=True)
        ok = (votes == top).sum(axis=1) == 1
        return votes.argmax(axis=1), np.where(ok, None, "tie"), votes
    # FER+ reference: a single vote is an outlier.
    counted = np.where(votes <= 1, 0, votes)
    if policy == "majority":
        ok = counted.max(axis=1) > 0.5 * counted.sum(axis=1)
        return counted.argmax(axis=1), np.where(ok, None, "no_majority"), counted
    ok = counted.sum(axis=1) > 0
    return counted.argmax(axis=1), np.where(ok, None, "no_votes"), counted


def face_table(faces: Shards) -> pd.DataFrame:
    """Every column of the faces but the image, with where each face is (``shard``,
    ``row``): the slim table the stages up to the split work on."""
    return faces.read([c for c in faces.columns if c != "image"], positions=True)


def labelled_faces(
    faces: pd.DataFrame, skipped: pd.DataFrame, labels: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The faces' table (``face_table``) with a canonical ``label`` (class id),
    ``label_name`` and ``soft_label`` (the target as a distribution over the classes),
    and every dropped row with its
    reason (the rows ingestion skipped included).

    ``labels`` holds ``label_map`` (source label -> class), ``drop_labels`` (source
    label -> drop reason) and, for sources with ``vote_<name>`` columns, ``vote_policy``:
    ``majority``, ``plurality`` or ``probability`` (soft targets), and
    ``test_vote_policy``, the one that labels the official test rows (default: the
    same), so that runs with different policies are scored on the same test set. A
    label found in neither map is an error naming its origin.
    """
    label_map, drop_labels = _check_labels(labels)
    if "label_quality" not in faces:
        faces = faces.assign(label_quality=MANUAL)
    vote_columns = [c for c in faces.columns if c.startswith(VOTE_PREFIX)]
    n = len(faces)
    soft = None
    if vote_columns:
        names = np.array([c.removeprefix(VOTE_PREFIX) for c in vote_columns])
        unmapped = [v for v in names if v not in label_map and v not in drop_labels]
        if unmapped:
            raise InputDataError(
                f"{faces['source'].iloc[0]}: vote column(s) {unmapped} have no label mapping"
            )
        votes = faces[vote_columns].to_numpy(dtype=np.int64)
        policy = labels.get("vote_policy", "majority")
        top, reason, counted = _vote_winners(votes, policy)
        test_policy = labels.get("test_vote_policy") or policy
        if test_policy != policy:
            is_test = (faces["source_split"] == "test").to_numpy()
            test_top, test_reason, _ = _vote_winners(votes, test_policy)
            top = np.where(is_test, test_top, top)
            reason = np.where(is_test, test_reason, reason)
        source_labels = names[top] if n else np.array([], dtype=str)
        if policy == "probability":
            to_class = np.zeros((len(names), len(CLASSES)), dtype=np.float32)
            for i, name in enumerate(names):
                if name in label_map:
                    to_class[i, CLASSES.index(label_map[name])] = 1
            soft = counted @ to_class
    else:
        source_labels = faces["label_orig"].to_numpy(dtype=object) if n else np.array([])
        reason = np.full(n, None, dtype=object)
    keys = [_key(v) for v in source_labels]
    unknown = [i for i, k in enumerate(keys) if k not in label_map and k not in drop_labels]
    if unknown:
        i = unknown[0]
        raise InputDataError(
            f"{faces['origin'].iloc[i]}: unknown label {source_labels[i]!r}; "
            f"known labels: {', '.join(list(label_map) + list(drop_labels))}"
        )
    reason = np.array(
        [r if r is not None else drop_labels.get(k) for r, k in zip(reason, keys)], dtype=object
    )
    keep = np.array([r is None for r in reason], dtype=bool)
    label_names = [label_map[k] for k, kept in zip(keys, keep) if kept]
    label_ids = np.array([CLASSES.index(name) for name in label_names], dtype=np.int64)
    if soft is None:
        soft = np.eye(len(CLASSES), dtype=np.float32)[label_ids]
    else:
        soft = soft[keep] / soft[keep].sum(axis=1, keepdims=True)
    labelled = faces.loc[keep].assign(
        label=label_ids, label_name=label_names, soft_label=list(soft.astype(np.float32))
    )[list(LABELLED_COLUMNS)]
    dropped = faces.loc[~keep, list(DROPPED_COLUMNS[:-1])].assign(reason=reason[~keep])
    return labelled.reset_index(drop=True), pd.concat(
        [skipped[list(DROPPED_COLUMNS)], dropped], ignore_index=True
    )
