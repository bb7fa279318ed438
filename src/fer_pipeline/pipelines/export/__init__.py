"""model -> ONNX (fp32, int8) and TorchScript files, checked on real images."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
