"""Bad raw input: clear errors naming the file and row, earlier outputs intact."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_project, raises_in_chain

from fer_pipeline.data.errors import InputDataError, SourceNotFoundError


def _rewrite_zip(archive: Path, replace: dict[str, bytes | None]) -> None:
    """Rewrite ``archive`` with members replaced (``None`` removes a member)."""
    with zipfile.ZipFile(archive) as src:
        members = {name: src.read(name) for name in src.namelist()}
    with zipfile.ZipFile(archive, "w") as dst:
        for name, data in members.items():
            new = replace.get(name, data)
            if new is not None:
                dst.writestr(name, new)


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "data").rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def project(small_raw: Path, tmp_path: Path) -> Path:
    return make_project(tmp_path / "project", small_raw)


def test_corrupt_image_names_file_and_line(project, small_raw, kedro_run):
    archive = small_raw / "rafdb/basic/Image/aligned.zip"
    _rewrite_zip(archive, {"aligned/train_00003_aligned.jpg": b"\xff\xd8 not a jpeg"})
    with raises_in_chain(InputDataError) as error:
        kedro_run(project, "ingestion")
    message = str(error.error)
    assert "aligned.zip:train_00003_aligned.jpg" in message
    assert "list_patition_label.txt line 3" in message and "corrupt image" in message


def test_truncated_jpeg_is_corrupt(project, small_raw, kedro_run):
    archive = small_raw / "rafdb/basic/Image/aligned.zip"
    with zipfile.ZipFile(archive) as src:
        data = src.read("aligned/test_0005_aligned.jpg")
    _rewrite_zip(archive, {"aligned/test_0005_aligned.jpg": data[: len(data) // 2]})
    with raises_in_chain(InputDataError, r"test_0005_aligned\.jpg.*truncated JPEG"):
        kedro_run(project, "ingestion")


def test_jpeg_with_corrupt_data_is_refused(project, small_raw, kedro_run):
    """Scan data overwritten, end-of-image marker intact: OpenCV and Pillow would decode
    noise; strict decoding names the file and line."""
    archive = small_raw / "rafdb/basic/Image/aligned.zip"
    with zipfile.ZipFile(archive) as src:
        data = bytearray(src.read("aligned/train_00002_aligned.jpg"))
    start = data.find(b"\xff\xda") + 200
    data[start : start + 600] = bytes(range(1, 201)) * 3
    assert data.endswith(b"\xff\xd9")
    _rewrite_zip(archive, {"aligned/train_00002_aligned.jpg": bytes(data)})
    with raises_in_chain(InputDataError, r"train_00002_aligned\.jpg.*corrupt JPEG") as error:
        kedro_run(project, "ingestion")
    assert "list_patition_label.txt line 2" in str(error.error)


def test_truncated_csv_names_file_and_line(project, small_raw, kedro_run):
    csv = small_raw / "ferplus/fer2013.csv"
    text = csv.read_text()
    csv.write_text(text[: len(text) - 3000])  # cut inside the last row's pixels
    with raises_in_chain(InputDataError) as error:
        kedro_run(project, "ingestion")
    message = str(error.error)
    assert "fer2013.csv" in message and "line 301" in message


def test_truncated_vote_file_is_reported(project, small_raw, kedro_run):
    votes = small_raw / "ferplus/fer2013new.csv"
    votes.write_text("".join(votes.read_text().splitlines(keepends=True)[:-10]))
    with raises_in_chain(InputDataError, r"fer2013new\.csv has 290 data rows.*300"):
        kedro_run(project, "ingestion")


def test_unknown_label_code_names_file_and_line(project, small_raw, kedro_run):
    labels = small_raw / "rafdb/basic/EmoLabel/list_patition_label.txt"
    lines = labels.read_text().splitlines()
    lines[4] = lines[4].split()[0] + " 9"
    labels.write_text("\n".join(lines) + "\n")
    with raises_in_chain(InputDataError) as error:
        kedro_run(project, "ingestion", "harmonisation")
    message = str(error.error)
    assert "list_patition_label.txt line 5" in message and "unknown label 9" in message


def test_missing_vote_column_is_named(project, small_raw, kedro_run):
    votes = small_raw / "ferplus/fer2013new.csv"
    pd.read_csv(votes).drop(columns=["fear"]).to_csv(votes, index=False)
    with raises_in_chain(InputDataError, r"fer2013new\.csv: missing vote column\(s\) fear"):
        kedro_run(project, "ingestion")


def test_bad_vote_value_names_line_and_column(project, small_raw, kedro_run):
    votes = small_raw / "ferplus/fer2013new.csv"
    table = pd.read_csv(votes)
    table["anger"] = table["anger"].astype(object)
    table.loc[6, "anger"] = "x"
    table.to_csv(votes, index=False)
    with raises_in_chain(InputDataError, r"fer2013new\.csv: line 8, column 'anger'"):
        kedro_run(project, "ingestion")


def test_missing_image_names_the_label_line(project, small_raw, kedro_run):
    archive = small_raw / "rafdb/basic/Image/aligned.zip"
    _rewrite_zip(archive, {"aligned/train_00007_aligned.jpg": None})
    with raises_in_chain(InputDataError, r"line 7: its image train_00007_aligned\.jpg"):
        kedro_run(project, "ingestion")


def test_missing_source_names_the_expected_files(project, small_raw, kedro_run):
    (small_raw / "ferplus/fer2013new.csv").unlink()
    with raises_in_chain(SourceNotFoundError, r"ferplus: not found at .*fer2013new\.csv"):
        kedro_run(project, "ingestion")


def test_a_failed_run_leaves_earlier_outputs_intact(project, small_raw, kedro_run):
    kedro_run(project, "data_processing")
    before = _snapshot(project)
    assert any(name.startswith("data/05_model_input/train/") for name in before)
    labels = small_raw / "rafdb/basic/EmoLabel/list_patition_label.txt"
    labels.write_text(labels.read_text().replace(" 4\n", " 12\n", 1))
    with pytest.raises(InputDataError):
        kedro_run(project, "data_processing")
    after = _snapshot(project)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [k for k in after if k not in before and "05_model_input" in k]
