"""Versioned outputs that are complete: what every loader of a versioned output reads.

A run marks each version folder it writes (``<filepath>/<version>/``) with ``INCOMPLETE``
before the first byte is written, and removes the mark once the node that writes it has
saved all its outputs (``fer_pipeline.hooks.CompleteVersionsHook``), so the outputs of
one node appear together or not at all. A version killed half-way keeps its mark and is
never read: runs load the newest complete version of each input, the API serves the
newest complete export. Versions without a mark (written before marks existed) count as
complete.

Plain ``pathlib`` and ``os`` only: ``benchmarks/gpu_run.py`` imports this on a machine
without Kedro.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

INCOMPLETE = ".incomplete"
"""The file in a version folder that a run is still writing."""


def fsync_dir(folder: Path) -> None:
    """Makes the entries of ``folder`` (files created, renamed, removed) durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(temporary)`` beside ``path``, made durable, then renamed to ``path``: a
    reader sees the old file or the whole new one, never a part; a failed or killed write
    leaves ``path`` as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(temporary)
        with open(temporary, "rb") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_dir(path.parent)


def is_complete(version_folder: Path) -> bool:
    """Whether the version in ``version_folder`` was written to the end."""
    return not (version_folder / INCOMPLETE).exists()


def mark_incomplete(version_folder: Path) -> None:
    """Marks ``version_folder`` as being written, creating it (durably, before any of its
    data): until ``mark_complete``, every loader skips it."""
    version_folder.mkdir(parents=True, exist_ok=True)
    (version_folder / INCOMPLETE).touch()
    fsync_dir(version_folder)
    fsync_dir(version_folder.parent)


def mark_complete(version_folder: Path) -> None:
    """Makes what ``version_folder`` holds durable, then removes its mark."""
    mark = version_folder / INCOMPLETE
    if not mark.exists():
        return
    for path in sorted(version_folder.rglob("*")):
        if path.is_file() and path != mark:
            with open(path, "rb") as file:
                os.fsync(file.fileno())
        elif path.is_dir():
            fsync_dir(path)
    mark.unlink()
    fsync_dir(version_folder)


def latest_complete(filepath: Path) -> Path | None:
    """The newest complete version of the versioned output at ``filepath`` (the path
    of its file in the newest complete version folder), or ``None``; incomplete newer
    versions are skipped with a warning naming them."""
    for path in sorted(filepath.glob(f"*/{filepath.name}"), reverse=True):
        if is_complete(path.parent):
            return path
        logger.warning("Skipping %s: its run did not finish writing it", path)
    return None


MODEL_INPUT = "data/05_model_input"
"""Where ``data_processing`` writes the train, val and test shards in a project (the
catalog's ``train``, ``val`` and ``test``), for code that reads them without Kedro."""


def latest_split(project: Path, split: str) -> Path:
    """The newest complete version of a split's shard folder (Kedro's versioned layout);
    versions a run did not finish are skipped with a warning."""
    latest = latest_complete(project / MODEL_INPUT / split)
    if latest is None:
        raise FileNotFoundError(
            f"no complete {split} split under {project / MODEL_INPUT}: "
            "run `kedro run --pipelines data_processing` first"
        )
    return latest
