"""AffectNet in its official release layout (face boxes in CSV files)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fer_pipeline.datasets.base import SourceDataset
from fer_pipeline.errors import InputDataError
from fer_pipeline.images import decode_image, encode_jpeg, parallel_map

CSV_SPLITS = {"training.csv": "train", "validation.csv": "test"}
REQUIRED_COLUMNS = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "expression",
)


class AffectNetRelease(SourceDataset):
    """AffectNet: ``training.csv`` (official train) and ``validation.csv`` (the official
    evaluation set, used as test) beside the ``Manually_Annotated_Images/`` folder.

    Each face is cropped to its box and stored as a JPEG of ``jpeg_quality``.
    Label column: ``label_orig`` (the ``expression`` code, 0-10).
    """

    source = "affectnet"

    def __init__(
        self,
        path: str,
        *,
        images: str = "Manually_Annotated_Images",
        jpeg_quality: int = 95,
        optional: bool = True,
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__(path, optional=optional, metadata=metadata)
        self._images = images
        self._quality = jpeg_quality

    def _missing(self) -> list[str]:
        missing = [name for name in CSV_SPLITS if not (self._path / name).is_file()]
        if not (self._path / self._images).is_dir():
            missing.append(f"{self._images}/")
        return missing

    def _crop(self, task: tuple[str, str, Any]) -> bytes:
        where, image_path, row = task
        file = self._path / self._images / image_path
        try:
            pixels = decode_image(file.read_bytes())
        except (OSError, ValueError) as exc:
            raise InputDataError(f"{where}: image {file}: {exc}") from exc
        x, y = max(0, int(row.face_x)), max(0, int(row.face_y))
        face = pixels[y : int(row.face_y + row.face_height), x : int(row.face_x + row.face_width)]
        if face.size == 0:
            raise InputDataError(f"{where}: face box lies outside the image {file}")
        return encode_jpeg(face, self._quality)

    def _read_csv(self, name: str) -> pd.DataFrame:
        path = self._path / name
        try:
            table = pd.read_csv(path, dtype={"subDirectory_filePath": str})
        except (ValueError, OSError) as exc:
            raise InputDataError(f"{path}: not a readable CSV file: {exc}") from exc
        missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
        if missing:
            raise InputDataError(f"{path}: missing column(s) {', '.join(missing)}")
        numeric = table[list(REQUIRED_COLUMNS[1:])].apply(pd.to_numeric, errors="coerce")
        bad = np.flatnonzero(numeric.isna().any(axis=1) | table["subDirectory_filePath"].isna())
        if bad.size:
            raise InputDataError(f"{path}: line {bad[0] + 2}: missing or non-numeric field")
        table[list(REQUIRED_COLUMNS[1:])] = numeric.astype(int)
        return table.assign(
            source_split=CSV_SPLITS[name],
            origin=[f"{name} line {i + 2}" for i in range(len(table))],
        )

    def _read(self) -> pd.DataFrame:
        table = pd.concat([self._read_csv(name) for name in CSV_SPLITS], ignore_index=True)
        tasks = list(zip(table["origin"], table["subDirectory_filePath"], table.itertuples()))
        return pd.DataFrame(
            {
                "source": self.source,
                "source_id": table["subDirectory_filePath"],
                "source_split": table["source_split"],
                "origin": table["origin"],
                "image": parallel_map(self._crop, tasks, desc="affectnet: crop"),
                "skip_reason": None,
                "label_orig": table["expression"],
            }
        )
