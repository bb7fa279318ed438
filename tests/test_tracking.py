"""MLflow: the champion alias moves only on a better test accuracy on the same test set;
a resumed training run logs each epoch once; a registered model is served from its
weights file without unpickling anything."""

from __future__ import annotations

import pickle

import mlflow
import pytest
import torch

from fer_pipeline.modelling.config import TrainConfig
from fer_pipeline.modelling.engine import fit
from fer_pipeline.runtime.classifier import OnnxClassifier
from fer_pipeline.runtime.model_store import load_registered_onnx
from fer_pipeline.tracking.registry import promote
from fer_pipeline.tracking.runs import EpochMetricsLogger


@pytest.fixture
def store(tmp_path, monkeypatch) -> mlflow.MlflowClient:
    """An empty MLflow store of this test's own."""
    while mlflow.active_run():
        mlflow.end_run()
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("tracking")
    return mlflow.MlflowClient(uri)


def test_champion_moves_only_when_the_test_accuracy_improves(store, tmp_path):
    store.create_registered_model("fer")
    steps = [  # (test accuracy, test set digest) of versions 1..5, in turn
        (0.70, "A", "champion", "1"),
        (0.65, "A", "challenger", "1"),  # worse: the champion stays
        (0.70, "A", "challenger", "1"),  # a tie is no improvement
        (0.74, "A", "champion", "4"),  # better on the same test set
        (0.90, "B", "challenger", "4"),  # another test set: not comparable
    ]
    for version, (accuracy, digest, alias, champion) in enumerate(steps, start=1):
        store.create_model_version("fer", source=str(tmp_path))
        decision = promote({"name": "fer", "version": str(version)}, accuracy, digest)
        assert decision["alias"] == alias, decision
        assert str(store.get_model_version_by_alias("fer", "champion").version) == champion
    assert decision["champion_version"] == "4" and decision["reason"].endswith("test set")
    assert str(store.get_model_version_by_alias("fer", "challenger").version) == "5"


def test_a_resumed_run_logs_every_epoch_once(store, tmp_path):
    """A run that dies after epoch 2's figures (before its checkpoint) resumes after
    epoch 1 in a new MLflow run, which gets epochs 1, 2, 3 once each."""
    torch.manual_seed(0)
    images = torch.randint(0, 255, (64, 3, 16, 16), dtype=torch.uint8)
    targets = torch.eye(7)[torch.arange(64) % 7]
    config = TrainConfig(
        model="fer_cnn", image_size=16, epochs=3, batch_size=16, warmup_epochs=0, device="cpu"
    )
    checkpoint = tmp_path / "run.pt"
    data = images, targets, images[:8], targets[:8].argmax(1)

    class Crash(Exception):
        pass

    with mlflow.start_run() as first:
        log = EpochMetricsLogger(first.info.run_id)

        def crash_at_epoch_2(row):
            log(row)
            if row["epoch"] == 2:
                raise Crash

        with pytest.raises(Crash):
            fit(*data, config, checkpoint, crash_at_epoch_2)
    with mlflow.start_run() as second:
        fit(*data, config, checkpoint, EpochMetricsLogger(second.info.run_id))
    steps = [m.step for m in store.get_metric_history(second.info.run_id, "train_loss")]
    assert steps == [1, 2, 3]
    first_losses = store.get_metric_history(first.info.run_id, "train_loss")
    second_losses = store.get_metric_history(second.info.run_id, "train_loss")
    assert second_losses[0].value == pytest.approx(first_losses[0].value)  # restored


def test_a_registered_model_is_served_without_unpickling(store, bundle, monkeypatch):
    """Logged by the training pipeline's dataset (signature, weights and ONNX export as
    artifacts), registered, aliased: the API serves its ONNX artifact, and loading it
    unpickles nothing."""
    from fer_pipeline.serving.app import load_model
    from fer_pipeline.tracking.datasets import PyfuncModelDataset
    from fer_pipeline.tracking.pyfunc import FerPyfuncModel

    with mlflow.start_run():
        dataset = PyfuncModelDataset(save_args={"name": "model"})
        dataset.save(FerPyfuncModel(bundle))
        info = dataset.model_info
    assert info.signature.inputs.input_names() == ["image"]
    version = mlflow.register_model(info.model_uri, "fer")
    store.set_registered_model_alias("fer", "champion", version.version)

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling while loading the model")

    for module in (pickle, __import__("cloudpickle")):
        monkeypatch.setattr(module, "load", refuse)
        monkeypatch.setattr(module, "loads", refuse)
    monkeypatch.delenv("FER_ONNX_MODEL", raising=False)
    monkeypatch.setenv("FER_MODEL_URI", "models:/fer@champion")
    classifier, uri = load_model()
    assert uri == "models:/fer@champion" and classifier.spec == bundle.spec.to_dict()
    exported = load_registered_onnx(f"models:/fer/{version.version}")
    assert OnnxClassifier(exported).classes == bundle.spec.classes
