"""benchmarks/scale_data.py, run as a user would: a small synthetic AffectNet release in
the official layout, its photos and boxes, and its planted duplicates."""

from __future__ import annotations

import gzip
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import simplejpeg
from conftest import PROJECT, SHARED_DATA

from fer_pipeline.datasets.affectnet import OFFICIAL_COLUMNS

sys.path.insert(0, str(PROJECT / "benchmarks"))
import scale_data  # noqa: E402

SCRIPT = PROJECT / "benchmarks" / "scale_data.py"
COLUMNS = list(OFFICIAL_COLUMNS)
ARGS = ["--faces", "300", "--auto", "50", "--exact-duplicates", "5", "--near-duplicates", "6"]
FOLDERS = {
    "training.csv": "Manually_Annotated_Images",
    "validation.csv": "Manually_Annotated_Images",
    "automatically_annotated.csv": "Automatically_Annotated_Images",
}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    needed = ("ferplus/fer2013.csv.gz", "ferplus/fer2013new.csv", "rafdb/basic/Image/aligned.zip")
    if not all((SHARED_DATA / path).is_file() for path in needed):
        pytest.skip(f"the real data is not at {SHARED_DATA}")
    out = tmp_path_factory.mktemp("scale") / "affectnet"
    result = run(*ARGS, "--workers", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "photos/s" in result.stdout
    return out


@pytest.fixture(scope="module")
def tables(release) -> dict[str, pd.DataFrame]:
    return {
        name: pd.read_csv(release / name, dtype={"subDirectory_filePath": str}) for name in FOLDERS
    }


def _crop(release: Path, path: str, row: pd.Series) -> np.ndarray:
    """The face box of ``row`` in the photo at ``path``, grey, at 48 px."""
    photo = cv2.imread(str(release / "Manually_Annotated_Images" / path))
    x, y, w, h = (int(row[c]) for c in ("face_x", "face_y", "face_width", "face_height"))
    face = cv2.cvtColor(photo[y : y + h, x : x + w], cv2.COLOR_BGR2GRAY)
    return cv2.resize(face, (48, 48), interpolation=cv2.INTER_AREA)


def _real_faces(ids: list[tuple[str, str]]) -> dict[tuple[str, str], np.ndarray]:
    """FER2013 and RAF-DB faces by (source, id), grey, at 48 px."""
    faces = {}
    fer = {int(i) + 1: i for source, i in ids if source == "ferplus"}  # line 0: the header
    with gzip.open(SHARED_DATA / "ferplus/fer2013.csv.gz", "rt") as lines:
        for number, line in enumerate(lines):
            if number in fer:
                pixels = np.array(line.split(",")[1].split(), dtype=np.uint8)
                faces["ferplus", fer[number]] = pixels.reshape(48, 48)
            if number >= max(fer, default=0):
                break
    with zipfile.ZipFile(SHARED_DATA / "rafdb/basic/Image/aligned.zip") as archive:
        for source, i in ids:
            if source == "rafdb":
                data = np.frombuffer(archive.read(f"aligned/{i}_aligned.jpg"), np.uint8)
                face = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
                faces[source, i] = cv2.resize(face, (48, 48), interpolation=cv2.INTER_AREA)
    return faces


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def test_the_csvs_have_the_official_columns_rows_and_codes(release, tables):
    assert all(list(table.columns) == COLUMNS for table in tables.values())
    training, validation = tables["training.csv"], tables["validation.csv"]
    assert len(training) + len(validation) == 300 and len(validation) == 11
    assert len(tables["automatically_annotated.csv"]) == 50
    assert sorted(validation["expression"]) == list(range(11))  # one per code
    assert set(training["expression"]) == set(range(11))
    assert training["expression"].value_counts().idxmax() == 1  # happy, as in AffectNet
    everything = pd.concat(tables.values())
    assert everything["subDirectory_filePath"].is_unique
    assert everything["subDirectory_filePath"].str.fullmatch(r"\d+/[0-9a-f]{56}\.jpg").all()
    for row in everything.itertuples():
        points = np.array(row.facial_landmarks.split(";"), dtype=float).reshape(68, 2)
        assert (points >= (row.face_x, row.face_y)).all()
        assert (points <= (row.face_x + row.face_width, row.face_y + row.face_height)).all()
        if row.expression >= 8:
            assert row.valence == row.arousal == -2
        else:
            assert -1 <= row.valence <= 1 and -1 <= row.arousal <= 1
    readme = (release / "README.txt").read_text()
    assert "synthetic" in readme.lower() and "research" in readme and "--faces 300" in readme


def test_every_photo_is_a_jpeg_of_a_realistic_size_holding_its_box(release, tables):
    for name, table in tables.items():
        for row in table.itertuples():
            data = (release / FOLDERS[name] / row.subDirectory_filePath).read_bytes()
            assert data[:3] == b"\xff\xd8\xff"
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            assert 300 <= width <= 700 and 300 <= height <= 700
            assert 110 <= row.face_width <= 300 and 110 <= row.face_height <= 300
            assert 0 <= row.face_x <= width - row.face_width
            assert 0 <= row.face_y <= height - row.face_height
            assert 5_000 < len(data) < 200_000


def test_planted_duplicates_are_listed_and_are_copies(release, tables):
    planted = pd.read_csv(release / "planted.csv", dtype=str)
    assert list(planted.columns) == ["kind", "scope", "a_source", "a_id", "b_source", "b_id"]
    assert (planted["kind"] == "exact").sum() == 5 and (planted["kind"] == "near").sum() == 6
    near = planted[planted["kind"] == "near"]
    assert (near["scope"] == "within").sum() == 3 and (near["scope"] == "across").sum() == 3
    manual = pd.concat([tables["training.csv"], tables["validation.csv"]], keys=["t", "v"])
    rows = manual.reset_index(level=0).set_index("subDirectory_filePath")
    assert set(rows.loc[planted["b_id"], "level_0"]) == {"t", "v"}  # in both files
    images = release / "Manually_Annotated_Images"
    real = _real_faces([(p.a_source, p.a_id) for p in planted.itertuples()])
    for pair in planted.itertuples():
        copy = rows.loc[pair.b_id]
        assert pair.b_source == "affectnet"
        if pair.scope == "within":
            assert pair.a_source == "affectnet"
            original = rows.loc[pair.a_id]
            same = (images / pair.a_id).read_bytes() == (images / pair.b_id).read_bytes()
            assert same == (pair.kind == "exact")
            box = ["face_x", "face_y", "face_width", "face_height"]
            assert (original[box] == copy[box]).all() == (pair.kind == "exact")
            assert original.expression == copy.expression
            a = _crop(release, pair.a_id, original)
        else:
            assert pair.a_source in ("ferplus", "rafdb") and pair.kind == "near"
            a = real[pair.a_source, pair.a_id]
        b = _crop(release, pair.b_id, copy)
        assert _similarity(a, b) > 0.6, pair


def test_it_refuses_a_non_empty_folder_and_a_full_disk(release, tmp_path):
    with pytest.raises(SystemExit, match="not empty"):
        scale_data.main(["--faces", "300", "--out", str(release)])
    with pytest.raises(SystemExit, match="GB free"):
        scale_data.main(["--faces", str(10**9), "--out", str(tmp_path / "huge")])
    assert not (tmp_path / "huge").exists()


def test_the_same_seed_makes_the_same_release(release, tmp_path):
    again = tmp_path / "again"
    result = run(*ARGS, "--workers", "1", "--out", str(again))
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted(p.relative_to(release) for p in release.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for file in files:
        if file.name != "README.txt":  # it names the command line, --workers included
            assert (release / file).read_bytes() == (again / file).read_bytes(), file
