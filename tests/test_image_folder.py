"""A labelled folder of images (``path/<class>/<images>``, optionally under split
folders) as a source, with real RAF-DB faces as the images."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import catalog_of, make_project, raises_in_chain

from fer_pipeline.data.errors import InputDataError, SourceNotFoundError
from fer_pipeline.data.schema import RELEASE_COLUMNS, SPLITS
from fer_pipeline.datasets import ImageFolderFaces
from fer_pipeline.pipelines.ingestion.config import IngestionConfig
from fer_pipeline.pipelines.ingestion.nodes import face_shard

KDEF_MAP = {
    "afraid": "fear",
    "angry": "anger",
    "disgusted": "disgust",
    "happy": "happiness",
    "neutral": "neutral",
    "sad": "sadness",
    "surprised": "surprise",
}


def _faces(shared: Path, count: int) -> list[bytes]:
    """Real faces that are not in the ``small_raw`` subset."""
    with zipfile.ZipFile(shared / "rafdb/basic/Image/aligned.zip") as archive:
        names = sorted(n for n in archive.namelist() if n.startswith("aligned/train_"))
        return [archive.read(n) for n in names[2000 : 2000 + count]]


def write_folders(root: Path, faces: list[bytes], files: list[str]) -> Path:
    """Each of ``files`` (paths relative to ``root``) holding the next face."""
    for k, relative in enumerate(files):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(faces[k % len(faces)])
    return root


def test_class_folders_are_the_labels(shared_data, tmp_path):
    faces = _faces(shared_data, 3)
    root = write_folders(
        tmp_path / "kdef",
        faces,
        ["happy/b.jpg", "happy/a.JPG", "sad/session1/x.png", "angry/c.jpeg"],
    )
    for litter in ("happy/.DS_Store", "happy/._a.jpg", "sad/Thumbs.db", "sad/notes.txt"):
        (root / litter).write_bytes(b"not an image")
    (root / "afraid").mkdir()  # an empty class folder is fine
    (root / "README.md").write_text("KDEF subset")  # other files beside the classes too
    release = ImageFolderFaces(str(root), source="kdef").load()
    table = release.table
    assert list(table.columns) == [*RELEASE_COLUMNS, "label_orig", "file"]
    assert table["source_id"].tolist() == ["angry/c.jpeg", "happy/a.JPG", "happy/b.jpg"] + [
        "sad/session1/x.png"
    ]
    assert table["label_orig"].tolist() == ["angry", "happy", "happy", "sad"]
    assert set(table["source_split"]) == {"train"} and set(table["source"]) == {"kdef"}
    assert table["origin"].iloc[1] == str(root / "happy/a.JPG")
    assert table["skip_reason"].isna().all()
    assert list(release.reader.images(table)) == [faces[0], faces[1], faces[0], faces[2]]
    only_png = ImageFolderFaces(str(root), source="kdef", extensions=[".PNG"]).load().table
    assert only_png["source_id"].tolist() == ["sad/session1/x.png"]


def test_split_folders(shared_data, tmp_path):
    root = write_folders(
        tmp_path / "faces",
        _faces(shared_data, 2),
        ["Training/happy/1.jpg", "Training/sad/2.jpg", "PublicTest/sad/3.jpg", "extra/sad/4.jpg"],
    )
    splits = {"Training": "train", "PublicTest": "test"}
    table = ImageFolderFaces(str(root), source="x", splits=splits).load().table
    assert table["source_id"].tolist() == ["PublicTest/sad/3.jpg"] + [
        "Training/happy/1.jpg",
        "Training/sad/2.jpg",
    ]  # extra/ is not a configured split
    assert table["source_split"].tolist() == ["test", "train", "train"]
    assert table["label_orig"].tolist() == ["sad", "happy", "sad"]
    with pytest.raises(ValueError, match="train, val, test"):
        ImageFolderFaces(str(root), source="x", splits={"Training": "training"})
    with raises_in_chain(SourceNotFoundError, "PrivateTest/<class folder>"):
        ImageFolderFaces(str(root), source="x", splits={**splits, "PrivateTest": "test"}).load()


def test_errors(shared_data, tmp_path):
    with raises_in_chain(SourceNotFoundError, r"kdef: not found at .*absent.*<class folder>"):
        ImageFolderFaces(str(tmp_path / "absent"), source="kdef").load()
    assert (
        ImageFolderFaces(str(tmp_path / "absent"), source="kdef", optional=True).load().table.empty
    )
    empty = tmp_path / "empty"
    (empty / "happy").mkdir(parents=True)
    (empty / "happy/.DS_Store").write_bytes(b"")
    (empty / "Thumbs.db").write_bytes(b"")
    with raises_in_chain(SourceNotFoundError, r"at least one image in .*empty/<class folder>"):
        ImageFolderFaces(str(empty), source="kdef").load()
    (empty / "loose.jpg").write_bytes(b"")
    with raises_in_chain(InputDataError, r"loose\.jpg: an image outside any class folder"):
        ImageFolderFaces(str(empty), source="kdef").load()

    root = write_folders(
        tmp_path / "kdef", _faces(shared_data, 2), ["happy/ok.jpg", "sad/broken.jpg"]
    )
    (root / "sad/broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    release = ImageFolderFaces(str(root), source="kdef").load()
    task = (release.reader, release.table, IngestionConfig())
    with raises_in_chain(InputDataError, r"sad/broken\.jpg: corrupt image"):
        face_shard(task)
    (root / "sad/broken.jpg").unlink()
    with raises_in_chain(InputDataError, r"sad/broken\.jpg: cannot read the image"):
        face_shard(task)


def test_through_the_pipeline_in_the_affectnet_slot(shared_data, tmp_path, kedro_run):
    files = [f"train/{name}/{k}.jpg" for name in KDEF_MAP for k in range(2)]
    files += ["train/contempt/0.jpg", "test/happy/0.jpg", "test/angry/0.jpg"]
    root = write_folders(tmp_path / "kdef", _faces(shared_data, len(files)), files)
    catalog = {  # FER+ and RAF-DB absent: the run is about this source alone
        **{
            f"{other}.release": {"type": release, "path": str(tmp_path / other), "optional": True}
            for other, release in (
                ("ferplus", "fer_pipeline.datasets.FerPlusRelease"),
                ("rafdb", "fer_pipeline.datasets.RafDbRelease"),
            )
        },
        "affectnet.release": {
            "type": "fer_pipeline.datasets.ImageFolderFaces",
            "path": str(root),
            "source": "affectnet",
            "splits": {"train": "train", "test": "test"},
        },
    }
    labels = {"label_map": KDEF_MAP, "drop_labels": {"contempt": "contempt"}}
    project = make_project(
        tmp_path / "project",
        shared_data,
        catalog=catalog,
        parameters={"affectnet": {"labels": labels}},
    )
    kedro_run(project, "data_processing")
    data = catalog_of(project)
    labelled = data.load("affectnet.labelled")
    kept = [f for f in files if "contempt" not in f]
    assert sorted(labelled["source_id"]) == sorted(kept)
    names = dict(zip(labelled["source_id"], labelled["label_name"], strict=True))
    assert names == {f: KDEF_MAP[f.split("/")[1]] for f in kept}
    assert data.load("affectnet.dropped")["reason"].tolist() == ["contempt"]
    train, val, test = (data.load(s).read().query("source == 'affectnet'") for s in SPLITS)
    assert sorted(test["source_id"]) == ["test/angry/0.jpg", "test/happy/0.jpg"]
    assert sorted(pd.concat([train, val])["source_id"]) == sorted(
        f for f in kept if f.startswith("train/")
    )
    assert set(test["label_name"]) == {"anger", "happiness"}
