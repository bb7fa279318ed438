"""train / val -> a trained, versioned model and its history."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
