"""Temperature scaling: fitted on val, it keeps every prediction and lowers the NLL; the
PyTorch and ONNX paths apply the same temperature."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fer_pipeline.modelling.calibration import fit_temperature
from fer_pipeline.modelling.config import TrainConfig
from fer_pipeline.modelling.models import ModelBundle, ModelSpec, build_model


def test_fit_temperature_recovers_the_temperature_that_made_the_logits():
    generator = torch.Generator().manual_seed(0)
    calibrated = torch.randn(20_000, 7, generator=generator) * 2
    labels = torch.multinomial(calibrated.softmax(1), 1, generator=generator).squeeze(1)
    assert fit_temperature(calibrated * 3, labels) == pytest.approx(3, rel=0.05)
    assert fit_temperature(calibrated / 2, labels) == pytest.approx(0.5, rel=0.05)
    assert fit_temperature(torch.empty(0, 7), torch.empty(0, dtype=torch.long)) == 1.0


def test_temperature_fitted_on_val_keeps_the_predictions_and_lowers_val_nll(shared_data, tmp_path):
    """A model trained on 64 real faces is overconfident on 64 others: the training's
    temperature, fitted on them, changes no prediction and lowers their NLL."""
    from conftest import write_ferplus_subset

    from fer_pipeline.data.images import encode_png
    from fer_pipeline.datasets import FerPlusRelease
    from fer_pipeline.modelling.engine import fit
    from fer_pipeline.modelling.evaluate import predict_views
    from fer_pipeline.modelling.tensors import images_to_tensor

    table = FerPlusRelease(str(write_ferplus_subset(shared_data, tmp_path, rows=128))).load().table
    images = images_to_tensor([encode_png(pixels) for pixels in table["pixels"]], 32)
    labels = torch.from_numpy(table["label_orig"].to_numpy())
    config = TrainConfig(
        model="fer_resnet18", image_size=32, epochs=6, batch_size=16, warmup_epochs=1, device="cpu"
    )
    bundle, _ = fit(images[:64], torch.eye(7)[labels[:64]], images[64:], labels[64:], config)
    temperature = bundle.spec.temperature
    assert abs(temperature - 1) > 0.05  # a fitted value, not the default

    logits = predict_views(bundle, images[64:], device="cpu", precision="fp32")[0]
    nll = {t: F.cross_entropy(logits / t, labels[64:]).item() for t in (1.0, temperature)}
    assert nll[temperature] < nll[1.0]
    assert torch.equal((logits / temperature).argmax(1), logits.argmax(1))


def test_onnx_and_pytorch_apply_the_same_temperature():
    from fer_pipeline.modelling.export import to_onnx
    from fer_pipeline.modelling.predictor import Predictor
    from fer_pipeline.runtime.classifier import OnnxClassifier

    torch.manual_seed(0)
    model = build_model("fer_resnet18", 32)
    spec = ModelSpec("fer_resnet18", 32, [0.5] * 3, [0.5] * 3, temperature=2.5)
    bundle = ModelBundle(spec, model.state_dict())
    crops = list(np.random.default_rng(0).integers(0, 256, (6, 40, 40), dtype=np.uint8))

    scaled = Predictor(bundle).probabilities(crops)
    assert np.allclose(OnnxClassifier(to_onnx(bundle)).probabilities(crops), scaled, atol=1e-5)
    unscaled = Predictor(
        ModelBundle(ModelSpec(**(spec.to_dict() | {"temperature": 1.0})), model.state_dict())
    )
    expected = torch.from_numpy(np.log(unscaled.probabilities(crops)) / 2.5).softmax(1).numpy()
    assert np.allclose(scaled, expected, atol=1e-5)
    assert not np.allclose(scaled, unscaled.probabilities(crops), atol=1e-3)
