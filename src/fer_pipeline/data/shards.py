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

    def take(
        self, positions: pd.DataFrame, columns: Sequence[str] | None = None
    ) -> Iterator[pd.DataFrame]:
        """The rows at ``positions`` (``POSITION_COLUMNS``, sorted by both), shard
        by shard, reading only the row groups that hold them."""
        shards, rows = (positions[column].to_numpy() for column in POSITION_COLUMNS)
        if np.any(np.diff(shards * np.int64(2**32) + rows) < 0):
            raise ValueError("positions must be sorted by shard and row")
        bounds = np.flatnonzero(np.diff(shards)) + 1
        for wanted_rows in np.split(np.arange(len(shards)), bounds):
            if not len(wanted_rows):
                continue
            shard = int(shards[wanted_rows[0]])
            wanted = rows[wanted_rows]
            reader = pq.ParquetFile(self.files[shard])
            sizes = np.array(
                [reader.metadata.row_group(g).num_rows for g in range(reader.num_row_groups)]
            )
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            group_of = np.searchsorted(starts, wanted, side="right") - 1
            groups = np.unique(group_of)
            table = reader.read_row_groups(list(groups), columns=columns)
            read_at = np.zeros(len(sizes), dtype=np.int64)  # where each group starts in table
            read_at[groups] = np.concatenate([[0], np.cumsum(sizes[groups])[:-1]])
            local = read_at[group_of] + wanted - starts[group_of]
            yield table.take(pa.array(local)).to_pandas()


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
