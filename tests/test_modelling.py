"""Schedule, augmentations, metrics, model bundles and pretrained weights."""

from __future__ import annotations

import random

import numpy as np
import pytest
import timm
import torch
from conftest import VIT_RECIPE

from fer_pipeline.datasets import ModelBundleDataset
from fer_pipeline.modelling.augment import BatchAugment, SoftTargetMixer
from fer_pipeline.modelling.config import TrainConfig
from fer_pipeline.modelling.device import normalise
from fer_pipeline.modelling.engine import setup
from fer_pipeline.modelling.metrics import calibration, classification_report, macro_f1, per_class
from fer_pipeline.modelling.models import ModelBundle, ModelSpec, build_model

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
DEIT = "deit_tiny_distilled_patch16_224"


def test_warmup_spans_the_configured_epochs_then_cosine_decays():
    """timm's scheduler, stepped per update: 100 updates per epoch, warmup 2 epochs."""
    config = TrainConfig(
        model="fer_cnn", image_size=16, epochs=10, batch_size=10, warmup_epochs=2,
        lr=1e-3, min_lr=1e-5, device="cpu",
    )  # fmt: skip
    trainer = setup(config, train_size=1000)
    assert trainer.steps_per_epoch == 100
    lrs = []
    for update in range(1, 1001):
        trainer.scheduler.step_update(num_updates=update)
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
    assert all(a < b for a, b in zip(lrs[:199], lrs[1:200]))  # rises for 2 epochs
    assert lrs[99] == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)  # half-way after 1 epoch
    assert lrs[199] == pytest.approx(1e-3)  # the peak after 2 epochs
    assert all(a >= b for a, b in zip(lrs[199:], lrs[200:]))  # then only falls
    assert lrs[599] == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)  # cosine half-way
    assert lrs[-1] == pytest.approx(1e-5)


def test_no_weight_decay_for_what_the_model_exempts():
    """timm's optimizer factory: a ViT's pos_embed and cls_token (named by its
    no_weight_decay()), norms and biases get none; weight matrices get the configured."""
    config = TrainConfig(
        model="vit_tiny_patch16_224", image_size=32, weight_decay=0.05, device="cpu"
    )
    trainer = setup(config, train_size=64)
    decay_of = {
        id(p): group["weight_decay"]
        for group in trainer.optimizer.param_groups
        for p in group["params"]
    }
    named = dict(trainer.model.named_parameters())
    assert len(decay_of) == len(named)
    for name in ("pos_embed", "cls_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias"):
        assert decay_of[id(named[name])] == 0.0, name
    for name in ("blocks.0.attn.qkv.weight", "patch_embed.proj.weight", "head.weight"):
        assert decay_of[id(named[name])] == 0.05, name


def test_augment_shapes_and_identity():
    images = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    out = BatchAugment(MEAN, STD, hflip=0.5, rotation=10, scale=(0.9, 1.1), translate=0.05)(
        images, generator
    )
    assert out.shape == (6, 3, 20, 20) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    identity = BatchAugment(MEAN, STD, hflip=0.0, rotation=0)(images, generator)
    torch.testing.assert_close(identity, normalise(images, MEAN, STD), atol=1e-4, rtol=0)
    flipped = BatchAugment(MEAN, STD, hflip=1.0, rotation=0)(images, generator)
    torch.testing.assert_close(flipped, normalise(images.flip(3), MEAN, STD), atol=1e-4, rtol=0)


def test_photometric_augments():
    """Each option does what it says, and one left at 0 draws no random numbers: a recipe
    without them gets the same batches as before they existed."""
    images = torch.randint(0, 256, (64, 3, 24, 24), dtype=torch.uint8)
    plain = dict(hflip=0.0, rotation=0)

    def augment(batches=1, geometry=plain, **options):
        torch.manual_seed(1)
        random.seed(1)
        generator = torch.Generator().manual_seed(0)
        augmenter = BatchAugment(MEAN, STD, **geometry, **options)
        return [augmenter(images, generator) for _ in range(batches)], generator

    def run(**options) -> torch.Tensor:
        return augment(**options)[0][0]

    off = dict(grayscale=0, brightness=0, contrast=0, low_resolution=0, erasing=0)
    geometric = dict(hflip=0.5, rotation=10, scale=(0.9, 1.1), translate=0.05)
    states = []
    for options in ({}, off):
        batches, generator = augment(2, geometric, **options)
        states.append((batches, generator.get_state(), torch.get_rng_state(), random.getstate()))
    (before, *rngs_before), (after, *rngs_after) = states
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(rngs_before[:2], rngs_after[:2]))
    assert rngs_before[2] == rngs_after[2]

    grey = run(grayscale=1.0)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    half = run(grayscale=0.5)
    is_grey = (half[:, 0] - half[:, 1]).abs().amax(dim=(1, 2)) < 1e-5
    assert 16 < int(is_grey.sum()) < 48

    pixels = normalise(images, MEAN, STD)
    means = (run(brightness=0.5) - pixels).mean(dim=(1, 2, 3))
    assert means.std() > 0.05  # a factor per image
    spread = run(contrast=0.5).std(dim=(1, 2, 3)) / pixels.std(dim=(1, 2, 3))
    assert spread.min() < 0.8 and spread.max() > 1.2

    blurred = run(low_resolution=1.0)
    assert blurred.shape == pixels.shape
    roughness = lambda x: (x[..., 1:] - x[..., :-1]).abs().mean()  # noqa: E731
    assert roughness(blurred) < 0.7 * roughness(pixels)  # fine detail gone

    erased = run(erasing=1.0)
    changed = (erased - pixels).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert changed.all()  # every image has a block of noise
    changed_share = ((erased - pixels).abs() > 1e-4).float().mean()
    assert 0.01 < changed_share < 0.4  # a block, not the whole face

    for name, bad in [("grayscale", 1.5), ("erasing", -0.1), ("brightness", 1.0)]:
        with pytest.raises(ValueError, match=f"training.{name} must be"):
            TrainConfig(**{name: bad})


@pytest.mark.parametrize("mixup_alpha, cutmix_alpha", [(0.4, 0.0), (0.0, 1.0)])
def test_mixing_keeps_targets_distributions(mixup_alpha, cutmix_alpha):
    np.random.seed(0)
    x = torch.rand(8, 3, 16, 16)
    original = x.clone()
    targets = torch.eye(7)[torch.tensor([0, 1, 2, 3, 4, 5, 6, 1])]  # 0 pairs with 7
    mixer = SoftTargetMixer(7, mixup_alpha, cutmix_alpha, prob=1.0, smoothing=0.1)
    mixed_x, mixed = mixer(x, targets)
    torch.testing.assert_close(mixed.sum(1), torch.ones(8))
    assert not torch.equal(mixed_x, original)
    lam = float(mixed[0, 0] - 0.1 / 7) / (1 - 0.1)  # weight left on sample 0's own class
    assert 0 <= lam <= 1
    if mixup_alpha:
        torch.testing.assert_close(mixed_x, lam * original + (1 - lam) * original.flip(0))


def test_smoothing_without_mixing():
    targets = torch.eye(7)[[3]]
    _, out = SoftTargetMixer(7, smoothing=0.2)(torch.zeros(1, 3, 4, 4), targets)
    expected = torch.full((1, 7), 0.2 / 7)
    expected[0, 3] += 0.8
    torch.testing.assert_close(out, expected)


def test_metrics_against_hand_computed_values():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    scores = per_class(y_true, y_pred, 3)
    # class 0: tp 1, predicted 2, support 2; class 1: tp 2, predicted 3; class 2: tp 1 of 1.
    np.testing.assert_allclose(scores["precision"], [1 / 2, 2 / 3, 1.0])
    np.testing.assert_allclose(scores["recall"], [1 / 2, 1.0, 1 / 2])
    np.testing.assert_allclose(scores["f1"], [0.5, 0.8, 2 / 3])
    assert macro_f1(y_true, y_pred, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    labels = np.array([0, 1, 1, 0])
    # bins of width 0.5: {0.6: wrong, 0.7: right} -> |1 - 1.3|; {0.9 right, 0.8 wrong} -> |1 - 1.7|
    assert calibration(labels, probs, bins=2)["ece"] == pytest.approx((0.3 + 0.7) / 4)
    report = classification_report(labels, probs, ["a", "b"], ["s", "s", "t", "t"])
    assert report["accuracy"] == 0.5
    assert report["accuracy_per_source"] == {"s": 0.5, "t": 0.5}
    assert report["confusion_matrix"] == [[1, 1], [1, 1]]


def _bundle(image_size: int = 32) -> ModelBundle:
    torch.manual_seed(0)
    model = build_model("vit_tiny_patch16_224", image_size)
    spec = ModelSpec("vit_tiny_patch16_224", image_size, MEAN, STD, classes=["x"] * 7)
    return ModelBundle(spec=spec, state_dict=model.state_dict())


def test_model_bundle_round_trip(tmp_path):
    bundle = _bundle()
    dataset = ModelBundleDataset(str(tmp_path / "model.safetensors"))
    dataset.save(bundle)
    loaded = dataset.load()
    assert loaded.spec == bundle.spec
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.build()(x), bundle.build()(x))
    raw = torch.load  # the weights file holds tensors only: loadable without pickle
    assert raw is not None and (tmp_path / "model.safetensors").read_bytes()[8:9] == b"{"


def test_fer_cnn_and_other_timm_models():
    assert build_model("fer_cnn", 48)(torch.randn(2, 3, 48, 48)).shape == (2, 7)
    assert build_model("resnet18", 64)(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    assert build_model("vit_tiny_patch16_224", 112)(torch.randn(1, 3, 112, 112)).shape == (1, 7)


@pytest.mark.parametrize(
    "name, size", [("vit_tiny_patch16_224", 64), ("vit_tiny_patch16_224", 112), (DEIT, 64)]
)
def test_vit_tiny_with_8_px_patches_at_face_size(name, size):
    """ViT-Tiny at 64-112 px with 8 px patches (``model_kwargs: {patch_size: 8}``): a
    token per 8 px square, and the bundle rebuilds it."""
    torch.manual_seed(0)
    model = build_model(name, size, patch_size=8)
    prefix = 2 if name == DEIT else 1  # DeiT's distillation token
    assert model.pos_embed.shape[1] == prefix + (size // 8) ** 2
    spec = ModelSpec(name, size, MEAN, STD, model_kwargs={"patch_size": 8})
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = ModelBundle(spec=spec, state_dict=model.state_dict()).build()(x)
        torch.testing.assert_close(out, model.eval()(x))
    assert out.shape == (2, 7)


def test_pretrained_sources(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="pretrained weights file not found"):
        build_model("vit_tiny_patch16_224", 64, pretrained=str(tmp_path / "absent.pth"))
    source = timm.create_model("vit_tiny_patch16_224", num_classes=1000)
    weights = tmp_path / "vit_tiny.pth"
    torch.save(source.state_dict(), weights)
    model = build_model("vit_tiny_patch16_224", 64, pretrained=str(weights))
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert model.pos_embed.shape[1] == 1 + (64 // 16) ** 2  # resized to the image size
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="pretrained: false"):
        build_model("vit_tiny_patch16_224", 64, pretrained=True)
    with pytest.raises(ValueError, match="no pretrained weights for fer_resnet18"):
        build_model("fer_resnet18", 64, pretrained=True)  # the default's own architecture


@pytest.mark.parametrize(
    "params, message",
    [
        ({"warmup_steps": 5}, "unknown training parameter.*warmup_steps"),
        ({"precision": "fp8"}, "precision must be one of"),
        ({"data_on_device": "yes"}, "data_on_device must be one of"),
        ({"monitor": "val_acc"}, "monitor must be one of"),
        ({"balance": "oversample"}, "balance must be one of"),
        ({"lr": "fast"}, "lr must be float"),
        ({"epochs": 2.5}, "epochs must be int"),
        ({"epochs": 0}, "epochs must be > 0"),
        ({"epochs": 3, "warmup_epochs": 5}, "warmup_epochs must be between"),
        ({"mixup_alpha": 0, "cutmix_alpha": 0}, "mix_prob > 0 needs"),
        ({"image_size": 112, "storage_size": 224}, "storage_size must be between 1 and"),
        ({"storage_size": "small"}, "storage_size must be int"),
        ({"nproc_per_node": 0}, "nproc_per_node must be > 0"),
        ({"nnodes": 2}, "nnodes > 1 needs rdzv_endpoint"),
        ({"distillation": "medium"}, "distillation must be one of"),
        ({"distillation_alpha": 1.5}, "distillation_alpha must be between 0 and 1"),
        ({"distillation_tau": 0}, "distillation_tau must be > 0"),
        ({"teacher": []}, "teacher must be a model reference or a non-empty list"),
        ({"teacher": ["a.safetensors", 3]}, "teacher must be a model reference"),
        ({"teacher": 3}, "teacher must be a model reference"),
        ({"teacher": "data/06_models/model.onnx"}, "an ONNX teacher cannot run"),
    ],
)
def test_training_parameters_are_checked(params, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(params)


def test_valid_training_parameters():
    assert TrainConfig.from_dict({"data_on_device": True}).data_on_device is True
    config = TrainConfig.from_dict({"monitor": "val_macro_f1", "lr": "1e-3", "epochs": 30.0})
    assert config.lr == 1e-3 and config.epochs == 30 and isinstance(config.epochs, int)
    assert TrainConfig.from_dict({"teacher": ("a", "b")}).teacher == ["a", "b"]


def test_the_loop_learns_real_faces(shared_data, tmp_path):
    """Without augmentation, the loop memorises 48 real faces; a loop that cannot learn
    (wrong targets, detached loss, a frozen optimiser) stays near chance."""
    from conftest import write_ferplus_subset

    from fer_pipeline.data.images import encode_png
    from fer_pipeline.datasets import FerPlusRelease
    from fer_pipeline.modelling.engine import fit
    from fer_pipeline.modelling.tensors import images_to_tensor

    table = FerPlusRelease(str(write_ferplus_subset(shared_data, tmp_path, rows=48))).load().table
    images = images_to_tensor([encode_png(pixels) for pixels in table["pixels"]], 32)
    labels = torch.from_numpy(table["label_orig"].to_numpy())
    config = TrainConfig(
        **{
            **VIT_RECIPE,
            "image_size": 32,
            "epochs": 30,
            "batch_size": 16,
            "lr": 1e-3,
            "warmup_epochs": 2,
            "mix_prob": 0,
            "label_smoothing": 0,
            "hflip": 0,
            "rotation": 0,
            "scale": [1, 1],
            "translate": 0,
            "weight_decay": 0,
            "device": "cpu",
        }
    )
    _, history = fit(images, torch.eye(7)[labels], images, labels, config)
    assert history[0]["val_accuracy"] < 0.6
    assert history[-1]["val_accuracy"] > 0.9


def test_bf16_on_a_cpu_without_bf16_instructions_runs_in_fp32(monkeypatch, caplog):
    from fer_pipeline.modelling import device

    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    assert device.autocast_dtype("bf16", cpu) is torch.bfloat16
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    assert device.autocast_dtype("bf16", cpu) is None
    assert "no bf16 instructions" in caplog.text
    assert device.autocast_dtype("fp32", cpu) is None
    assert device.autocast_dtype("auto", cpu) is None
