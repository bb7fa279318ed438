"""The default pipeline end to end on a small real subset, with MLflow tracking, and the
Kedro-Viz static build."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import yaml
from conftest import PROJECT, catalog_of, make_project, raises_in_chain

from fer_pipeline.data.schema import CLASSES
from fer_pipeline.modelling.models import ModelBundle
from fer_pipeline.tracking.runs import split_digest

TINY = {
    "training": {
        "model": "vit_tiny_patch16_224",
        "image_size": 32,
        "epochs": 2,
        "batch_size": 16,
        "warmup_epochs": 1,
        "eval_batch_size": 64,
    },
    "evaluation": {"tta_views": 1, "batch_size": 64},
}


@pytest.fixture(scope="module")
def tiny_runs(shared_data, tmp_path_factory):
    """Two runs of the whole default pipeline on 300 FER+ rows and 80 RAF-DB images, the
    second with another learning rate; yields the project and its MLflow client."""
    from conftest import write_ferplus_subset, write_rafdb_subset

    root = tmp_path_factory.mktemp("tiny")
    write_ferplus_subset(shared_data, root / "raw/ferplus", rows=300)
    write_rafdb_subset(shared_data, root / "raw/rafdb", per_split=40)
    project = make_project(root / "project", root / "raw", parameters=TINY, env="tiny")
    uri = f"sqlite:///{root}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    for lr in ("3e-4", "1e-3"):
        command = ["kedro", "run", "--env", "tiny", "--params", f"training.lr={lr}"]
        result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    mlflow.set_tracking_uri(uri)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        yield project, mlflow.MlflowClient(uri)


def test_default_pipeline_writes_model_and_reports(tiny_runs):
    project, _ = tiny_runs
    catalog = catalog_of(project, env="tiny")
    model: ModelBundle = catalog.load("model")
    assert model.spec.classes == list(CLASSES) and model.spec.epochs == 2
    history = catalog.load("training_history")
    assert history["epoch"].tolist() == [1, 2]
    assert {"train_loss", "val_loss", "val_accuracy", "lr", "images_per_second"} <= set(history)
    report = catalog.load("evaluation_report")
    for split in ("val", "test"):
        sources = set(catalog.load(split).read(["source"])["source"])
        for kind in ("plain", "tta"):
            scores = report[split][kind]
            assert 0 <= scores["accuracy"] <= 1 and set(scores["per_class"]) == set(CLASSES)
            assert set(scores["accuracy_per_source"]) == sources
    assert report["test"]["plain"]["images"] == len(catalog.load("test"))
    # calibrated by temperatures fitted on val (the model's; TTA's own): the model's
    # lowers val's NLL (up to 1e-3: the evaluation decodes val afresh)
    assert report["model"]["temperature"] == model.spec.temperature != 1.0
    assert report["tta_temperature"] > 0
    assert report["val"]["plain"]["nll"] <= report["val"]["plain"]["nll_uncalibrated"] + 1e-3
    for kind in ("plain", "tta"):
        assert 0 <= report["test"][kind]["ece_uncalibrated"] <= 1
    predictions = catalog.load("test_predictions")
    assert {f"p_{c}" for c in CLASSES} <= set(predictions.columns)
    probabilities = predictions[[f"p_{c}" for c in CLASSES]].to_numpy()
    assert probabilities.sum(1) == pytest.approx(1, abs=1e-5)
    for name in ("confusion_matrix", "reliability", "training_curves"):
        png = sorted((project / "data/08_reporting").glob(f"{name}.png/*/{name}.png"))
        assert len(png) == 2 and png[-1].read_bytes()[:4] == b"\x89PNG"  # two versions
    assert not list((project / "data/06_models/checkpoints").glob("*.pt"))  # cleaned up


def test_mlflow_runs_compare_and_the_model_predicts(tiny_runs, shared_data):
    _, client = tiny_runs
    experiment = client.get_experiment_by_name("fer_pipeline")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"])
    assert len(runs) == 2
    assert [r.data.params["training.lr"] for r in runs] == ["0.0003", "0.001"]
    assert runs[0].data.metrics["val_loss"] != runs[1].data.metrics["val_loss"]
    run = runs[-1]
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2]  # logged live: one point an epoch, as it ends
    assert history[1].timestamp - history[0].timestamp >= 500
    assert any(name.startswith("system/cpu") for name in run.data.metrics)  # system metrics
    catalog = catalog_of(Path.cwd(), env="tiny")
    inputs = {i.dataset.name: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "val", "test"}
    for name, dataset in inputs.items():
        assert dataset.digest == split_digest(catalog.load(name).read(["pixel_hash", "label"]))
    # each run registered its model; the alias follows the test accuracy
    versions = client.search_model_versions("name='fer_pipeline'")
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in runs)
    accuracy = {r.info.run_id: r.data.metrics["evaluation.test_accuracy"] for r in runs}
    champion = client.get_model_version_by_alias("fer_pipeline", "champion")
    first, second = (r.info.run_id for r in runs)
    assert champion.run_id == (second if accuracy[second] > accuracy[first] else first)
    report = catalog.load("evaluation_report")["registry"]
    assert report["alias"] == ("champion" if champion.run_id == second else "challenger")
    assert report["test_accuracy"] == pytest.approx(accuracy[second])
    evaluation = {
        "test_accuracy",
        "test_tta_accuracy",
        "test_macro_f1",
        "test_ece",
        "test_ece_uncalibrated",
        "test_tta_nll",
        "test_accuracy_rafdb",
        "val_accuracy",
    }
    assert {f"evaluation.{name}" for name in evaluation} <= set(run.data.metrics)
    artifacts = {
        a.path for d in ("plots", "reports") for a in client.list_artifacts(run.info.run_id, d)
    }
    assert {
        "plots/confusion_matrix.png",
        "plots/reliability.png",
        "plots/training_curves.png",
        "plots/data_report.png",
        "reports/evaluation_report.json",
        "reports/data_report.json",
    } <= artifacts
    models = mlflow.search_logged_models(
        experiment_ids=[experiment.experiment_id], output_format="list"
    )
    model = mlflow.pyfunc.load_model(f"models:/{models[0].model_id}")
    with zipfile.ZipFile(shared_data / "rafdb/basic/Image/aligned.zip") as archive:
        faces = [archive.read(f"aligned/test_000{i}_aligned.jpg") for i in (1, 2)]
    out = model.predict(pd.DataFrame({"image": faces}))
    assert list(out.columns) == [*CLASSES, "label"] and len(out) == 2
    assert out[list(CLASSES)].sum(axis=1).round(4).tolist() == [1.0, 1.0]


def test_kedro_viz_build(tiny_runs, tmp_path):
    project, _ = tiny_runs
    result = subprocess.run(
        ["kedro", "viz", "build", "--include-hooks"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    site = project / "build"
    assert (site / "index.html").is_file()
    main = (site / "api" / "main").read_text()
    for name in ("ferplus.release", "train_model", "evaluation_report", "split_faces"):
        assert name in main


def test_bad_training_parameters_stop_the_run_before_any_node(small_raw, tmp_path, kedro_run):
    """Kedro builds TrainConfig when it loads the parameters: a typo fails at once,
    before ingestion writes anything."""
    parameters = {"training": {**TINY["training"], "warmup_steps": 5}}
    project = make_project(tmp_path / "project", small_raw, parameters=parameters)
    with raises_in_chain(Exception, match="warmup_steps"):
        kedro_run(project)
    assert not [p for p in (project / "data").rglob("*") if p.is_file()]


def test_checkpoint_kept_until_the_model_is_saved(small_raw, tmp_path, kedro_run):
    """A run whose model cannot be saved keeps its checkpoint; the same run started
    again resumes from it (no epoch trained again), saves the model, then removes it."""
    project = make_project(tmp_path / "project", small_raw, parameters=TINY)
    kedro_run(project, "data_processing")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the model's folder should be")
    local = project / "conf/local/catalog.yml"
    local.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "type": "fer_pipeline.datasets.ModelBundleDataset",
                    "filepath": str(blocker / "model.safetensors"),
                    "versioned": True,
                }
            }
        )
    )
    with pytest.raises(Exception):  # noqa: B017 (Kedro wraps the OS error)
        kedro_run(project, "training")
    checkpoints = list((project / "data/06_models/checkpoints").glob("*.pt"))
    assert len(checkpoints) == 1
    finished = torch.load(checkpoints[0], weights_only=True)["epoch"]
    assert finished == TINY["training"]["epochs"]

    local.unlink()
    kedro_run(project, "training")
    assert not list((project / "data/06_models/checkpoints").glob("*.pt"))
    model = catalog_of(project).load("model")
    assert model.spec.epochs == TINY["training"]["epochs"]


def test_compare_runs_notebook(tiny_runs, monkeypatch):
    """The notebook reads the store the two tiny runs filled: both curves on one plot,
    the learning rate among the parameters that differ, the test figures."""
    project, client = tiny_runs
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project.parent}/mlflow.db")
    notebook = json.loads((PROJECT / "notebooks/compare_runs.ipynb").read_text())
    # the two runs of the fixture, picked by id: other tests' in-process runs of the
    # training pipeline alone can land in the same store, and are newer
    experiment = client.get_experiment_by_name("fer_pipeline")
    runs = client.search_runs([experiment.experiment_id], "attributes.run_name = '__default__'")
    pick = f"PICK = {[r.info.run_id for r in runs]!r}"
    scope: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"]).replace("PICK: list[str] | None = None", pick)
            exec(compile(source, "compare_runs.ipynb", "exec"), scope)
    assert len(scope["chosen"]) == 2
    assert len(scope["fig"].axes[0].get_lines()) == 2
    assert len(scope["fig"].axes[0].get_legend().get_texts()) == 2  # both runs named
    assert "training.lr" in scope["differing"].index
    assert scope["test_figures"].loc["test_accuracy"].between(0, 1).all()
