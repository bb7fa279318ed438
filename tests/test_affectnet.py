"""AffectNet on fixtures built in its official layout and its Hugging Face 8-class form
(no real AffectNet is reachable), with real RAF-DB faces as the images."""

from __future__ import annotations

import zipfile
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from conftest import catalog_of, make_project, raises_in_chain

from fer_pipeline.data.errors import InputDataError, SourceNotFoundError
from fer_pipeline.data.images import decode_image, encode_jpeg
from fer_pipeline.datasets import AffectNetRelease, HuggingFaceFaces
from fer_pipeline.datasets.affectnet import OFFICIAL_COLUMNS
from fer_pipeline.pipelines.ingestion.config import IngestionConfig
from fer_pipeline.pipelines.ingestion.nodes import face_shard

HF_NAMES = ["anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
BOX = (37, 21, 100, 100)  # face_x, face_y, face_width, face_height


def _faces(shared: Path, count: int) -> list[bytes]:
    """Real faces that are not in the ``small_raw`` subset."""
    with zipfile.ZipFile(shared / "rafdb/basic/Image/aligned.zip") as archive:
        names = sorted(n for n in archive.namelist() if n.startswith("aligned/train_"))
        return [archive.read(n) for n in names[1000 : 1000 + count]]


def write_affectnet_release(root: Path, faces: list[bytes], codes: dict[str, list[int]]) -> Path:
    """``training.csv`` / ``validation.csv`` and ``Manually_Annotated_Images/`` with each
    face pasted into a larger canvas at ``BOX``."""
    x, y, w, h = BOX
    k = 0
    for csv, expressions in codes.items():
        rows = []
        for code in expressions:
            canvas = np.full((180, 160, 3), 90, dtype=np.uint8)
            canvas[y : y + h, x : x + w] = decode_image(faces[k % len(faces)])
            relative = f"{k % 3 + 1}/{k:04d}_face.jpg"
            (root / "Manually_Annotated_Images" / relative).parent.mkdir(
                parents=True, exist_ok=True
            )
            (root / "Manually_Annotated_Images" / relative).write_bytes(encode_jpeg(canvas, 98))
            landmarks = ";".join(str(v) for v in range(136))
            rows.append((relative, x, y, w, h, landmarks, code, 0.1, -0.2))
            k += 1
        pd.DataFrame(rows, columns=list(OFFICIAL_COLUMNS)).to_csv(root / csv, index=False)
    return root


def write_hf_parquet(root: Path, splits: dict[str, list[tuple[bytes, str]]]) -> Path:
    """A Hugging Face mirror: ``data/<split>-00000-of-00001.parquet`` with an ``image``
    column and an 8-class ``label`` class-label column."""
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=HF_NAMES)}
    )
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        table = datasets.Dataset.from_dict(
            {
                "image": [{"bytes": data, "path": None} for data, _ in rows],
                "label": [HF_NAMES.index(name) for _, name in rows],
            },
            features=features,
        )
        table.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return root


def test_official_layout_is_cropped_to_the_face_box(shared_data, tmp_path):
    faces = _faces(shared_data, 4)
    root = write_affectnet_release(
        tmp_path / "affectnet", faces, {"training.csv": [0, 1, 7], "validation.csv": [6]}
    )
    release = AffectNetRelease(str(root)).load()
    table = release.table
    assert table["source_split"].tolist() == ["train", "train", "train", "test"]
    assert table["label_orig"].tolist() == [0, 1, 7, 6]
    assert table["origin"].iloc[1] == "training.csv line 3"
    assert set(table["label_quality"]) == {"manual"}
    crop = next(release.reader.images(table))
    assert crop.shape == (100, 100, 3)
    assert np.abs(crop.astype(int) - decode_image(faces[0])).mean() < 4
    # ingestion stores a face larger than max_side downscaled, keeping its aspect
    shard = face_shard((release.reader, table, IngestionConfig(max_side=64, jpeg_quality=90)))
    assert shard[["height", "width", "channels"]].iloc[0].tolist() == [64, 64, 3]
    assert decode_image(shard["image"].iloc[0]).shape == (64, 64, 3)
    assert not {"file", "face_x"} & set(shard.columns)


def test_automatically_annotated_rows_are_opt_in_training_rows(shared_data, tmp_path):
    root = write_affectnet_release(
        tmp_path / "affectnet", _faces(shared_data, 3), {"training.csv": [1], "validation.csv": [2]}
    )
    (root / "training.csv").rename(root / "automatically_annotated.csv")
    (root / "Manually_Annotated_Images").rename(root / "Automatically_Annotated_Images")
    write_affectnet_release(
        root, _faces(shared_data, 2), {"training.csv": [3], "validation.csv": [4]}
    )
    assert len(AffectNetRelease(str(root)).load().table) == 2  # manual only by default
    release = AffectNetRelease(str(root), automatic=True).load()
    table = release.table
    assert table["label_quality"].tolist() == ["manual", "manual", "automatic"]
    assert table["source_split"].tolist() == ["train", "test", "train"]
    assert table["source_id"].iloc[2] == "automatic/1/0000_face.jpg"
    assert table["origin"].iloc[2] == "automatically_annotated.csv line 2"
    assert len(list(release.reader.images(table))) == 3
    (root / "automatically_annotated.csv").unlink()
    with raises_in_chain(SourceNotFoundError, "automatically_annotated.csv"):
        AffectNetRelease(str(root), automatic=True, optional=False).load()


def test_official_layout_errors(shared_data, tmp_path):
    root = write_affectnet_release(
        tmp_path / "a", _faces(shared_data, 2), {"training.csv": [0, 1], "validation.csv": [2]}
    )
    (root / "Manually_Annotated_Images/2/0001_face.jpg").write_bytes(b"garbage")
    release = AffectNetRelease(str(root)).load()
    with raises_in_chain(InputDataError, r"training\.csv line 3: image .*0001_face\.jpg"):
        list(release.reader.images(release.table))
    (root / "Manually_Annotated_Images/2/0001_face.jpg").unlink()
    with raises_in_chain(InputDataError, r"training\.csv line 3: .*No such file"):
        list(release.reader.images(release.table))
    with raises_in_chain(SourceNotFoundError, "training.csv, validation.csv"):
        AffectNetRelease(str(tmp_path / "absent"), optional=False).load()
    assert AffectNetRelease(str(tmp_path / "absent")).load().table.empty  # optional by default


def test_hugging_face_form_through_the_pipeline(shared_data, small_raw, tmp_path, kedro_run):
    faces = _faces(shared_data, 6)
    with zipfile.ZipFile(small_raw / "rafdb/basic/Image/aligned.zip") as archive:
        rafdb_test_face = archive.read("aligned/test_0001_aligned.jpg")
    hf = write_hf_parquet(
        tmp_path / "affectnet_hf",
        {
            "train": [
                (faces[0], "happy"),
                (faces[1], "sad"),
                (faces[2], "contempt"),
                (rafdb_test_face, "neutral"),
            ],  # a twin of a RAF-DB test image
            "validation": [(faces[3], "anger"), (faces[4], "surprise")],
        },
    )
    catalog = {
        "affectnet.release": {
            "type": "fer_pipeline.datasets.HuggingFaceFaces",
            "path": str(hf),
            "source": "affectnet",
            "splits": {"train": "train", "validation": "test"},
        }
    }
    project = make_project(tmp_path / "project", small_raw, catalog=catalog)
    kedro_run(project, "data_processing")
    data = catalog_of(project)
    labelled = data.load("affectnet.labelled")
    assert labelled["label_name"].tolist() == [
        "happiness",
        "sadness",
        "neutral",
        "anger",
        "surprise",
    ]
    assert data.load("affectnet.dropped")["reason"].tolist() == ["contempt"]
    report = data.load("data_report")
    assert report["sources_used"] == ["ferplus", "rafdb", "affectnet"]
    assert report["duplicates"]["groups_across_sources"] == 1
    train, val, test = (data.load(s).read() for s in ("train", "val", "test"))
    assert sorted(test.query("source == 'affectnet'")["source_id"]) == [
        "validation/0",
        "validation/1",
    ]
    kept = pd.concat([train, val]).query("source == 'affectnet'")["source_id"]
    assert sorted(kept) == ["train/0", "train/1"]  # the twin went, the test copy stayed


def test_hugging_face_errors(tmp_path):
    hf = write_hf_parquet(
        tmp_path / "hf", {"train": [(encode_jpeg(np.zeros((8, 8, 3), np.uint8)), "fear")]}
    )
    with raises_in_chain(InputDataError, r"split\(s\) validation not found"):
        HuggingFaceFaces(str(hf), source="affectnet", splits={"validation": "test"}).load()
    with raises_in_chain(InputDataError, r"missing column\(s\) expression"):
        HuggingFaceFaces(
            str(hf), source="a", splits={"train": "train"}, label_column="expression"
        ).load()
    table = HuggingFaceFaces(str(hf), source="a", splits={"train": "train"}).load().table
    assert table["label_orig"].tolist() == ["fear"] and table["source_split"].tolist() == ["train"]
    with raises_in_chain(SourceNotFoundError, "Hugging Face dataset"):
        HuggingFaceFaces(str(tmp_path / "no/such/dir"), source="a", splits={}).load()
