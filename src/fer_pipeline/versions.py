"""Versioned outputs that are complete: what every loader of a versioned output reads.

A run marks each version folder it writes (``<filepath>/<version>/``) with ``INCOMPLETE``
before the first byte is written, and removes the mark once the node that writes it has
saved all its outputs. A version killed half-way keeps its mark and is never read.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

INCOMPLETE = ".incomplete"
"""The file in a version folder that a run is still writing."""


def is_complete(version_folder: Path) -> bool:
    """Whether the version in ``version_folder`` was written to the end."""
    return not (version_folder / INCOMPLETE).exists()


def latest_complete(filepath: Path) -> Path | None:
    """The newest complete version of the versioned output at ``filepath`` (the path
    of its file in the newest complete version folder), or ``None``; incomplete newer
    versions are skipped with a warning naming them."""
    for path in sorted(filepath.glob(f"*/{filepath.name}"), reverse=True):
        if is_complete(path.parent):
            return path
        logger.warning("Skipping %s: its run did not finish writing it", path)
    return None
