"""FER2013 pixels joined row by row with Microsoft's FER+ votes."""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyarrow import csv as pa_csv

from fer_pipeline.data.errors import InputDataError
from fer_pipeline.datasets.base import SourceDataset

FER2013_COLUMNS = ("emotion", "pixels", "Usage")
VOTE_NAMES = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
FERPLUS_COLUMNS = ("Usage", "Image name", *VOTE_NAMES)
USAGE_SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SIDE = 48
PARSE_ROWS = 2048


def _line(row: int) -> int:
    """File line of a 0-based data row (line 1 is the header)."""
    return row + 2


def _find_line(path: Path, text: str) -> int | str:
    """The 1-based number of the first line of ``path`` equal to ``text`` (a slow scan
    for error messages only; the multithreaded CSV reader does not count lines)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as lines:
        for number, line in enumerate(lines, start=1):
            if line.rstrip("\r\n") == text.rstrip("\r\n"):
                return number
    return "?"


def _read_fer2013(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``emotion``, ``Usage`` and ``(N, 48, 48)`` uint8 pixels of ``fer2013.csv[.gz]``."""
    invalid: list[Any] = []

    def on_invalid(row: Any) -> str:
        invalid.append(row)
        return "skip"

    try:
        table = pa_csv.read_csv(
            path,
            parse_options=pa_csv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pa_csv.ConvertOptions(
                column_types={"pixels": pa.string(), "Usage": pa.string()}
            ),
        )
    except (pa.ArrowException, OSError, EOFError) as exc:
        raise InputDataError(f"{path}: not a readable CSV file: {exc}") from exc
    if invalid:
        row = invalid[0]
        raise InputDataError(
            f"{path}: line {row.number or _find_line(path, row.text)} has {row.actual_columns} "
            f"fields, expected {row.expected_columns} ({row.text[:40]!r}...); is it truncated?"
        )
    missing = [c for c in FER2013_COLUMNS if c not in table.column_names]
    if missing:
        raise InputDataError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(FER2013_COLUMNS)}"
        )
    frame = table.select(list(FER2013_COLUMNS)).to_pandas()
    for column in FER2013_COLUMNS:
        if frame[column].isna().any():
            row = int(np.flatnonzero(frame[column].isna())[0])
            raise InputDataError(f"{path}: line {_line(row)}: empty '{column}'")
    strings = frame.pop("pixels").tolist()
    n = len(strings)
    pixels = np.empty((n, SIDE, SIDE), dtype=np.uint8)
    for start in range(0, n, PARSE_ROWS):  # in blocks: the text is 300 MB
        block = strings[start : start + PARSE_ROWS]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            values = np.fromstring(" ".join(block), dtype=np.int16, sep=" ")
        if (
            values.size != len(block) * SIDE * SIDE
            or values.min(initial=0) < 0
            or values.max(initial=0) > 255
        ):
            for row, text in enumerate(block, start=start):
                tokens = text.split()
                if len(tokens) != SIDE * SIDE or not all(
                    t.isdigit() and int(t) < 256 for t in tokens
                ):
                    raise InputDataError(
                        f"{path}: line {_line(row)}: 'pixels' must hold {SIDE * SIDE} "
                        f"integers 0-255, found {len(tokens)} values"
                    )
        pixels[start : start + len(block)] = values.reshape(-1, SIDE, SIDE)
    return frame["emotion"].to_numpy(), frame["Usage"].to_numpy(dtype=str), pixels


def _read_votes(path: Path) -> pd.DataFrame:
    """The FER+ vote table, validated."""
    try:
        votes = pd.read_csv(path, dtype={"Usage": str, "Image name": str})
    except (ValueError, OSError, EOFError) as exc:
        raise InputDataError(f"{path}: not a readable CSV file: {exc}") from exc
    missing = [c for c in FERPLUS_COLUMNS if c not in votes.columns]
    if missing:
        raise InputDataError(
            f"{path}: missing vote column(s) {', '.join(missing)}; "
            f"expected {', '.join(FERPLUS_COLUMNS)}"
        )
    counts = votes[list(VOTE_NAMES)].apply(pd.to_numeric, errors="coerce")
    bad = counts.isna() | (counts < 0) | (counts != counts.round())
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise InputDataError(
            f"{path}: line {_line(int(row))}, column '{VOTE_NAMES[col]}': "
            f"expected a vote count, found {votes.iloc[row][VOTE_NAMES[col]]!r}"
        )
    votes[list(VOTE_NAMES)] = counts.astype(np.int16)
    return votes


class FerPlusRelease(SourceDataset):
    """FER2013 (``fer2013.csv`` or ``fer2013.csv.gz``) joined row by row with the FER+
    vote file ``fer2013new.csv``.

    Rows without an ``Image name`` (excluded by FER+) and rows whose ``Image name`` is
    not unique (the pixel/vote alignment is ambiguous) are marked in ``skip_reason``.
    Label columns: ``label_orig`` (the FER2013 emotion) and ``vote_<name>``. The
    pixels (48x48, 80 MB in all) are part of the table and stored as PNG.
    """

    source = "ferplus"
    locators = ("pixels",)
    pixel_format = "png"

    def __init__(
        self,
        path: str,
        *,
        images: str = "fer2013.csv",
        votes: str = "fer2013new.csv",
        optional: bool = False,
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__(path, optional=optional, metadata=metadata)
        self._images = images
        self._votes = votes

    def _images_file(self) -> Path:
        plain = self._path / self._images
        gz = plain.with_name(plain.name + ".gz")
        return gz if not plain.exists() and gz.exists() else plain

    def _missing(self) -> list[str]:
        missing = []
        if not self._images_file().is_file():
            missing.append(f"{self._images} (or {self._images}.gz)")
        if not (self._path / self._votes).is_file():
            missing.append(self._votes)
        return missing

    def images(self, rows: pd.DataFrame) -> Iterator[np.ndarray]:
        return iter(rows["pixels"])

    def _rows(self) -> pd.DataFrame:
        images_file, votes_file = self._images_file(), self._path / self._votes
        emotion, usage, pixels = _read_fer2013(images_file)
        votes = _read_votes(votes_file)
        if len(votes) != len(pixels):
            raise InputDataError(
                f"{votes_file} has {len(votes)} data rows but {images_file} has {len(pixels)}; "
                "the two files must be row-aligned (is one truncated?)"
            )
        unknown = np.flatnonzero(~np.isin(usage, list(USAGE_SPLITS)))
        if unknown.size:
            row = int(unknown[0])
            raise InputDataError(
                f"{images_file}: line {_line(row)}: unknown Usage {usage[row]!r}; "
                f"expected one of {', '.join(USAGE_SPLITS)}"
            )
        misaligned = np.flatnonzero(votes["Usage"].to_numpy(dtype=str) != usage)
        if misaligned.size:
            row = int(misaligned[0])
            raise InputDataError(
                f"{votes_file}: line {_line(row)}: Usage {votes['Usage'].iloc[row]!r} differs "
                f"from {usage[row]!r} in {images_file.name}; the files are not row-aligned"
            )
        names = votes["Image name"].str.strip().replace("", np.nan)
        skip = np.where(
            names.isna(),
            "no_image_name",
            np.where(names.duplicated(keep=False), "duplicate_image_name", None),
        )
        rows = np.arange(len(pixels))
        origin = f"{images_file.name} + {votes_file.name}"
        table = pd.DataFrame(
            {
                "source": self.source,
                "source_id": [f"{i:05d}" for i in rows],
                "source_split": pd.Series(usage).map(USAGE_SPLITS).to_numpy(),
                "origin": [f"{origin} line {_line(i)}" for i in rows],
                "pixels": list(pixels),
                "skip_reason": skip,
                "label_orig": emotion,
            }
        )
        for name in VOTE_NAMES:
            table[f"vote_{name}"] = votes[name].to_numpy()
        return table
