"""Tables too large for memory: a folder of Parquet shards, written from a stream of
parts and read back by columns, row groups or positions. Plain pyarrow and pandas: the
training ranks (``python -m fer_pipeline.train``) read shards without Kedro."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fer_pipeline.data.schema import POSITION_COLUMNS
from fer_pipeline.data.versions import fsync_dir

SHARD_NAME = "part-{:05d}.parquet"


class Shards:
    """The shards ``part-00000.parquet``, ``part-00001.parquet``... of one folder: a
    Parquet dataset that pyarrow, DuckDB, Polars, Dask and Spark read as it is."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.files = sorted(self.folder.glob("part-*.parquet"))
        if not self.files:
            raise FileNotFoundError(f"{self.folder}: no Parquet shards (part-*.parquet)")

    def __repr__(self) -> str:
        return f"Shards({str(self.folder)!r}, {len(self.files)} shards)"

    def __len__(self) -> int:
        return sum(pq.ParquetFile(file).metadata.num_rows for file in self.files)

    @property
    def columns(self) -> list[str]:
        return pq.read_schema(self.files[0]).names

    def read(
        self, columns: Sequence[str] | None = None, *, positions: bool = False
    ) -> pd.DataFrame:
        """The ``columns`` (default: all) of every shard as one table, with each row's
        ``POSITION_COLUMNS`` (its shard's index, its row there) when ``positions``."""
        parts = []
        for index, file in enumerate(self.files):
            part = pq.read_table(file, columns=list(columns) if columns else None).to_pandas()
            if positions:
                part = part.assign(shard=np.int32(index), row=np.arange(len(part), dtype=np.int32))
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    def batches(self, columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
        """Every row group in order, as a table of ``columns`` (default: all)."""
        for file in self.files:
            reader = pq.ParquetFile(file)
            for group in range(reader.num_row_groups):
                yield reader.read_row_group(group, columns=columns).to_pandas()

    def row_group_starts(self, shard: int) -> np.ndarray:
        """The first row of each row group of shard ``shard``."""
        metadata = pq.ParquetFile(self.files[shard]).metadata
        sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
        return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)

    def locate(self, positions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The row group of each row at ``positions`` (``POSITION_COLUMNS``) in its
        shard, and its row within that group."""
        shard, row = (positions[column].to_numpy() for column in POSITION_COLUMNS)
        group, row_in_group = np.empty_like(row), np.empty_like(row)
        for index in np.unique(shard):
            starts, here = self.row_group_starts(int(index)), shard == index
            group[here] = np.searchsorted(starts, row[here], side="right") - 1
            row_in_group[here] = row[here] - starts[group[here]]
        return group, row_in_group

    def take(
        self, positions: pd.DataFrame, columns: Sequence[str] | None = None
    ) -> Iterator[pd.DataFrame]:
        """The rows at ``positions`` (``POSITION_COLUMNS``, sorted by both), shard
        by shard, reading only the row groups that hold them."""
        shards, rows = (positions[column].to_numpy() for column in POSITION_COLUMNS)
        if np.any(np.diff(shards * np.int64(2**32) + rows) < 0):
            raise ValueError("positions must be sorted by shard and row")
        group_of, row_in_group = self.locate(positions)
        bounds = np.flatnonzero(np.diff(shards)) + 1
        for wanted in np.split(np.arange(len(shards)), bounds):
            if not len(wanted):
                continue
            groups, local = np.unique(group_of[wanted], return_inverse=True)
            reader = pq.ParquetFile(self.files[int(shards[wanted[0]])])
            table = reader.read_row_groups(list(groups), columns=columns)
            sizes = np.array([reader.metadata.row_group(int(g)).num_rows for g in groups])
            read_at = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # each group in table
            yield table.take(pa.array(read_at[local] + row_in_group[wanted])).to_pandas()


def write_shards(
    parts: Iterable[pd.DataFrame | pa.Table], folder: Path, row_group_rows: int
) -> None:
    """Writes each part as one shard of ``folder``, in row groups of at most
    ``row_group_rows`` rows, every shard with the first one's schema. The folder is
    written under a temporary name and renamed when the last shard is on disk, so a
    killed writer leaves no folder that a reader takes for whole."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.tmp")
    temporary.mkdir()
    try:
        schema = None
        for index, part in enumerate(parts):
            table = (
                part
                if isinstance(part, pa.Table)
                else pa.Table.from_pandas(part, preserve_index=False)
            )
            if schema is None:
                schema = table.schema.remove_metadata()
            try:
                table = table.select(schema.names).cast(schema)
            except (KeyError, pa.ArrowInvalid, ValueError) as exc:
                raise ValueError(
                    f"{folder}: part {index} does not match the first part's columns: {exc}"
                ) from exc
            path = temporary / SHARD_NAME.format(index)
            pq.write_table(table, path, row_group_size=row_group_rows)
            with open(path, "rb") as file:
                os.fsync(file.fileno())
        if schema is None:
            raise ValueError(f"{folder}: nothing to save (no parts)")
        fsync_dir(temporary)
        os.replace(temporary, folder)
        fsync_dir(folder.parent)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
