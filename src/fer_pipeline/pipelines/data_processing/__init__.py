"""Ingestion, harmonisation, merging and splitting chained."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
