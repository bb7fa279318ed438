"""data_processing on the full real FER+ and RAF-DB releases."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from conftest import catalog_of, make_project

from fer_pipeline.data.schema import CLASSES, SPLITS

RAFDB_OFFICIAL = {  # ../shared/data/README.md
    "train": {
        "surprise": 1290,
        "fear": 281,
        "disgust": 717,
        "happiness": 4772,
        "sadness": 1982,
        "anger": 705,
        "neutral": 2524,
    },
    "test": {
        "surprise": 329,
        "fear": 74,
        "disgust": 160,
        "happiness": 1185,
        "sadness": 478,
        "anger": 162,
        "neutral": 680,
    },
}
FERPLUS_SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
FERPLUS_CLASSES = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear"]


@pytest.fixture(scope="module")
def full_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """One data_processing run on all the real data; yields (project, catalog)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    majority = {"ferplus": {"labels": {"vote_policy": "majority"}}}  # what the counts recount
    project = make_project(tmp_path_factory.mktemp("full"), shared_data, parameters=majority)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        bootstrap_project(project)
        with KedroSession.create(project_path=project) as session:
            session.run(pipeline_names=["data_processing"])
        yield project, catalog_of(project)


def _independent_majority_counts(votes_file: Path) -> pd.Series:
    """FER+ majority labels recounted from fer2013new.csv with plain Python."""
    votes = pd.read_csv(votes_file)
    names = votes["Image name"].fillna("").str.strip()
    repeated = set(names[names.duplicated() & (names != "")])
    counts: dict[tuple[str, str], int] = {}
    for row, name in zip(votes.itertuples(index=False), names):
        if not name or name in repeated:
            continue
        cast = {e: getattr(row, e) for e in (*FERPLUS_CLASSES, "contempt", "unknown", "NF")}
        cast = {e: (v if v > 1 else 0) for e, v in cast.items()}  # outliers: single votes
        winner = max(cast, key=cast.get)
        if cast[winner] > sum(cast.values()) / 2 and winner in FERPLUS_CLASSES:
            key = (FERPLUS_SPLITS[row.Usage], winner)
            counts[key] = counts.get(key, 0) + 1
    return pd.Series(counts).sort_index()


def test_ferplus_majority_counts_match_an_independent_recount(full_run, shared_data):
    _, catalog = full_run
    labelled = catalog.load("ferplus.labelled")
    ours = labelled.groupby(["source_split", "label_name"]).size().sort_index()
    expected = _independent_majority_counts(shared_data / "ferplus" / "fer2013new.csv")
    pd.testing.assert_series_equal(ours, expected, check_names=False)


def test_rafdb_label_7_is_neutral_and_the_official_split_is_kept(full_run):
    _, catalog = full_run
    faces = catalog.load("rafdb.faces").read(["source_id", "label_orig"])
    labelled = catalog.load("rafdb.labelled")
    merged = labelled.merge(faces[["source_id", "label_orig"]], on="source_id")
    assert set(merged.loc[merged["label_orig"] == 7, "label_name"]) == {"neutral"}
    assert (merged["label_orig"] == 7).sum() == 2524 + 680
    for split, official in RAFDB_OFFICIAL.items():
        counts = labelled[labelled["source_split"] == split]["label_name"].value_counts()
        assert counts.to_dict() == official
    test = catalog.load("test").read()
    rafdb_test = test[test["source"] == "rafdb"]
    assert len(rafdb_test) == 3068
    assert rafdb_test["label_name"].value_counts().to_dict() == RAFDB_OFFICIAL["test"]


def test_no_image_is_in_two_splits_and_official_tests_are_held_out(full_run):
    _, catalog = full_run
    parts = {name: catalog.load(name).read() for name in SPLITS}
    hashes = {name: set(frame["pixel_hash"]) for name, frame in parts.items()}
    assert not hashes["train"] & hashes["val"]
    assert not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]
    assert set(parts["test"]["source_split"]) == {"test"}
    assert "test" not in set(parts["train"]["source_split"]) | set(parts["val"]["source_split"])
    ferplus = catalog.load("ferplus.labelled")
    private = ferplus[ferplus["source_split"] == "test"]
    assert set(private["source_id"]) == set(parts["test"].query("source == 'ferplus'")["source_id"])
    # FER+ validation is PublicTest; RAF-DB gives a stratified 10% of its pool, less the
    # near copies of training images that join them in train (a few per class).
    val = parts["val"]
    assert set(val.query("pool == 'ferplus'")["source_split"]) == {"val"}
    rafdb_pool = pd.concat([parts["train"], val]).query("pool == 'rafdb'")
    share = (
        val.query("pool == 'rafdb'")["label"].value_counts() / rafdb_pool["label"].value_counts()
    )
    assert share.between(0.08, 0.11).all(), share


def test_model_input_columns_and_types(full_run):
    _, catalog = full_run
    train = catalog.load("train").read()
    for column in ("image", "label", "label_name", "source", "source_id", "source_split"):
        assert column in train.columns
    assert train["label"].between(0, 6).all()
    assert (train["label_name"] == train["label"].map(dict(enumerate(CLASSES)))).all()
    assert isinstance(train["image"].iloc[0], bytes)


def test_rafdb_neutral_augmentation_reaches_its_largest_class(full_run):
    _, catalog = full_run
    faces = catalog.load("faces_all")
    pool = faces.query("pool == 'rafdb' and source_split == 'train'")["label_name"].value_counts()
    assert pool["neutral"] == pool.max() == RAFDB_OFFICIAL["train"]["happiness"]
    moved = faces.query("pool == 'rafdb' and source == 'ferplus'")
    assert len(moved) == 4772 - 2524
    assert set(moved["label_name"]) == {"neutral"} and set(moved["source_split"]) == {"train"}
    assert faces["pixel_hash"].isin(moved["pixel_hash"]).sum() == len(moved)  # once only


def test_data_report(full_run):
    project, catalog = full_run
    report = catalog.load("data_report")
    assert report["sources_used"] == ["ferplus", "rafdb"]
    assert report["sources_empty"] == ["affectnet"]
    assert report["dropped"]["ferplus"]["no_image_name"] == 173
    assert report["dropped"]["ferplus"]["duplicate_image_name"] == 8
    assert report["duplicates"]["rows_removed"] > 1000  # FER2013 repeats many images
    assert report["counts"]["test"]["rafdb"] == {c: RAFDB_OFFICIAL["test"][c] for c in CLASSES}
    assert sum(report["sizes"].values()) == sum(len(catalog.load(s)) for s in SPLITS)
    png = sorted((project / "data/08_reporting/data_report.png").glob("*/data_report.png"))
    assert png and png[-1].read_bytes()[:4] == b"\x89PNG"


def _latest_versions(project: Path, name: str) -> list[Path]:
    """The shard folders of each saved version of split ``name``, oldest first."""
    return sorted((project / "data/05_model_input" / name).glob(f"*/{name}"))


def _digest(folder: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())]


def test_the_same_seed_gives_byte_identical_splits(full_run, kedro_run):
    project, _ = full_run
    kedro_run(project, "merging", "splitting")
    for name in SPLITS:
        first, second = _latest_versions(project, name)[-2:]
        assert first.parent.name != second.parent.name
        assert _digest(first) == _digest(second), name
