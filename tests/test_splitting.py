"""Deduplication priority, stratified validation and determinism on synthetic tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fer_pipeline.data.schema import SPLITS
from fer_pipeline.pipelines.merging.nodes import merged_faces
from fer_pipeline.pipelines.splitting.nodes import split_faces as split_index

SPLITTING = {
    "val_fraction": 0.1,
    "seed": 7,
    "examples": 3,
    "near_duplicate_bits": 0,
    "near_duplicate_correlation": None,
}


def split_faces(faces: pd.DataFrame, splitting: dict):
    """train, val, test and the summary, from the split index."""
    index, summary = split_index(faces, splitting)
    parts = [index[index["split"] == s].reset_index(drop=True) for s in SPLITS]
    return *parts, summary


def _faces(rows: list[tuple[str, str, str, int, str]]) -> pd.DataFrame:
    """Rows of (source, source_id, source_split, label, pixel_hash)."""
    table = pd.DataFrame(
        rows, columns=["source", "source_id", "source_split", "label", "pixel_hash"]
    )
    n = len(table)
    return table.assign(
        shard=0,
        row=np.arange(n),
        label_quality="manual",
        label_name=table["label"].astype(str),
        soft_label=[np.eye(7, dtype=np.float32)[k] for k in table["label"]],
        pool=table["source"],
        origin="o",
        phash=np.arange(n),
        thumbnail=[np.random.default_rng(i).bytes(400) for i in range(n)],  # unrelated
        height=1,
        width=1,
        channels=1,
    )


def test_duplicates_keep_test_copies_then_val_then_train():
    faces = _faces(
        [
            ("rafdb", "a", "train", 1, "h1"),  # twin of a FER+ test image: removed
            ("ferplus", "b", "test", 1, "h1"),
            ("ferplus", "c", "train", 2, "h2"),  # twin of a val image: removed
            ("ferplus", "d", "val", 2, "h2"),
            ("rafdb", "e", "test", 3, "h3"),  # repeats inside a test set: kept
            ("rafdb", "f", "test", 3, "h3"),
            ("rafdb", "g", "train", 4, "h4"),  # train repeats: kept once
            ("rafdb", "h", "train", 4, "h4"),
        ]
    )
    train, val, test, summary = split_faces(faces, {**SPLITTING, "val_fraction": 0.0})
    assert sorted(test["source_id"]) == ["b", "e", "f"]
    assert val["source_id"].tolist() == ["d"]
    assert train["source_id"].tolist() == ["g"]
    assert summary["duplicates"]["rows_removed"] == 3
    assert summary["duplicates"]["test_repeats_kept"] == 1
    assert summary["duplicates"]["groups_across_sources"] == 1


def test_validation_is_stratified_seeded_and_only_from_pools_without_val():
    rows = [("ferplus", f"f{i}", "val" if i < 5 else "train", i % 2, f"f{i}") for i in range(50)]
    rows += [("rafdb", f"r{i:03d}", "train", i % 3, f"r{i}") for i in range(300)]
    faces = _faces(rows)
    train, val, _, _ = split_faces(faces, SPLITTING)
    assert set(val.query("source == 'ferplus'")["source_id"]) == {f"f{i}" for i in range(5)}
    assert val.query("source == 'rafdb'")["label"].value_counts().to_dict() == {0: 10, 1: 10, 2: 10}
    again = split_faces(faces.sample(frac=1, random_state=1), SPLITTING)
    pd.testing.assert_frame_equal(val, again[1])
    other = split_faces(faces, {**SPLITTING, "seed": 8})
    assert set(other[1]["source_id"]) != set(val["source_id"])


def test_neutral_top_up_moves_donor_images_once_to_the_target():
    donor = _faces([("ferplus", f"f{i:02d}", "train", 4, f"f{i}") for i in range(20)]).assign(
        label_name="neutral"
    )
    recipient = _faces(
        [("rafdb", f"r{i}", "train", 3, f"r{i}") for i in range(8)]
        + [("rafdb", f"n{i}", "train", 4, f"n{i}") for i in range(3)]
    ).assign(label_name=["happiness"] * 8 + ["neutral"] * 3)
    top_up = {
        "donor": "ferplus",
        "recipient": "rafdb",
        "label": "neutral",
        "target": "largest_class",
        "seed": 1,
    }
    faces, summary = merged_faces(top_up, donor, recipient, donor.iloc[:0])
    assert summary["neutral_top_up"]["added"] == 5
    assert summary["sources_used"] == ["ferplus", "rafdb"]
    assert (faces.query("pool == 'rafdb'")["label_name"] == "neutral").sum() == 8
    again, _ = merged_faces(top_up, donor, recipient)
    assert again["pool"].tolist() == faces["pool"].tolist()
    off, summary = merged_faces({**top_up, "target": 0}, donor, recipient)
    assert summary["neutral_top_up"]["added"] == 0 and (off["pool"] == off["source"]).all()


def test_near_duplicates_stay_in_one_split():
    """Hashes 2 bits apart are one group at near_duplicate_bits 2, not at 1: a group with
    a test image keeps only that; one with an official val image loses its train
    images; one across train and a sampled val goes to train."""
    rows = [
        ("rafdb", "a", "train", 1, "h1"),  # near copy of a FER+ test image: removed
        ("ferplus", "b", "test", 1, "h2"),
        ("ferplus", "c", "train", 2, "h3"),  # near copy of a FER+ val image: removed
        ("ferplus", "d", "val", 2, "h4"),
    ]
    rows += [("rafdb", f"r{i:03d}", "train", 3, f"r{i}") for i in range(40)]
    faces = _faces(rows)
    base = 0b1111 << 40
    phash = [base, base | 0b11, base << 8, (base << 8) | 0b101]
    phash += [(i * 0x9E3779B97F4A7C15) % 2**62 for i in range(1, 41)]
    phash[-1] = phash[-2] ^ 0b1  # two RAF-DB training images, one near copy of the other
    faces["phash"] = np.array(phash, dtype=np.uint64).view(np.int64)

    def split_of(bits: int, seed: int) -> dict[str, str]:
        index, summary = split_index(
            faces, {**SPLITTING, "near_duplicate_bits": bits, "seed": seed}
        )
        return dict(zip(index["source_id"], index["split"])), summary

    loose, _ = split_of(1, 7)
    assert {"a", "c"} <= set(loose)
    for seed in range(12):  # whichever of the pair the sampling puts in val
        split, summary = split_of(2, seed)
        assert "a" not in split and "c" not in split
        assert split["b"] == "test" and split["d"] == "val"
        assert split["r038"] == split["r039"]
        assert summary["near_duplicates"]["rows_removed_near_test"] == 1
        assert summary["near_duplicates"]["rows_removed_near_val"] == 1
    moved = [
        split_of(2, seed)[1]["near_duplicates"]["rows_moved_val_to_train"] for seed in range(12)
    ]
    assert any(moved)  # the sampling did split the pair at least once, and it was mended

    # With the thumbnails compared, a candidate pair is linked only when they match:
    # a and b are one picture, c and d (and the RAF-DB pair) are not.
    faces.loc[faces["source_id"] == "a", "thumbnail"] = faces.loc[1, "thumbnail"]
    index, summary = split_index(
        faces,
        {**SPLITTING, "near_duplicate_bits": 2, "near_duplicate_correlation": 0.85},
    )
    split = dict(zip(index["source_id"], index["split"]))
    assert "a" not in split and split["c"] == "train" and split["d"] == "val"
    near = summary["near_duplicates"]
    assert (near["candidates"], near["pairs"], near["min_correlation"]) == (3, 1, 0.85)
    assert "thumbnail" not in index.columns
