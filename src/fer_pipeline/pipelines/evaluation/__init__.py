"""model + val / test -> metrics, reports and plots."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
