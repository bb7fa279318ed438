"""Export to ONNX (fp32, and statically quantised int8) and TorchScript; inputs are
normalised float images ``(N, 3, S, S)`` (the bundle's ``mean`` / ``std``), outputs are
logits."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from fer_pipeline.data.schema import METADATA_KEY
from fer_pipeline.modelling.device import normalise
from fer_pipeline.modelling.models import ModelBundle
from fer_pipeline.modelling.tensors import images_to_tensor

OPSET = 17


def model_inputs(bundle: ModelBundle, images: Sequence[bytes]) -> torch.Tensor:
    """Encoded images as the exports take them: resized to the model's side, normalised."""
    tensor = images_to_tensor(images, bundle.spec.image_size, desc="export images")
    return normalise(tensor, bundle.spec.mean, bundle.spec.std).contiguous()


def _example(bundle: ModelBundle) -> torch.Tensor:
    size = bundle.spec.image_size
    return torch.zeros(1, 3, size, size)


def to_onnx(bundle: ModelBundle) -> bytes:
    """The model as ONNX bytes, with a dynamic batch axis; its ``ModelSpec`` (classes,
    input size, normalisation, model name, training facts) goes in the file's
    metadata, which is all ``OnnxClassifier`` needs to run it."""
    buffer = io.BytesIO()
    torch.onnx.export(
        bundle.build(),
        (_example(bundle),),
        buffer,
        dynamo=False,
        opset_version=OPSET,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )
    model = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(bundle.spec.to_dict())})
    return model.SerializeToString()


def to_torchscript(bundle: ModelBundle) -> bytes:
    """The model traced to TorchScript, as bytes for ``torch.jit.load``."""
    with torch.no_grad():
        traced = torch.jit.trace(bundle.build(), _example(bundle))
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue()


def onnx_logits(model: bytes, images: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {"image": images.astype(np.float32)})[0]


def torchscript_logits(model: bytes, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.jit.load(io.BytesIO(model)).eval()(torch.from_numpy(images)).numpy()


class _Calibration(CalibrationDataReader):
    """Normalised images for ONNX Runtime's calibration, ``batch`` at a time."""

    def __init__(self, images: np.ndarray, batch: int = 32):
        self.batches = iter(np.array_split(images, max(1, len(images) // batch)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {"image": batch.astype(np.float32)}


@contextlib.contextmanager
def _quiet_per_channel_fallback() -> Iterator[None]:
    """Drops ONNX Runtime's "Axis 1 is out-of-range for weight" warning, logged once per
    LayerNorm of a ViT: those 1-D weights are quantised per tensor instead, as they
    should be, and the warning would flood the run's log."""

    def keep(record: logging.LogRecord) -> bool:
        return "is out-of-range for weight" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def to_int8(model: bytes, calibration: np.ndarray) -> bytes:
    """The ONNX model statically quantised by ONNX Runtime: int8 weights per output
    channel, uint8 activations whose ranges are calibrated (min/max) on ``calibration``
    (normalised images, real ones), QDQ format; the model's metadata is kept."""
    with tempfile.TemporaryDirectory() as folder, _quiet_per_channel_fallback():
        fp32, prepared, int8 = (Path(folder) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32.write_bytes(model)
        quant_pre_process(str(fp32), str(prepared))  # shape inference and graph folding
        quantize_static(
            str(prepared),
            str(int8),
            _Calibration(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        quantised = onnx.load(str(int8))
    source = onnx.load_from_string(model)
    onnx.helper.set_model_props(quantised, {p.key: p.value for p in source.metadata_props})
    return quantised.SerializeToString()
