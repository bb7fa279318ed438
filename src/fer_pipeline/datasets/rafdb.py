"""RAF-DB basic in its official release layout."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from fer_pipeline.data.errors import InputDataError
from fer_pipeline.datasets.base import SourceDataset

LABEL_FILE = "EmoLabel/list_patition_label.txt"
ALIGNED_DIR = "Image/aligned"
ALIGNED_ZIP = "Image/aligned.zip"
NAME_SPLITS = {"train": "train", "test": "test"}


def _aligned_name(name: str) -> str:
    """``train_00001.jpg`` -> ``train_00001_aligned.jpg``."""
    return f"{Path(name).stem}_aligned.jpg"


class RafDbRelease(SourceDataset):
    """RAF-DB basic: ``path`` is the ``basic/`` folder holding ``EmoLabel/`` and the
    aligned images as ``Image/aligned/`` or ``Image/aligned.zip``.

    The official split comes from the file name prefix (``train_`` / ``test_``).
    Label column: ``label_orig`` (the release's code, 1-7). The images are stored as
    released.
    """

    source = "rafdb"
    locators = ("member",)

    def _missing(self) -> list[str]:
        missing = []
        if not (self._path / LABEL_FILE).is_file():
            missing.append(LABEL_FILE)
        if not (self._path / ALIGNED_DIR).is_dir() and not (self._path / ALIGNED_ZIP).is_file():
            missing.append(f"{ALIGNED_DIR}/ or {ALIGNED_ZIP}")
        return missing

    def _members(self) -> tuple[str, dict[str, str]]:
        """Where the aligned images are, and each image's name -> its path there."""
        if (self._path / ALIGNED_DIR).is_dir():
            return ALIGNED_DIR, {p.name: p.name for p in (self._path / ALIGNED_DIR).iterdir()}
        with zipfile.ZipFile(self._path / ALIGNED_ZIP) as archive:
            names = [m for m in archive.namelist() if not m.endswith("/")]
        return ALIGNED_ZIP, {Path(m).name: m for m in names}

    def _rows(self) -> pd.DataFrame:
        label_file = self._path / LABEL_FILE
        rows = []
        for number, line in enumerate(label_file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split()
            prefix = fields[0].split("_")[0]
            if len(fields) != 2 or prefix not in NAME_SPLITS or not fields[1].lstrip("-").isdigit():
                raise InputDataError(
                    f"{label_file}: line {number}: expected '<train|test>_NNNNN.jpg <label>', "
                    f"found {line!r}"
                )
            rows.append((number, fields[0], NAME_SPLITS[prefix], int(fields[1])))
        where, members = self._members()
        for number, name, _, _ in rows:
            if _aligned_name(name) not in members:
                raise InputDataError(
                    f"{label_file}: line {number}: its image {_aligned_name(name)} is missing "
                    f"from {where}"
                )
        return pd.DataFrame(
            {
                "source": self.source,
                "source_id": [Path(name).stem for _, name, _, _ in rows],
                "source_split": [split for _, _, split, _ in rows],
                "origin": [
                    f"{where}:{_aligned_name(name)} ({LABEL_FILE} line {number})"
                    for number, name, _, _ in rows
                ],
                "skip_reason": None,
                "label_orig": [label for _, _, _, label in rows],
                "member": [members[_aligned_name(name)] for _, name, _, _ in rows],
            }
        )

    def images(self, rows: pd.DataFrame) -> Iterator[bytes]:
        if (self._path / ALIGNED_DIR).is_dir():
            folder = self._path / ALIGNED_DIR
            yield from ((folder / member).read_bytes() for member in rows["member"])
            return
        with zipfile.ZipFile(self._path / ALIGNED_ZIP) as archive:
            yield from (archive.read(member) for member in rows["member"])
