"""FER+ vote policies and label maps, against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PROJECT

from fer_pipeline.data.errors import InputDataError
from fer_pipeline.data.schema import CLASSES
from fer_pipeline.datasets.ferplus import VOTE_NAMES
from fer_pipeline.pipelines.harmonisation.nodes import labelled_faces

VOTES = VOTE_NAMES
PARAMS = yaml.safe_load((PROJECT / "conf/base/parameters_harmonisation.yml").read_text())


def _faces(votes: list[list[int]] | None = None, labels: list | None = None) -> pd.DataFrame:
    n = len(votes if votes is not None else labels)
    faces = pd.DataFrame(
        {
            "source": "s",
            "source_id": [f"{i}" for i in range(n)],
            "source_split": "train",
            "origin": [f"file.csv line {i + 2}" for i in range(n)],
            "pixel_hash": [f"{i}" for i in range(n)],
            "phash": 0,
            "thumbnail": b"",
            "height": 48,
            "width": 48,
            "channels": 1,
            "shard": 0,
            "row": range(n),
        }
    )
    if votes is not None:
        for j, name in enumerate(VOTES):
            faces[f"vote_{name}"] = [row[j] for row in votes]
    else:
        faces["label_orig"] = labels
    return faces


SKIPPED = pd.DataFrame(columns=["source", "source_id", "source_split", "origin", "reason"])
CASES = [
    #  neu hap sur sad ang dis fea con unk NF
    [6, 1, 1, 1, 1, 0, 0, 0, 0, 0],  # 0: majority neutral (single votes are outliers)
    [4, 4, 1, 1, 0, 0, 0, 0, 0, 0],  # 1: tie 4/4
    [3, 2, 2, 2, 1, 0, 0, 0, 0, 0],  # 2: plurality neutral; 3 of 9 counted, no majority
    [0, 0, 0, 0, 0, 0, 0, 6, 4, 0],  # 3: contempt wins
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],  # 4: every vote an outlier
    [0, 0, 2, 0, 0, 0, 5, 0, 0, 3],  # 5: fear 5 of 10: not > half
    [0, 0, 2, 0, 0, 0, 6, 0, 0, 2],  # 6: fear 6 of 10
]


def _run(policy: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    labels = {**PARAMS["ferplus"]["labels"], "vote_policy": policy}
    return labelled_faces(_faces(CASES), SKIPPED, labels)


def test_majority_policy():
    labelled, dropped = _run("majority")
    assert dict(zip(labelled["source_id"], labelled["label_name"])) == {"0": "neutral", "6": "fear"}
    assert dict(zip(dropped["source_id"], dropped["reason"])) == {
        "1": "no_majority",
        "2": "no_majority",
        "3": "contempt",
        "4": "no_majority",
        "5": "no_majority",
    }
    assert np.stack(labelled["soft_label"]).tolist() == [
        np.eye(7)[CLASSES.index("neutral")].tolist(),
        np.eye(7)[CLASSES.index("fear")].tolist(),
    ]


def test_plurality_policy():
    labelled, dropped = _run("plurality")
    assert dict(zip(labelled["source_id"], labelled["label_name"])) == {
        "0": "neutral",
        "2": "neutral",
        "5": "fear",
        "6": "fear",
    }
    assert dict(zip(dropped["source_id"], dropped["reason"])) == {
        "1": "tie",
        "3": "contempt",
        "4": "tie",
    }


def test_probability_policy_keeps_the_vote_distribution():
    labelled, dropped = _run("probability")
    soft = dict(zip(labelled["source_id"], labelled["soft_label"]))
    assert set(soft) == {"0", "1", "2", "5", "6"}
    assert dict(zip(dropped["source_id"], dropped["reason"])) == {"3": "contempt", "4": "no_votes"}
    for target in soft.values():
        assert target.sum() == pytest.approx(1.0)
    # case 1: neutral 4, happiness 4 -> 0.5 / 0.5; case 5: surprise 2, fear 5 (NF 3 is
    # not a class) -> 2/7, 5/7.
    assert soft["1"][CLASSES.index("neutral")] == pytest.approx(0.5)
    assert soft["1"][CLASSES.index("happiness")] == pytest.approx(0.5)
    assert soft["5"][CLASSES.index("fear")] == pytest.approx(5 / 7)
    assert soft["5"][CLASSES.index("surprise")] == pytest.approx(2 / 7)


def test_label_maps_and_unknown_codes():
    labels = PARAMS["affectnet"]["labels"]
    labelled, dropped = labelled_faces(_faces(labels=[0, 1, 6, 7, 8, 10]), SKIPPED, labels)
    assert labelled["label_name"].tolist() == ["neutral", "happiness", "anger"]
    assert labelled["label"].tolist() == [4, 3, 0]
    assert dropped["reason"].tolist() == ["contempt", "none", "no_face"]
    with pytest.raises(InputDataError, match=r"file\.csv line 3: unknown label 11"):
        labelled_faces(_faces(labels=[0, 11]), SKIPPED, labels)


def test_label_map_must_target_the_classes():
    with pytest.raises(ValueError, match="happyness"):
        labelled_faces(_faces(labels=[1]), SKIPPED, {"label_map": {1: "happyness"}})


def test_skipped_rows_are_counted_as_dropped():
    skipped = pd.DataFrame(
        {
            "source": ["s"],
            "source_id": ["9"],
            "source_split": ["train"],
            "origin": ["x line 11"],
            "reason": ["no_image_name"],
        }
    )
    _, dropped = labelled_faces(_faces(labels=[1]), skipped, PARAMS["rafdb"]["labels"])
    assert dropped["reason"].tolist() == ["no_image_name"]


def test_test_rows_keep_majority_labels_whatever_trains():
    """With vote_policy probability, the official test rows are still labelled (and
    dropped) by test_vote_policy: majority, so both runs score on one test set."""
    faces = pd.concat([_faces(CASES), _faces(CASES).assign(source_split="test")])
    faces["source_id"] = [f"{split}{i}" for split, i in zip(faces["source_split"], range(14))]
    labels = {**PARAMS["ferplus"]["labels"], "vote_policy": "probability"}
    assert labels["test_vote_policy"] == "majority"
    labelled, dropped = labelled_faces(faces, SKIPPED, labels)
    test = labelled[labelled["source_split"] == "test"]
    majority, _ = _run("majority")
    assert test["label_name"].tolist() == majority["label_name"].tolist()  # neutral, fear
    assert len(labelled[labelled["source_split"] == "train"]) == 5  # probability keeps 5
    assert set(dropped.loc[dropped["source_split"] == "test", "reason"]) == {
        "no_majority",
        "contempt",
    }
    labels["test_vote_policy"] = None  # off: the test rows follow vote_policy
    labelled, _ = labelled_faces(faces, SKIPPED, labels)
    assert (labelled["source_split"] == "test").sum() == 5
