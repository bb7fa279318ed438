"""faces_all -> deduplicated, leak-free train / val / test and a data report."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
