"""A corrupt MLflow database (``mlflow.db``): batch inference, which records nothing,
does not open it; a run that tracks, or reads a registered model, stops with a message
naming the file and what to do."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import catalog_of, make_project, raises_in_chain
from serving_fixtures import photo, raf_faces, small_model, video

from fer_pipeline.modelling.export import to_onnx
from fer_pipeline.runtime.model_store import TrackingStoreError, check_tracking_store, sqlite_file

GARBAGE = b"not an SQLite database, a file overwritten by mistake\n" * 200


@pytest.fixture(scope="module")
def model_onnx(shared_data) -> bytes:
    return to_onnx(small_model(shared_data))


@pytest.fixture
def corrupt_store(tmp_path, monkeypatch) -> Path:
    """A garbage ``mlflow.db`` as the tracking store (MLFLOW_TRACKING_URI, which
    conf/base/mlflow.yml reads); MLflow's own URI is restored afterwards."""
    before = mlflow.get_tracking_uri()
    path = tmp_path / "store" / "mlflow.db"
    path.parent.mkdir()
    path.write_bytes(GARBAGE)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
    yield path
    mlflow.set_tracking_uri(before)


@pytest.fixture
def inference_project(shared_data, model_onnx, tmp_path) -> Path:
    """A project with a model_onnx and a folder holding a photo of one face and a
    one-second video of it."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "one.jpg").write_bytes(photo(raf_faces(shared_data, 1)))
    video(folder / "one.avi", [((folder / "one.jpg").read_bytes(), 1.0)])
    catalog = {
        "inference_images": {"type": "fer_pipeline.datasets.ImageFiles", "path": str(folder)},
        "inference_videos": {"type": "fer_pipeline.datasets.VideoFiles", "path": str(folder)},
    }
    project = make_project(tmp_path / "project", tmp_path / "raw", catalog=catalog)
    catalog_of(project).save("model_onnx", model_onnx)  # with the session's healthy store
    return project


def _assert_untouched(path: Path) -> None:
    assert path.read_bytes() == GARBAGE
    assert [p.name for p in path.parent.iterdir()] == ["mlflow.db"]  # no journal, no WAL


def test_inference_does_not_open_the_tracking_store(inference_project, corrupt_store, kedro_run):
    kedro_run(inference_project, "inference")
    reports = sorted(inference_project.glob("data/08_reporting/inference_report.json/*/*"))
    report = json.loads(reports[-1].read_text())
    assert (report["images"], report["faces"]) == (1, 1)
    videos = sorted(inference_project.glob("data/08_reporting/video_report.json/*/*"))
    assert json.loads(videos[-1].read_text())["videos"] == 1
    _assert_untouched(corrupt_store)


def test_inference_from_the_registry_names_the_corrupt_database(
    inference_project, corrupt_store, kedro_run
):
    """``inference.model_uri`` reads the model from the store: that needs it readable."""
    parameters = {"inference": {"model_uri": "models:/fer_pipeline@champion"}}
    (inference_project / "conf/local/parameters.yml").write_text(yaml.safe_dump(parameters))
    with raises_in_chain(TrackingStoreError) as error:
        kedro_run(inference_project, "inference")
    message = str(error.error)
    assert f"The MLflow tracking database {corrupt_store} cannot be read" in message
    assert f"mv {corrupt_store} {corrupt_store}.corrupt" in message
    assert "MLflow creates a new, empty one" in message
    _assert_untouched(corrupt_store)


def test_a_tracked_run_names_the_corrupt_database_before_any_node(
    small_raw, tmp_path, corrupt_store, kedro_run
):
    project = make_project(tmp_path / "project", small_raw)
    with raises_in_chain(TrackingStoreError) as error:
        kedro_run(project, "data_processing")
    message = str(error.error)
    assert f"The MLflow tracking database {corrupt_store} cannot be read" in message
    assert "file is not a database" in message and "Move it aside" in message
    assert not [p for p in (project / "data").rglob("*") if p.is_file()]
    _assert_untouched(corrupt_store)


def test_the_check_reads_only_sqlite_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sqlite_file("sqlite:///mlflow.db") == tmp_path / "mlflow.db"
    assert sqlite_file("sqlite:////srv/runs/mlflow.db?timeout=5") == Path("/srv/runs/mlflow.db")
    for uri in ("http://127.0.0.1:5000", "databricks", "sqlite:///:memory:", "mlruns", None):
        assert sqlite_file(uri) is None
    check_tracking_store("sqlite:///mlflow.db")  # not there yet: MLflow creates it
    assert not (tmp_path / "mlflow.db").exists()
    (tmp_path / "mlflow.db").write_bytes(b"")  # an empty file is an empty database
    check_tracking_store("sqlite:///mlflow.db")
    (tmp_path / "mlflow.db").write_bytes(GARBAGE)
    with pytest.raises(TrackingStoreError, match=str(tmp_path / "mlflow.db")):
        check_tracking_store("sqlite:///mlflow.db")
