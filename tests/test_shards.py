"""Folders of Parquet shards (``ShardsDataset``) and the executors that make them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from fer_pipeline.data.executors import bounded_map, open_executor
from fer_pipeline.datasets import RafDbRelease
from fer_pipeline.datasets.shards import Shards, ShardsDataset
from fer_pipeline.pipelines.ingestion.config import IngestionConfig
from fer_pipeline.pipelines.ingestion.nodes import faces_from_release


def _parts(sizes: list[int]):
    start = 0
    for size in sizes:
        ids = np.arange(start, start + size)
        yield pd.DataFrame(
            {"id": ids, "image": [bytes([i % 256]) * 10 for i in ids], "label": ids % 7}
        )
        start += size


def test_a_stream_of_parts_is_written_as_shards_and_read_back_in_every_way(tmp_path):
    dataset = ShardsDataset(str(tmp_path / "faces"), row_group_rows=4)
    dataset.save(_parts([10, 3, 7]))
    shards = dataset.load()
    assert isinstance(shards, Shards) and len(shards.files) == 3 and len(shards) == 20
    slim = shards.read(["id", "label"], positions=True)
    assert list(slim.columns) == ["id", "label", "shard", "row"]
    assert slim["id"].tolist() == list(range(20))
    assert slim["shard"].tolist() == [0] * 10 + [1] * 3 + [2] * 7
    assert slim["row"].tolist() == [*range(10), *range(3), *range(7)]
    assert [len(b) for b in shards.batches(["id"])] == [4, 4, 2, 3, 4, 3]
    wanted = slim.iloc[[1, 5, 9, 10, 13, 19]]
    taken = pd.concat(shards.take(wanted, columns=["id", "image"]), ignore_index=True)
    assert taken["id"].tolist() == wanted["id"].tolist()
    assert taken["image"].tolist() == [bytes([i]) * 10 for i in wanted["id"]]
    with pytest.raises(ValueError, match="sorted"):
        list(shards.take(wanted.iloc[::-1]))


def test_a_stream_that_fails_half_way_leaves_nothing_to_load(tmp_path):
    def failing():
        yield from _parts([5])
        raise RuntimeError("killed in the middle")

    dataset = ShardsDataset(str(tmp_path / "faces"))
    with pytest.raises(DatasetError, match="killed"):
        dataset.save(failing())
    assert not dataset.exists()
    assert not list(tmp_path.iterdir())  # no temporary folder left either


def test_a_part_with_other_columns_is_an_error_naming_it(tmp_path):
    def parts():
        yield pd.DataFrame({"id": [1], "label": [2]})
        yield pd.DataFrame({"id": [3], "other": [4]})

    with pytest.raises(DatasetError, match="part 1 does not match"):
        ShardsDataset(str(tmp_path / "faces")).save(parts())


@pytest.mark.parametrize("kind", ["processes", "dask"])
def test_executors_keep_the_order_and_raise_the_first_failure(kind):
    with open_executor(kind, workers=2) as executor:
        assert list(bounded_map(executor, abs, range(-9, 0), window=3)) == list(range(9, 0, -1))
        with pytest.raises(TypeError):
            list(bounded_map(executor, abs, [1, "x", 2], window=2))


def test_ingestion_gives_the_same_shards_in_processes_and_on_a_dask_cluster(small_raw):
    """RAF-DB's 80 faces in shards of 30: bounded chunks, in order, whatever runs them;
    the released JPEGs are stored byte for byte."""
    release = RafDbRelease(str(small_raw / "rafdb/basic")).load()
    made = {}
    for kind in ("processes", "dask"):
        config = IngestionConfig(shard_rows=30, executor=kind, workers=2)
        shards, skipped = faces_from_release(release, config)
        made[kind] = list(shards)
    assert [len(s) for s in made["processes"]] == [30, 30, 20] and skipped.empty
    for ours, theirs in zip(made["processes"], made["dask"], strict=True):
        pd.testing.assert_frame_equal(ours, theirs)
    faces = pd.concat(made["processes"], ignore_index=True)
    assert faces["source_id"].is_monotonic_increasing
    originals = list(release.reader.images(release.table.sort_values("source_id")))
    assert faces["image"].tolist() == originals
