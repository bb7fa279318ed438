"""Export the latest model to ONNX and TorchScript, checked against PyTorch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from fer_pipeline.modelling.export import onnx_logits, to_onnx, to_torchscript, torchscript_logits
from fer_pipeline.modelling.models import ModelBundle
from fer_pipeline.modelling.runtime import normalise
from fer_pipeline.modelling.tensors import images_to_tensor


def exported_models(
    model: ModelBundle, test: pd.DataFrame, export: dict[str, Any]
) -> tuple[bytes, bytes, dict[str, Any]]:
    """ONNX and TorchScript bytes, and a parity report on ``parity_images`` real test
    images: the largest absolute logit difference from PyTorch of each export. Fails
    when either exceeds ``tolerance``."""
    sample = test.sample(min(export["parity_images"], len(test)), random_state=export["seed"])
    images = images_to_tensor(list(sample["image"]), model.spec.image_size, desc="parity")
    x = normalise(images, model.spec.mean, model.spec.std).contiguous()
    with torch.no_grad():
        reference = model.build()(x).numpy()
    onnx_model, script_model = to_onnx(model), to_torchscript(model)
    x = x.numpy()
    diffs = {
        "onnx": float(np.abs(onnx_logits(onnx_model, x) - reference).max()),
        "torchscript": float(np.abs(torchscript_logits(script_model, x) - reference).max()),
    }
    failed = {k: v for k, v in diffs.items() if v > export["tolerance"]}
    if failed:
        raise ValueError(
            f"export differs from PyTorch by more than {export['tolerance']}: {failed}"
        )
    report = {
        "images": len(sample),
        "tolerance": export["tolerance"],
        "max_abs_logit_difference": diffs,
        "model": model.spec.name,
        "input": {
            "shape": ["batch", 3, model.spec.image_size, model.spec.image_size],
            "mean": model.spec.mean,
            "std": model.spec.std,
            "classes": model.spec.classes,
        },
    }
    return onnx_model, script_model, report
