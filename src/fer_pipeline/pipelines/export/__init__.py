"""model -> ONNX and TorchScript files, checked against PyTorch on real images."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
