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

RELEASE_COLUMNS: tuple[str, ...] = (*ROW_COLUMNS, "skip_reason")
"""Columns of every release's table, besides its label columns (``label_orig`` or
``vote_<name>``, and ``label_quality`` where labels are of more than one kind) and the
columns that locate its images."""

DROPPED_COLUMNS: tuple[str, ...] = (*ROW_COLUMNS, "reason")
"""Rows set aside, by ingestion (``<source>.skipped``) or harmonisation (``.dropped``)."""

MEASURE_COLUMNS: tuple[str, ...] = ("pixel_hash", "phash", "height", "width", "channels")
"""What ingestion measured of each stored face."""

IMAGE_COLUMNS: tuple[str, ...] = ("image", "thumbnail", *MEASURE_COLUMNS)
"""The encoded face, a small grayscale copy of it for near-duplicate checks
(``images.near_thumbnail``) and its measurements: what ``<source>.faces`` adds to a
release's rows."""

POSITION_COLUMNS: tuple[str, ...] = ("shard", "row")
"""Where a face lies in its source's ``<source>.faces`` shards."""

LABEL_QUALITIES: tuple[str, ...] = ("manual", "automatic")
"""How a label was given: by people, or by a classifier (AffectNet's automatic set)."""
MANUAL, AUTOMATIC = LABEL_QUALITIES

LABEL_COLUMNS: tuple[str, ...] = ("label", "label_name", "soft_label", "label_quality")
"""A canonical class id, its name, the target distribution, and ``label_quality``
(one of ``LABEL_QUALITIES``)."""

LABELLED_COLUMNS: tuple[str, ...] = (
    *ROW_COLUMNS,
    *MEASURE_COLUMNS,
    "thumbnail",
    *POSITION_COLUMNS,
    *LABEL_COLUMNS,
)
"""``<source>.labelled``: the slim table harmonisation, merging and splitting work on
(no image bytes; ``shard`` and ``row`` say where each face is)."""

SPLIT_COLUMNS: tuple[str, ...] = (*ROW_COLUMNS, "image", *MEASURE_COLUMNS, *LABEL_COLUMNS, "pool")
"""``train``, ``val`` and ``test`` shards: ``pool`` is the source whose training pool a
row is in."""

TRAINING_COLUMNS: tuple[str, ...] = ("image", "label", "soft_label", "source")
"""What training reads of a split (``fit_frames``, ``python -m fer_pipeline.train``)."""

METADATA_KEY = "fer_pipeline"
"""The metadata key, in a model's safetensors and ONNX files, of its ``ModelSpec`` as JSON."""
