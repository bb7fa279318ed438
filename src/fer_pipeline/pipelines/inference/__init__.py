"""model + a folder or zip of images -> one row per face with its expression."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
