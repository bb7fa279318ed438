"""Export the latest model to ONNX (fp32 and int8) and TorchScript, checked against
PyTorch, and the int8 model's accuracy and speed measured against the fp32 one."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from fer_pipeline.data.images import decode_image
from fer_pipeline.data.shards import Shards
from fer_pipeline.modelling.export import (
    model_inputs,
    onnx_logits,
    to_int8,
    to_onnx,
    to_torchscript,
    torchscript_logits,
)
from fer_pipeline.modelling.models import ModelBundle
from fer_pipeline.runtime.classifier import OnnxClassifier

from .config import ExportConfig


def _served_figures(
    classifier: OnnxClassifier, crops: list[np.ndarray], test: pd.DataFrame, timing_faces: int
) -> dict[str, Any]:
    """Test accuracy (all rows and per source) as serving computes it, and speed here:
    ms for one face and images/s in batches of 256."""
    started = time.perf_counter()
    probs = [classifier.probabilities(crops[i : i + 256]) for i in range(0, len(crops), 256)]
    batched = len(crops) / (time.perf_counter() - started)
    predicted = np.concatenate(probs).argmax(1)
    correct = predicted == test["label"].to_numpy()
    single = []
    for crop in crops[:timing_faces]:
        started = time.perf_counter()
        classifier.probabilities([crop])
        single.append(time.perf_counter() - started)
    return {
        "accuracy": float(correct.mean()),
        **{
            f"accuracy_{source}": float(correct[rows].mean())
            for source, rows in test.groupby("source").indices.items()
        },
        "ms_per_face": 1000 * float(np.median(single)),
        "images_per_second_batch_256": batched,
        "predicted": predicted,
    }


def exported_models(
    model: ModelBundle, val: Shards, test: Shards, export: ExportConfig
) -> tuple[bytes, bytes, bytes, dict[str, Any]]:
    """ONNX fp32, ONNX int8 and TorchScript bytes, and a report.

    Parity: the largest absolute logit difference from PyTorch of the fp32 exports on
    ``parity_images`` real test images; fails when either exceeds ``tolerance``. int8:
    calibrated on ``calibration_images`` real validation images; accuracy of fp32 and
    int8 on the whole test set (per source) and the speed of each, here. ``export``: Kedro
    builds and checks it from the parameters before the run (a dict is checked here)."""
    export = ExportConfig.model_validate(export)
    val, test = val.read(["image"]), test.read(["image", "label", "source"])
    sample = test.sample(min(export.parity_images, len(test)), random_state=export.seed)
    x = model_inputs(model, list(sample["image"]))
    with torch.no_grad():
        reference = model.build()(x).numpy()
    onnx_model, script_model = to_onnx(model), to_torchscript(model)
    x = x.numpy()
    diffs = {
        "onnx": float(np.abs(onnx_logits(onnx_model, x) - reference).max()),
        "torchscript": float(np.abs(torchscript_logits(script_model, x) - reference).max()),
    }
    failed = {k: v for k, v in diffs.items() if v > export.tolerance}
    if failed:
        raise ValueError(f"export differs from PyTorch by more than {export.tolerance}: {failed}")
    calibration = val.sample(min(export.calibration_images, len(val)), random_state=export.seed)
    int8_model = to_int8(onnx_model, model_inputs(model, list(calibration["image"])).numpy())
    crops = [decode_image(image) for image in test["image"]]
    served = {
        name: _served_figures(OnnxClassifier(data), crops, test, export.timing_faces)
        for name, data in (("fp32", onnx_model), ("int8", int8_model))
    }
    agreement = float((served["fp32"].pop("predicted") == served["int8"].pop("predicted")).mean())
    report = {
        "images": len(sample),
        "tolerance": export.tolerance,
        "max_abs_logit_difference": diffs,
        "model": model.spec.name,
        "input": {
            "shape": ["batch", 3, model.spec.image_size, model.spec.image_size],
            "mean": model.spec.mean,
            "std": model.spec.std,
            "classes": model.spec.classes,
        },
        "int8": {
            "method": "ONNX Runtime static quantisation: QDQ, int8 weights per channel, "
            "uint8 activations calibrated by min/max",
            "calibration_images": len(calibration),
            "test_images": len(test),
            "top1_agreement_with_fp32": agreement,
            "megabytes": {
                "fp32": len(onnx_model) / 1e6,
                "int8": len(int8_model) / 1e6,
            },
            **served,
        },
    }
    return onnx_model, int8_model, script_model, report
