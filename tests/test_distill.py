"""Knowledge distillation (modelling/distill.py): the teacher stays frozen, the loss is
DeiT's, a distilled ViT averages its heads at inference and exports so, ensembles and
teachers of other input sizes, the references a teacher is named by, and what a run
records of its teacher. Tiny models at 32 px: a few seconds on a CPU."""

from __future__ import annotations

import json
import re

import mlflow
import numpy as np
import onnx
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from fer_pipeline.data.images import encode_png, pixel_hash
from fer_pipeline.data.schema import METADATA_KEY
from fer_pipeline.data.shards import Shards, write_shards
from fer_pipeline.data.versions import mark_incomplete
from fer_pipeline.modelling.augment import BatchAugment, SoftTargetMixer
from fer_pipeline.modelling.config import TrainConfig
from fer_pipeline.modelling.device import normalise
from fer_pipeline.modelling.distill import (
    Teacher,
    distillation_loss,
    load_teachers,
    teacher_input,
)
from fer_pipeline.modelling.engine import setup, train_one_epoch
from fer_pipeline.modelling.export import onnx_logits, to_onnx
from fer_pipeline.modelling.models import ModelBundle, ModelSpec, build_model
from fer_pipeline.pipelines.training.nodes import resume_key, train_model

DEIT = "deit_tiny_distilled_patch16_224"
TINY_DEIT = {"depth": 1, "patch_size": 8}  # timm's DeiT-Tiny, one block, 16 patches at 32 px
STUDENT = {  # no augmentation or mixing: the batches are the images
    "model": DEIT,
    "model_kwargs": TINY_DEIT,
    "image_size": 32,
    "epochs": 1,
    "batch_size": 4,
    "warmup_epochs": 0,
    "hflip": 0.0,
    "rotation": 0.0,
    "scale": [1.0, 1.0],
    "translate": 0.0,
    "mix_prob": 0.0,
    "device": "cpu",
    "precision": "fp32",
}
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def _bundle(
    name: str = "fer_cnn",
    size: int = 32,
    seed: int = 0,
    mean: list[float] = MEAN,
    std: list[float] = STD,
    **kwargs,
) -> ModelBundle:
    torch.manual_seed(seed)
    model = build_model(name, size, **kwargs)
    spec = ModelSpec(name, size, mean, std, model_kwargs=kwargs, val_accuracy=0.5 + seed / 100)
    return ModelBundle(spec=spec, state_dict=model.state_dict())


def _saved(bundle: ModelBundle, path) -> str:
    bundle.save(path)
    return str(path)


def test_the_teacher_gets_no_gradient_and_stays_in_eval_mode(tmp_path):
    """fer_cnn has BatchNorm and dropout: in train mode a step would move its running
    statistics. In a training step the teacher runs once, on the batch, without autograd;
    after it the student's two heads have moved, the teacher has no gradient, is still
    in eval mode, and its weights and statistics are as loaded."""
    teacher = _bundle()
    config = TrainConfig(**STUDENT, teacher=_saved(teacher, tmp_path / "teacher.safetensors"))
    trainer = setup(config, train_size=4)
    assert trainer.model.distilled_training  # DeiT's two heads in training
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    targets = torch.eye(7)[torch.tensor([0, 1, 2, 3])]
    augment = BatchAugment(trainer.mean, trainer.std, hflip=0.0, rotation=0.0, size=32)
    calls = []
    trainer.teacher.members[0].register_forward_hook(
        lambda module, inputs, output: calls.append((inputs[0].shape, torch.is_grad_enabled()))
    )
    train_one_epoch(trainer, 1, images, targets, augment=augment, mixer=SoftTargetMixer(7))

    assert calls == [((4, 3, 32, 32), False)]
    frozen = trainer.teacher
    assert not frozen.training and not any(m.training for m in frozen.modules())
    assert all(not p.requires_grad and p.grad is None for p in frozen.parameters())
    for key, value in frozen.members[0].state_dict().items():
        torch.testing.assert_close(value, teacher.state_dict[key], rtol=0, atol=0, msg=key)
    after = trainer.model.state_dict()
    for head in ("head.weight", "head_dist.weight"):
        assert not torch.equal(before[head], after[head]), head
    frozen.train()  # a call to train() leaves it in eval mode
    assert not any(m.training for m in frozen.modules())


def test_auto_distillation_is_hard_with_deits_token_and_soft_without(tmp_path):
    teacher = _saved(_bundle(), tmp_path / "teacher.safetensors")
    cnn = {**STUDENT, "model": "fer_cnn", "model_kwargs": {}}
    assert setup(TrainConfig(**STUDENT, teacher=teacher), train_size=4).distillation == "hard"
    assert setup(TrainConfig(**cnn, teacher=teacher), train_size=4).distillation == "soft"
    chosen = TrainConfig(**cnn, teacher=teacher, distillation="hard")
    assert setup(chosen, train_size=4).distillation == "hard"


@pytest.mark.parametrize("two_heads", [False, True])
def test_soft_distillation_from_the_students_own_logits_adds_nothing(two_heads):
    """Soft: with the teacher's probabilities those of the student's distillation head
    at the same temperature, the KL term is 0, so the loss is exactly (1 - alpha) x the
    plain loss (cross-entropy of the class head on the targets), and with alpha 0 the
    plain loss itself."""
    torch.manual_seed(0)
    logits, logits_kd = torch.randn(6, 7), torch.randn(6, 7)
    targets = torch.randn(6, 7).softmax(1)
    outputs = (logits, logits_kd) if two_heads else logits
    own = (logits_kd if two_heads else logits) / 3.0
    plain = F.cross_entropy(logits, targets)
    for alpha in (0.0, 0.3, 1.0):
        loss = distillation_loss(outputs, targets, own.softmax(1), "soft", alpha, tau=3.0)
        torch.testing.assert_close(loss, (1 - alpha) * plain, atol=1e-6, rtol=0)
    other = torch.randn(6, 7).softmax(1)  # a teacher that disagrees adds a positive term
    assert distillation_loss(outputs, targets, other, "soft", 0.3, 3.0) > 0.7 * plain + 1e-3


def test_hard_distillation_that_agrees_with_the_labels_is_the_plain_loss():
    """Hard, one head: the teacher is the student's own logits and the targets are their
    argmax (one-hot), so both terms are the same cross-entropy and the loss equals the
    plain loss for every alpha."""
    torch.manual_seed(1)
    logits = torch.randn(6, 7)
    targets = torch.eye(7)[logits.argmax(1)]
    plain = F.cross_entropy(logits, targets)
    for alpha in (0.0, 0.5, 1.0):
        loss = distillation_loss(logits, targets, logits.softmax(1), "hard", alpha, tau=1.0)
        torch.testing.assert_close(loss, plain, atol=1e-6, rtol=0)


def test_deit_heads_learn_the_labels_and_the_teacher_apart():
    """The class head learns the targets, the distillation head the teacher's argmax
    (hard) or its tempered probabilities (soft, KL x tau^2, per image)."""
    torch.manual_seed(2)
    cls, dist = torch.randn(5, 7), torch.randn(5, 7)
    targets = torch.randn(5, 7).softmax(1)
    teacher_logits = torch.randn(5, 7)
    label_term = F.cross_entropy(cls, targets)
    hard_term = F.cross_entropy(dist, teacher_logits.argmax(1))
    hard = distillation_loss((cls, dist), targets, teacher_logits.softmax(1), "hard", 0.5, 1.0)
    torch.testing.assert_close(hard, 0.5 * label_term + 0.5 * hard_term)
    tau = 2.0
    p = (teacher_logits / tau).softmax(1)
    kl = (p * (p.log() - (dist / tau).log_softmax(1))).sum(1).mean() * tau**2
    soft = distillation_loss((cls, dist), targets, p, "soft", 0.25, tau)
    torch.testing.assert_close(soft, 0.75 * label_term + 0.25 * kl)


def test_a_distilled_vit_averages_its_two_heads_at_inference():
    """In training the heads differ; in eval mode, and rebuilt from its bundle, the
    model gives their average."""
    bundle = _bundle(DEIT, **TINY_DEIT)
    model = bundle.build()
    x = torch.randn(3, 3, 32, 32)
    model.set_distilled_training(True)
    model.train()
    cls, dist = model(x)
    assert not torch.allclose(cls, dist)
    model.eval()
    torch.testing.assert_close(model(x), (cls + dist) / 2)
    torch.testing.assert_close(bundle.build()(x), (cls + dist) / 2)


def test_the_onnx_of_a_distilled_vit_gives_pytorchs_probabilities():
    bundle = _bundle(DEIT, **TINY_DEIT)
    bundle.spec.teacher = [{"reference": "t.safetensors", "digest": "abc", "val_accuracy": 0.8}]
    exported = to_onnx(bundle)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = bundle.build()(x).softmax(1).numpy()
    got = torch.from_numpy(onnx_logits(exported, x.numpy())).softmax(1).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    metadata = {p.key: p.value for p in onnx.load_from_string(exported).metadata_props}
    assert json.loads(metadata[METADATA_KEY])["teacher"] == bundle.spec.teacher


def test_an_ensemble_averages_its_teachers_probabilities():
    a, b = _bundle(seed=1), _bundle(seed=2)
    ensemble = Teacher([("a", a), ("b", b)])
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits = [a.build()(x), b.build()(x)]
    for tau in (1.0, 2.0):
        expected = ((logits[0] / tau).softmax(1) + (logits[1] / tau).softmax(1)) / 2
        torch.testing.assert_close(ensemble(x, MEAN, STD, tau), expected)
    assert not torch.allclose(ensemble(x, MEAN, STD), logits[0].softmax(1))
    assert [r["reference"] for r in ensemble.records] == ["a", "b"]
    assert ensemble.records[1] == {"reference": "b", "digest": b.digest(), "val_accuracy": 0.52}


def test_a_teacher_of_another_size_and_normalisation_gets_its_own_input():
    """The student's batch (32 px, its mean and std) reaches a 24 px teacher as those
    pixels resized to 24 px and normalised with the teacher's own statistics."""
    teacher = _bundle(size=24, mean=[0.4, 0.45, 0.5], std=[0.2, 0.25, 0.3])
    teacher.state_dict["head.5.weight"] *= 30  # probabilities that move with the input
    pixels = torch.rand(3, 3, 32, 32)
    x = normalise(pixels, MEAN, STD)
    own = normalise(pixels, teacher.spec.mean, teacher.spec.std, 24)
    converted = teacher_input(x, MEAN, STD, teacher.spec)
    assert converted.shape == (3, 3, 24, 24)
    torch.testing.assert_close(converted, own, atol=1e-5, rtol=0)
    with torch.no_grad():
        expected = teacher.build()(own).softmax(1)
    probs = Teacher([("t", teacher)])(x, MEAN, STD)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(probs, teacher.build()(x).softmax(1), atol=1e-4)
    same = _bundle(size=32)  # the student's own input: passed as it is
    assert teacher_input(x, MEAN, STD, same.spec) is x


def test_a_versioned_folder_means_its_newest_complete_version(tmp_path):
    folder = tmp_path / "model.safetensors"
    old, new = _bundle(seed=1), _bundle(seed=2)
    for version, bundle in (("2026-01-01T00.00.00.000Z", old), ("2026-01-02T00.00.00.000Z", new)):
        (folder / version).mkdir(parents=True)
        bundle.save(folder / version / "model.safetensors")
    [(reference, loaded)] = load_teachers(str(folder))
    assert reference == str(folder) and loaded.digest() == new.digest()
    mark_incomplete(folder / "2026-01-02T00.00.00.000Z")  # a run that did not finish it
    assert load_teachers(str(folder))[0][1].digest() == old.digest()


def test_bad_teachers_are_clear_errors(tmp_path):
    missing = tmp_path / "absent.safetensors"
    message = re.escape(f"training.teacher {missing}: no such file")
    with pytest.raises(FileNotFoundError, match=message):
        load_teachers([str(missing)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no complete version"):
        load_teachers(str(tmp_path / "empty"))
    other = _bundle()
    other.spec.classes = ["a", "b", "c", "d", "e", "f", "g"]
    path = _saved(other, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match=re.escape(f"training.teacher {path} predicts")):
        setup(TrainConfig(**STUDENT, teacher=path), train_size=4)


def test_the_resume_key_counts_a_teacher_by_its_weights():
    config = TrainConfig(**STUDENT, teacher="a/model.safetensors")
    moved = TrainConfig(**STUDENT, teacher="b/model.safetensors")
    images = ["h1", "h2"]
    assert resume_key(config, images, ["d1"]) == resume_key(moved, images, ["d1"])
    assert resume_key(config, images, ["d1"]) != resume_key(config, images, ["d2"])
    for change in ({"distillation": "soft"}, {"distillation_alpha": 0.2}):
        other = TrainConfig(**STUDENT, teacher="a/model.safetensors", **change)
        assert resume_key(other, images, ["d1"]) != resume_key(config, images, ["d1"])
    with pytest.raises(ValueError, match="digest of each teacher"):
        resume_key(config, images)


@pytest.fixture
def splits(tmp_path) -> tuple[Shards, Shards]:
    """8 training and 4 validation images of noise, 32 px, as the pipeline's shards."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        soft = np.eye(7, dtype=np.float32)[i % 7]
        rows.append((encode_png(pixels), i % 7, soft, "rafdb", pixel_hash(pixels)))
    columns = ["image", "label", "soft_label", "source", "pixel_hash"]
    frame = pd.DataFrame(rows, columns=columns)
    write_shards([frame.iloc[:8]], tmp_path / "train", row_group_rows=8)
    write_shards([frame.iloc[8:]], tmp_path / "val", row_group_rows=8)
    return Shards(tmp_path / "train"), Shards(tmp_path / "val")


def test_a_distilled_vit_run_records_its_teacher(splits, tmp_path):
    """The training node with a teacher: the MLflow run gets the teacher's digest and
    accuracy, the model's spec records the teacher, and the model rebuilt from its
    bundle is the distilled ViT in its inference mode (the heads averaged)."""
    teacher = _bundle(seed=3)
    path = _saved(teacher, tmp_path / "teacher.safetensors")
    config = TrainConfig(**STUDENT, teacher=path, checkpoint_dir=str(tmp_path / "checkpoints"))
    with mlflow.start_run() as run:
        bundle, history, _ = train_model(*splits, config)
    params = mlflow.get_run(run.info.run_id).data.params
    assert params["teacher.digest"] == teacher.digest()
    assert params["teacher.val_accuracy"] == "0.53"
    record = {"reference": path, "digest": teacher.digest(), "val_accuracy": 0.53}
    assert bundle.spec.teacher == [record] and len(history) == 1
    loaded = ModelBundle.load(_saved(bundle, tmp_path / "student.safetensors"))
    assert loaded.spec.teacher == [record]
    model = loaded.build()
    assert type(model).__name__ == "VisionTransformerDistilled" and not model.distilled_training


def test_a_logged_model_is_a_teacher(tmp_path):
    """``runs:/`` and ``models:/`` URIs name the ``weights`` artifact (the safetensors
    file under ``artifacts/``) of a model the training pipeline logged."""
    teacher = _bundle(seed=4)
    (tmp_path / "artifacts").mkdir()
    teacher.save(tmp_path / "artifacts" / "model.safetensors")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(tmp_path), artifact_path="model")
    client, name = mlflow.MlflowClient(), f"teacher-{run.info.run_id}"
    client.create_registered_model(name)
    client.create_model_version(
        name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias(name, "champion", "1")
    for uri in (f"runs:/{run.info.run_id}/model", f"models:/{name}/1", f"models:/{name}@champion"):
        [(reference, loaded)] = load_teachers(uri)
        assert reference == uri and loaded.digest() == teacher.digest()


def test_a_missing_teacher_stops_the_node_before_it_reads_an_image(splits, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the training images were read")

    monkeypatch.setattr(Shards, "read", refuse)
    config = TrainConfig(**STUDENT, teacher="nowhere/model.safetensors")
    with pytest.raises(FileNotFoundError, match="nowhere/model.safetensors: no such file"):
        train_model(*splits, config)


def test_the_distillation_benchmark_trains_its_variants_side_by_side(two_source_splits, tmp_path):
    """benchmarks/distillation.py as a user types it: a student without and one with a
    saved teacher, trained at once in a process each with one of the two cores, scored
    per source plain and with TTA, the teacher recorded; run again, nothing trains."""
    import subprocess
    import sys

    from conftest import PROJECT, project_with_splits

    project = project_with_splits(tmp_path / "project", two_source_splits)
    teacher = _saved(_bundle(), tmp_path / "teacher.safetensors")
    out = tmp_path / "out"
    command = [
        sys.executable, str(PROJECT / "benchmarks/distillation.py"), "--env", "quick",
        "--project", str(project), "--out", str(out), "--threads", "2",
        "--param", "epochs=1", "--param", "image_size=32", "--param", "batch_size=16",
        "--param", "device=cpu", "--param", "model=vit_tiny_patch16_224",
        "--param", "model_kwargs={depth: 1, patch_size: 8}",
        "--evaluation", "device=cpu", "--evaluation", "tta_views=1",
        "--variant", "plain", "--variant", f"taught:model={DEIT},teacher={teacher}",
    ]  # fmt: skip
    first = subprocess.run([*command, "--side-by-side"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = {name: json.loads((out / f"{name}.json").read_text()) for name in ("plain", "taught")}
    assert runs["plain"]["teacher"] is None and "teacher" not in runs["plain"]["recipe"]
    assert [t["reference"] for t in runs["taught"]["teacher"]] == [teacher]
    assert runs["taught"]["recipe"]["model"] == DEIT
    for run in runs.values():
        assert run["threads"] == 1 and run["epochs_run"] == 1
        for kind in ("plain", "tta"):
            figures = run["test"][kind]
            assert 0 <= figures["ferplus accuracy"] <= 1 and 0 <= figures["rafdb accuracy"] <= 1
    assert "| taught | 1 | 1 |" in first.stdout.splitlines()[-1]

    again = subprocess.run(command, capture_output=True, text=True)  # in one process
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training with" not in again.stdout and "| plain | 1 | 1 |" in again.stdout
