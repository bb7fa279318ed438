"""A Kedro dataset of Parquet shards: a folder that pyarrow, DuckDB, Polars, Dask and
Spark read as it is."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import pyarrow as pa
from kedro.io import AbstractVersionedDataset, DatasetError, Version
from kedro.io.core import get_filepath_str, get_protocol_and_path

from fer_pipeline.data.shards import Shards, write_shards

__all__ = ["Shards", "ShardsDataset"]


class ShardsDataset(AbstractVersionedDataset[Iterable[pd.DataFrame | pa.Table], Shards]):
    """A versioned folder of Parquet shards (``fer_pipeline.data.shards``), saved from any
    iterable of tables (a generator keeps one part in memory at a time), one shard per
    table, in row groups of at most ``row_group_rows`` rows (the unit readers stream),
    and loaded as ``Shards``. A killed run leaves no folder that a later run reads."""

    def __init__(
        self,
        filepath: str,
        *,
        row_group_rows: int = 1024,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        protocol, path = get_protocol_and_path(filepath, version)
        if protocol != "file":
            raise ValueError(f"{type(self).__name__} writes local files only, got {filepath}")
        super().__init__(filepath=PurePosixPath(path), version=version)
        self._row_group_rows = row_group_rows
        self.metadata = metadata

    def load(self) -> Shards:
        return Shards(get_filepath_str(self._get_load_path(), "file"))

    def save(self, data: Iterable[pd.DataFrame | pa.Table]) -> None:
        if isinstance(data, pd.DataFrame | pa.Table):
            data = [data]
        folder = Path(get_filepath_str(self._get_save_path(), "file"))
        try:
            write_shards(data, folder, self._row_group_rows)
        except ValueError as exc:
            raise DatasetError(str(exc)) from exc

    def _exists(self) -> bool:
        try:
            return Path(get_filepath_str(self._get_load_path(), "file")).is_dir()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "version": self._version,
            "row_group_rows": self._row_group_rows,
        }
