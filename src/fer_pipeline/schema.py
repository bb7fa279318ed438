"""The facts every stage shares: the class list, the sources and the splits."""

CLASSES: tuple[str, ...] = (
    "anger",
    "disgust",
    "fear",
    "happiness",
    "neutral",
    "sadness",
    "surprise",
)
"""The seven canonical classes; a class id is its index here."""

SOURCES: tuple[str, ...] = ("ferplus", "rafdb", "affectnet")
"""The sources, each an ingestion/harmonisation namespace and a catalog prefix."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Split names, official (``source_split``) and final alike."""

RELEASE_COLUMNS: tuple[str, ...] = (
    "source",
    "source_id",
    "source_split",
    "origin",
    "image",
    "skip_reason",
)
"""Columns every release reader returns, besides its label columns (``label_orig``
or ``vote_<name>``) and optionally ``pixels`` (already decoded images)."""
