"""Versioned outputs appear complete or not at all: a run killed (``kill -9``) or failing
half-way leaves versions marked incomplete, and later runs read the newest complete
version of each input instead (see ``fer_pipeline.data.versions``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import psutil
import pytest
import yaml
from conftest import (
    PROJECT,
    catalog_of,
    make_project,
    raises_in_chain,
    write_ferplus_subset,
    write_rafdb_subset,
)
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DatasetError, Version
from kedro.io.core import generate_timestamp
from serving_fixtures import photo, raf_faces, small_model, video

from fer_pipeline.config.loader import project_config
from fer_pipeline.data.schema import SPLITS
from fer_pipeline.data.shards import Shards
from fer_pipeline.data.versions import (
    INCOMPLETE,
    MODEL_INPUT,
    is_complete,
    latest_complete,
    latest_split,
)
from fer_pipeline.datasets import BytesDataset

SPLIT_FILES = {s: Path(MODEL_INPUT, s) for s in SPLITS}


def test_the_splits_are_where_code_without_kedro_reads_them(tmp_path):
    """``MODEL_INPUT`` (read by the benchmarks and gpu_run) is the catalog's folder of the
    splits, and ``latest_split`` skips a version a run did not finish."""
    catalog = project_config(PROJECT, "base")["catalog"]
    assert {s: catalog[s]["filepath"] for s in SPLITS} == {
        s: str(f) for s, f in SPLIT_FILES.items()
    }
    for version in ("2026-01-01T00.00.00.000Z", "2026-02-01T00.00.00.000Z"):
        (tmp_path / MODEL_INPUT / "val" / version / "val").mkdir(parents=True)
    (tmp_path / MODEL_INPUT / "val/2026-02-01T00.00.00.000Z" / INCOMPLETE).touch()
    assert latest_split(tmp_path, "val").parent.name == "2026-01-01T00.00.00.000Z"
    with pytest.raises(FileNotFoundError, match="run `kedro run --pipelines data_processing`"):
        latest_split(tmp_path, "test")


def run(project: Path, pipeline: str, **kwargs) -> None:
    """``kedro run --pipelines <pipeline>`` in this process; ``params`` as ``--params``,
    other keywords as ``KedroSession.run``'s (``node_names``, ``load_versions``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        bootstrap_project(project)
        params = kwargs.pop("params", None)
        try:
            with KedroSession.create(project_path=project, runtime_params=params) as session:
                session.run(pipeline_names=[pipeline], **kwargs)
        finally:
            # kedro-mlflow can leave its run open (re-entered at node level); the next
            # run in this process would then log its parameters into that one.
            while mlflow.active_run():
                mlflow.end_run()


def versions(project: Path, filepath: Path) -> list[Path]:
    """The version folders of the versioned output at ``filepath``, oldest first."""
    return sorted(p for p in (project / filepath).iterdir() if p.is_dir())


def split_sizes(project: Path) -> dict[str, int]:
    """Rows of the newest complete version of each split, and of rafdb's faces."""
    sizes = {s: len(Shards(latest_complete(project / f))) for s, f in SPLIT_FILES.items()}
    faces = latest_complete(project / "data/02_intermediate/rafdb/faces")
    return sizes | {"rafdb_faces": len(Shards(faces))}


def newest_report(project: Path) -> dict:
    return json.loads(latest_complete(project / "data/08_reporting/data_report.json").read_text())


@pytest.fixture(scope="module")
def processed(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small project after one complete ``data_processing`` run."""
    root = tmp_path_factory.mktemp("processed")
    write_ferplus_subset(shared_data, root / "raw/ferplus", rows=300)
    write_rafdb_subset(shared_data, root / "raw/rafdb", per_split=40)
    project = make_project(root / "project", root / "raw")
    run(project, "data_processing")
    return project


@pytest.fixture
def project(processed: Path, tmp_path: Path) -> Path:
    """A copy of ``processed``, data included, for one test to change."""
    return Path(shutil.copytree(processed, tmp_path / "project"))


KILLED_IN_FACES_SAVE = """
    # `kedro run ARGS`, except that once rafdb's second shard of faces is written it
    # touches $READY and waits to be killed.
    import os
    import sys
    import time
    from pathlib import Path

    import pyarrow.parquet as pq
    from kedro.framework.cli import main

    original = pq.write_table

    def write_table(table, where, **kwargs):
        original(table, where, **kwargs)
        if "rafdb/faces" in str(where) and str(where).endswith("part-00001.parquet"):
            Path(os.environ["READY"]).touch()
            time.sleep(3600)

    pq.write_table = write_table
    if __name__ == "__main__":  # not in the ingestion's worker processes
        sys.argv = ["kedro", *sys.argv[1:]]
        main()
"""


def test_kill_9_during_ingestion_leaves_nothing_half_written_to_read(project, tmp_path):
    """``kill -9`` of ``kedro run`` half-way through writing rafdb's face shards: the
    killed version stays marked and holds no shard folder, the next stage reads the
    earlier faces, and rerunning finishes the job."""
    faces = Path("data/02_intermediate/rafdb/faces")
    (before,) = [v.name for v in versions(project, faces)]
    sizes_before = split_sizes(project)
    script, ready, log = tmp_path / "killed.py", tmp_path / "ready", tmp_path / "killed.log"
    script.write_text(textwrap.dedent(KILLED_IN_FACES_SAVE))
    command = [sys.executable, str(script), "run", "--pipelines", "data_processing"]
    command += ["--params", "ingestion.shard_rows=40"]
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, cwd=project, env={**os.environ, "READY": str(ready)}, stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 1200  # only against a hang: Kedro starts slowly
            while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert ready.exists(), f"the run never reached rafdb's faces:\n{log.read_text()}"
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL

    time.sleep(3)  # the workers notice that the run is gone
    # info, not cmdline(): a worker reaped as it is listed is a zombie, whose cmdline raises
    left = [
        p.pid for p in psutil.process_iter(["cmdline"]) if str(project) in str(p.info["cmdline"])
    ]
    assert not left, "ingestion workers outlived the killed run"
    killed = versions(project, faces)[-1]
    assert killed.name != before and not is_complete(killed)
    assert not (killed / "faces").exists()  # its two shards lie in a temporary folder only
    assert latest_complete(project / faces).parent.name == before

    # The next stage reads the earlier faces.
    run(project, "harmonisation")
    labelled = latest_complete(project / "data/03_primary/rafdb/labelled.parquet")
    assert len(pd.read_parquet(labelled)) == sizes_before["rafdb_faces"]

    # Rerunning finishes the job: a complete version in shards of 40 faces.
    run(project, "data_processing", params={"ingestion": {"shard_rows": 40}})
    after = latest_complete(project / faces)
    assert after.parent.name > killed.name
    assert len(Shards(after)) == sizes_before["rafdb_faces"] and len(Shards(after).files) == 2
    assert split_sizes(project) == sizes_before
    assert not list((project / "data").rglob(f"{after.parent.name}/{INCOMPLETE}"))


def test_a_failed_second_save_hides_the_first_output(project):
    """``split_shards`` saves ``train``, then ``val`` fails: ``train``'s new version stays
    marked, so loaders keep the earlier one, and with no earlier one a run stops."""
    (before,) = {versions(project, f)[-1].name for f in SPLIT_FILES.values()}
    catalog = {
        "val": {
            "type": "pandas.ParquetDataset",
            "filepath": "data/05_model_input/val",
            "versioned": True,  # a dataset that cannot save a stream of shards
        }
    }
    (project / "conf/local/catalog.yml").write_text(yaml.safe_dump(catalog))
    with pytest.raises(Exception, match="to_parquet"):
        run(project, "splitting")
    failed = versions(project, SPLIT_FILES["train"])[-1]
    assert failed.name != before and (failed / "train").is_dir()  # saved whole
    assert not is_complete(failed)
    assert latest_complete(project / SPLIT_FILES["train"]).parent.name == before
    assert [v.name for v in versions(project, SPLIT_FILES["test"])] == [before]

    # Without the earlier version, a run reading train stops and says why.
    shutil.rmtree(project / SPLIT_FILES["train"] / before)
    (project / "conf/local/catalog.yml").unlink()
    with raises_in_chain(DatasetError, "train: no complete version"):
        run(project, "training")


@pytest.fixture(scope="module")
def exported(shared_data) -> bytes:
    from fer_pipeline.modelling.export import to_onnx

    return to_onnx(small_model(shared_data))


def test_a_loading_run_skips_an_unfinished_model_onnx(shared_data, exported, tmp_path, caplog):
    """``inference`` reads ``model_onnx``: a newer version marked incomplete (truncated
    bytes) is skipped with a warning, the newest complete one used; ``video_timelines``
    (a folder of plots) and the other outputs are left complete."""
    folder = tmp_path / "photos"
    folder.mkdir()
    faces = raf_faces(shared_data, 1)
    (folder / "one.png").write_bytes(photo(faces))
    video(folder / "clip.avi", [(photo(faces), 1.0)])
    catalog = {
        "inference_images": {"type": "fer_pipeline.datasets.ImageFiles", "path": str(folder)},
        "inference_videos": {"type": "fer_pipeline.datasets.VideoFiles", "path": str(folder)},
    }
    project = make_project(tmp_path / "project", tmp_path / "raw", catalog=catalog)
    catalog_of(project).save("model_onnx", exported)
    models = project / "data/06_models/model.onnx"
    (complete,) = models.glob("*/model.onnx")
    unfinished = models / generate_timestamp() / "model.onnx"
    unfinished.parent.mkdir()
    (unfinished.parent / INCOMPLETE).touch()
    unfinished.write_bytes(exported[: len(exported) // 2])

    with caplog.at_level("WARNING", logger="fer_pipeline"):
        run(project, "inference")
    assert f"Skipping {unfinished}" in caplog.text
    found = catalog_of(project).load("inference_faces")
    assert found["path"].tolist() == ["one.png"]
    np.testing.assert_allclose(found.filter(like="p_").sum(axis=1), 1, atol=1e-4)
    assert latest_complete(models) == complete
    (timelines,) = versions(project, Path("data/08_reporting/video_timelines"))
    assert is_complete(timelines)
    assert (timelines / "video_timelines/clip.avi.png").read_bytes()[:4] == b"\x89PNG"
    assert not list((project / "data").rglob(f"{timelines.name}/{INCOMPLETE}"))


def test_load_versions_are_kept_and_other_inputs_skip_unfinished_versions(project):
    """``--load-versions ferplus.labelled:<earlier>`` loads that version although a newer
    complete one exists, while ``rafdb.labelled`` (not pinned) skips its unfinished
    newest version: ``merging`` gives the earlier ``faces_all`` again."""
    labelled = {s: Path(f"data/03_primary/{s}/labelled.parquet") for s in ("ferplus", "rafdb")}
    (earlier,) = versions(project, labelled["ferplus"])
    newer = project / labelled["ferplus"] / generate_timestamp() / "labelled.parquet"
    newer.parent.mkdir()
    pd.read_parquet(earlier / "labelled.parquet").head(50).to_parquet(newer)  # complete
    unfinished = project / labelled["rafdb"] / generate_timestamp() / "labelled.parquet"
    unfinished.parent.mkdir()
    (unfinished.parent / INCOMPLETE).touch()
    content = (versions(project, labelled["rafdb"])[0] / "labelled.parquet").read_bytes()
    unfinished.write_bytes(content[: len(content) // 2])
    faces_all = project / "data/03_primary/faces_all.parquet"
    (first,) = faces_all.glob("*/faces_all.parquet")

    run(project, "merging", load_versions={"ferplus.labelled": earlier.name})
    merged = latest_complete(faces_all)
    assert merged != first
    pd.testing.assert_frame_equal(pd.read_parquet(merged), pd.read_parquet(first))

    run(project, "merging")  # unpinned: the newer ferplus version, 50 rows
    assert (pd.read_parquet(latest_complete(faces_all))["source"] == "ferplus").sum() <= 50


def test_project_datasets_write_atomically(tmp_path, monkeypatch):
    """A write that dies half-way leaves no file under the dataset's name (nor a
    temporary one), so the earlier version stays the one loaded."""
    filepath = str(tmp_path / "model.onnx")
    first, second = "2026-01-01T00.00.00.000Z", "2026-01-01T00.00.00.001Z"
    BytesDataset(filepath, version=Version(None, first)).save(b"complete")

    def dies_half_way(self, data: bytes, path: Path) -> None:
        path.write_bytes(data[: len(data) // 2])
        raise OSError("disk gone")

    monkeypatch.setattr(BytesDataset, "_write", dies_half_way)
    with raises_in_chain(OSError, "disk gone"):  # in Kedro's DatasetError
        BytesDataset(filepath, version=Version(None, second)).save(b"the new model")
    files = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [f"model.onnx/{first}/model.onnx"]
    assert BytesDataset(filepath, version=Version(None, None)).load() == b"complete"
