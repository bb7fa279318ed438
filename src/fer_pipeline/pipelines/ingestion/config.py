"""Ingestion's parameters: every key, its default, and the checks run before any work.

``IngestionConfig`` is the one place for the defaults; ``conf/base/parameters_ingestion.yml``
sets only what a run changes. Kedro builds and checks it before the first node runs.
"""

from __future__ import annotations

from pydantic import Field

from fer_pipeline.config.params import Params
from fer_pipeline.data.executors import ExecutorKind


class IngestionConfig(Params):
    """How each source's images become shards of faces."""

    max_side: int = Field(256, ge=32)  # larger faces are stored downscaled to this side
    jpeg_quality: int = Field(95, ge=50, le=100)  # of the faces re-encoded (cropped, downscaled)
    shard_rows: int = Field(4096, gt=0)  # faces per shard: one task of the executor
    executor: ExecutorKind = "processes"  # processes (local) or dask
    workers: int | None = Field(None, gt=0)  # local processes or LocalCluster workers; None: cores
    dask_address: str | None = None  # an existing Dask scheduler (tcp://...); None: LocalCluster
