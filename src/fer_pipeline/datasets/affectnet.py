"""AffectNet in its official release layout (face boxes in CSV files)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from fer_pipeline.data.errors import InputDataError
from fer_pipeline.data.images import decode_image
from fer_pipeline.data.schema import AUTOMATIC, MANUAL
from fer_pipeline.datasets.base import SourceDataset

CSV_SPLITS = {"training.csv": "train", "validation.csv": "test"}
AUTOMATIC_CSV = "automatically_annotated.csv"
BOX_COLUMNS = ("face_x", "face_y", "face_width", "face_height")
OFFICIAL_COLUMNS = (
    "subDirectory_filePath",
    *BOX_COLUMNS,
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)
"""The columns of AffectNet's CSV files, in their order."""
REQUIRED_COLUMNS = ("subDirectory_filePath", *BOX_COLUMNS, "expression")


class AffectNetRelease(SourceDataset):
    """AffectNet: ``training.csv`` (official train) and ``validation.csv`` (the official
    evaluation set, used as test) beside the ``Manually_Annotated_Images/`` folder, and,
    when ``automatic``, the ~1M rows of ``automatically_annotated.csv`` beside
    ``Automatically_Annotated_Images/`` as training rows.

    Each face is cropped to its box. Label columns: ``label_orig`` (the ``expression``
    code, 0-10) and ``label_quality``: ``manual``, or ``automatic`` for the rows
    AffectNet's own classifier labelled (their ids start with ``automatic/``), which
    training can weight or leave out.
    """

    source = "affectnet"
    locators = ("file", *BOX_COLUMNS)

    def __init__(
        self,
        path: str,
        *,
        images: str = "Manually_Annotated_Images",
        automatic: bool = False,
        automatic_images: str = "Automatically_Annotated_Images",
        optional: bool = True,
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__(path, optional=optional, metadata=metadata)
        self._images = images
        self._automatic = automatic
        self._automatic_images = automatic_images

    def _parts(self) -> list[tuple[str, str, str]]:
        """(CSV file, images folder, label quality) of each part read."""
        parts = [(name, self._images, MANUAL) for name in CSV_SPLITS]
        if self._automatic:
            parts.append((AUTOMATIC_CSV, self._automatic_images, AUTOMATIC))
        return parts

    def _missing(self) -> list[str]:
        parts = self._parts()
        missing = [name for name, _, _ in parts if not (self._path / name).is_file()]
        folders = dict.fromkeys(images for _, images, _ in parts)
        return missing + [f"{f}/" for f in folders if not (self._path / f).is_dir()]

    def _read_csv(self, name: str, images: str, quality: str) -> pd.DataFrame:
        path = self._path / name
        try:  # the landmarks (a kilobyte of text a row) are never read
            table = pd.read_csv(
                path,
                usecols=lambda c: c in REQUIRED_COLUMNS,
                dtype={"subDirectory_filePath": str},
            )
        except (ValueError, OSError) as exc:
            raise InputDataError(f"{path}: not a readable CSV file: {exc}") from exc
        missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
        if missing:
            raise InputDataError(f"{path}: missing column(s) {', '.join(missing)}")
        numeric = table[list(REQUIRED_COLUMNS[1:])].apply(pd.to_numeric, errors="coerce")
        bad = np.flatnonzero(numeric.isna().any(axis=1) | table["subDirectory_filePath"].isna())
        if bad.size:
            raise InputDataError(f"{path}: line {bad[0] + 2}: missing or non-numeric field")
        numeric = numeric.astype(np.int64)
        paths = table["subDirectory_filePath"]
        return pd.DataFrame(
            {
                "source": self.source,
                "source_id": paths if quality == MANUAL else f"{AUTOMATIC}/" + paths,
                "source_split": "train" if quality == AUTOMATIC else CSV_SPLITS[name],
                "origin": [f"{name} line {i + 2}" for i in range(len(table))],
                "skip_reason": None,
                "label_orig": numeric["expression"],
                "label_quality": quality,
                "file": images + "/" + paths,
                **{column: numeric[column].astype(np.int32) for column in BOX_COLUMNS},
            }
        )

    def _rows(self) -> pd.DataFrame:
        return pd.concat([self._read_csv(*part) for part in self._parts()], ignore_index=True)

    def images(self, rows: pd.DataFrame) -> Iterator[np.ndarray]:
        for row in rows.itertuples():
            file = self._path / row.file
            try:
                pixels = decode_image(file.read_bytes())
            except (OSError, ValueError) as exc:
                raise InputDataError(f"{row.origin}: image {file}: {exc}") from exc
            x, y = max(0, row.face_x), max(0, row.face_y)
            face = pixels[y : row.face_y + row.face_height, x : row.face_x + row.face_width]
            if face.size == 0:
                raise InputDataError(f"{row.origin}: face box lies outside the image {file}")
            yield face
