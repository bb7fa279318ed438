"""Source labels or votes -> the seven canonical classes, with counted drops."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
