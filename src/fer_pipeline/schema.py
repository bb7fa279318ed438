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

ROW_COLUMNS: tuple[str, ...] = ("source", "source_id", "source_split", "origin")
"""Where a row comes from: its source, its id there, its official split, file and line."""

RELEASE_COLUMNS: tuple[str, ...] = (*ROW_COLUMNS, "image", "skip_reason")
"""Columns every release reader returns, besides its label columns (``label_orig``
or ``vote_<name>``) and optionally ``pixels`` (already decoded images)."""

DROPPED_COLUMNS: tuple[str, ...] = (*ROW_COLUMNS, "reason")
"""Rows set aside, by ingestion (``<source>.skipped``) or harmonisation (``.dropped``)."""

IMAGE_COLUMNS: tuple[str, ...] = ("image", "pixel_hash", "phash", "height", "width", "channels")
"""The encoded image and what ingestion measured of it."""

LABELLED_COLUMNS: tuple[str, ...] = (
    *ROW_COLUMNS,
    *IMAGE_COLUMNS,
    "label",
    "label_name",
    "soft_label",
)
"""``<source>.labelled``: a canonical class id, its name and the target distribution."""

SPLIT_COLUMNS: tuple[str, ...] = (*LABELLED_COLUMNS, "pool")
"""``train``, ``val`` and ``test``: ``pool`` is the source whose training pool a row is in."""

TRAINING_COLUMNS: tuple[str, ...] = ("image", "label", "soft_label", "source")
"""What training reads of a split (``fit_frames``, ``python -m fer_pipeline.train``)."""
