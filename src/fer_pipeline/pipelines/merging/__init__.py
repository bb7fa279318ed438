"""All sources' labelled faces -> one table, with the RAF-DB neutral top-up."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
