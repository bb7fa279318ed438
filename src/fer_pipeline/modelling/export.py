"""Export to ONNX and TorchScript; inputs are normalised float images ``(N, 3, S, S)``
(the bundle's ``mean`` / ``std``), outputs are logits."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import onnxruntime
import torch

from fer_pipeline.modelling.models import ModelBundle
from fer_pipeline.serving.classifier import METADATA_KEY

OPSET = 17


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
