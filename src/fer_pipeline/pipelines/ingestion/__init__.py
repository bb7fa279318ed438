"""Raw release files -> one row per face image with hashes."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
