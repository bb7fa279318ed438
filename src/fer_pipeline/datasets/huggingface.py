"""A source read with Hugging Face ``datasets``: a hub id, parquet/arrow files or a
dataset saved with ``save_to_disk``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pandas as pd

from fer_pipeline.data.errors import InputDataError, SourceNotFoundError
from fer_pipeline.datasets.base import SourceDataset

_HUB_ID = re.compile(r"^[\w-]+/[\w.-]+$")


class HuggingFaceFaces(SourceDataset):
    """Face images from a Hugging Face dataset with configured column names.

    Args:
        path: hub id (``owner/name``) or a local folder of parquet/arrow files or of a
            dataset saved with ``save_to_disk``.
        source: the source this dataset stands in for (``ferplus``, ``rafdb``, ...).
        splits: dataset split -> official split (``train``, ``val`` or ``test``); other
            splits are ignored.
        image_column: column of images (bytes or files).
        label_column: column of labels; class-label integers become their names, so
            the source's ``label_map`` is keyed by those names.
        vote_columns: instead of a label, vote column -> FER+ vote name (``neutral``...).
        id_column: column of stable ids; default ``<split>/<row>``.
        load_args: passed to ``datasets.load_dataset``.

    The encoded images are part of the table (a limit: such a source must fit in
    memory once, encoded).
    """

    locators = ("image_data",)

    def __init__(
        self,
        path: str,
        *,
        source: str,
        splits: dict[str, str],
        image_column: str = "image",
        label_column: str = "label",
        vote_columns: dict[str, str] | None = None,
        id_column: str | None = None,
        optional: bool = False,
        load_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__(path, optional=optional, metadata=metadata)
        self._name = str(path)
        self.source = source
        self._splits = splits
        self._image_column = image_column
        self._label_column = label_column
        self._vote_columns = vote_columns or {}
        self._id_column = id_column
        self._load_args = load_args or {}

    def _missing(self) -> list[str]:
        if self._path.exists() or (_HUB_ID.match(self._name) and not self._name.startswith(".")):
            return []
        return [f"a Hugging Face dataset (hub id, or parquet/arrow files) at {self._name}"]

    def _dataset_dict(self) -> datasets.DatasetDict:
        saved = self._path / "dataset_dict.json"
        try:
            if saved.exists() or (self._path / "state.json").exists():
                loaded = datasets.load_from_disk(self._name)
            else:
                loaded = datasets.load_dataset(self._name, **self._load_args)
        except (OSError, ValueError, ConnectionError) as exc:
            raise SourceNotFoundError(
                f"{self.source}: cannot load the Hugging Face dataset {self._name}: {exc}"
            ) from exc
        return (
            loaded
            if isinstance(loaded, datasets.DatasetDict)
            else datasets.DatasetDict({"train": loaded})
        )

    def _split_table(self, split: datasets.Dataset, name: str) -> pd.DataFrame:
        where = f"{self._name}[{name}]"
        wanted = [self._image_column, *(self._vote_columns or [self._label_column])]
        wanted += [self._id_column] if self._id_column else []
        missing = [c for c in wanted if c not in split.column_names]
        if missing:
            raise InputDataError(
                f"{where}: missing column(s) {', '.join(missing)}; "
                f"found {', '.join(split.column_names)}"
            )
        split = split.cast_column(self._image_column, datasets.Image(decode=False))
        frame = split.select_columns(wanted).to_pandas()
        table = pd.DataFrame(
            {
                "source": self.source,
                "source_id": (
                    frame[self._id_column].astype(str)
                    if self._id_column
                    else [f"{name}/{i}" for i in range(len(frame))]
                ),
                "source_split": self._splits[name],
                "origin": [f"{where} row {i}" for i in range(len(frame))],
                "skip_reason": None,
                "image_data": [
                    self._image_bytes(cell, f"{where} row {i}")
                    for i, cell in enumerate(frame[self._image_column])
                ],
            }
        )
        if self._vote_columns:
            for column, vote in self._vote_columns.items():
                table[f"vote_{vote}"] = frame[column].to_numpy()
            return table
        feature = split.features[self._label_column]
        labels = frame[self._label_column]
        if isinstance(feature, datasets.ClassLabel):
            labels = [feature.int2str(int(v)) if pd.notna(v) else None for v in labels]
        return table.assign(label_orig=labels)

    @staticmethod
    def _image_bytes(cell: Any, where: str) -> bytes:
        if isinstance(cell, dict) and cell.get("bytes"):
            return cell["bytes"]
        if isinstance(cell, dict) and cell.get("path") and Path(cell["path"]).is_file():
            return Path(cell["path"]).read_bytes()
        raise InputDataError(f"{where}: no image bytes or readable image file")

    def images(self, rows: pd.DataFrame) -> Iterator[bytes]:
        return iter(rows["image_data"])

    def _rows(self) -> pd.DataFrame:
        loaded = self._dataset_dict()
        absent = [name for name in self._splits if name not in loaded]
        if absent:
            raise InputDataError(
                f"{self._name}: split(s) {', '.join(absent)} not found; it has {', '.join(loaded)}"
            )
        return pd.concat(
            [self._split_table(loaded[name], name) for name in self._splits], ignore_index=True
        )
