"""A labelled folder of images: one folder per class, optionally one per official split."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from fer_pipeline.data.errors import InputDataError
from fer_pipeline.data.schema import SPLITS
from fer_pipeline.datasets.base import SourceDataset

logger = logging.getLogger(__name__)

EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp")
"""Image file extensions read by default (compared case-insensitively)."""
_LITTER = {"thumbs.db", "desktop.ini", "__macosx"}
"""Names that file managers and archivers leave behind; never images or classes."""


def _hidden(name: str) -> bool:
    """A hidden file or folder (``.DS_Store``, ``._face.jpg``, ``.git``) or litter."""
    return name.startswith(".") or name.lower() in _LITTER


def _entries(folder: Path) -> list[os.DirEntry]:
    """The folder's entries that are not hidden, sorted by name."""
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if not _hidden(e.name)), key=lambda e: e.name)


class ImageFolderFaces(SourceDataset):
    """Faces in a folder of labelled folders: ``path/<class>/<images>``, or, when
    ``splits`` is given, ``path/<split folder>/<class>/<images>``.

    Args:
        path: the folder holding the class folders (or the split folders).
        source: the name this source has in the project; to go through the pipelines
            it is one of ``schema.SOURCES`` (the catalog slot it fills).
        splits: split folder name -> official split (``train``, ``val`` or ``test``);
            other folders beside them are ignored. Without it every image is ``train``
            and the splitting takes a seeded, stratified val from it.
        extensions: the image files' extensions, compared case-insensitively; other
            files are ignored, and hidden files (``.DS_Store``, ``._x.jpg``) and litter
            (``Thumbs.db``) never count.
        optional: an absent folder loads as an empty release with a warning.

    Label column: ``label_orig``, the class folder's name, which the source's
    ``labels.label_map`` maps to a class. Images may lie at any depth below their class
    folder; ``source_id`` is the image's path relative to ``path``. The images are stored
    as they are (when small enough): ingestion decodes and checks each.
    """

    locators = ("file",)

    def __init__(
        self,
        path: str,
        *,
        source: str,
        splits: dict[str, str] | None = None,
        extensions: Iterable[str] = EXTENSIONS,
        optional: bool = False,
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__(path, optional=optional, metadata=metadata)
        self.source = source
        self._splits = {str(folder): split for folder, split in (splits or {}).items()}
        wrong = {f: s for f, s in self._splits.items() if s not in SPLITS}
        if wrong:
            raise ValueError(f"{source}: splits map folders to {', '.join(SPLITS)}; found {wrong}")
        self._extensions = {f".{e.lower().lstrip('.')}" for e in extensions}
        if not self._extensions:
            raise ValueError(f"{source}: no image extensions given")

    def _is_image(self, entry: os.DirEntry) -> bool:
        return entry.is_file() and Path(entry.name).suffix.lower() in self._extensions

    def _images_below(self, folder: Path) -> Iterator[Path]:
        """The images anywhere below ``folder``, in name order (links to folders are
        not followed, so a link loop cannot trap the walk)."""
        for entry in _entries(folder):
            if entry.is_dir(follow_symlinks=False):
                yield from self._images_below(Path(entry.path))
            elif self._is_image(entry):
                yield Path(entry.path)

    def _split_folders(self) -> list[tuple[Path, str]]:
        """Each folder of class folders, and the official split of its images."""
        if not self._splits:
            return [(self._path, "train")]
        return [(self._path / folder, split) for folder, split in self._splits.items()]

    def _listing(self) -> Iterator[tuple[str, str, Path]]:
        """(official split, class, image file) of every image, lazily. An image lying
        beside the class folders, in no class, is an error naming it."""
        for folder, split in self._split_folders():
            for entry in _entries(folder):
                if entry.is_dir():
                    for file in self._images_below(Path(entry.path)):
                        yield split, entry.name, file
                elif self._is_image(entry):
                    raise InputDataError(
                        f"{entry.path}: an image outside any class folder; expected "
                        f"{self._expected(folder)}"
                    )

    def _expected(self, folder: Path) -> str:
        extensions = "|".join(sorted(e.lstrip(".") for e in self._extensions))
        return f"{folder}/<class folder>/<image>.{{{extensions}}}"

    def _missing(self) -> list[str]:
        if not self._path.is_dir():
            return [self._expected(folder) for folder, _ in self._split_folders()]
        absent = [
            self._expected(folder) for folder, _ in self._split_folders() if not folder.is_dir()
        ]
        if absent:
            return absent
        if next(self._listing(), None) is None:
            return [
                "at least one image in "
                + " or ".join(self._expected(folder) for folder, _ in self._split_folders())
            ]
        return []

    def _rows(self) -> pd.DataFrame:
        listed = [
            (file.relative_to(self._path).as_posix(), split, label, file)
            for split, label, file in self._listing()
        ]
        listed.sort(key=lambda row: row[0])
        if self._splits:
            ignored = [
                e.name for e in _entries(self._path) if e.is_dir() and e.name not in self._splits
            ]
            if ignored:
                logger.info("%s: folders not in splits ignored: %s", self.source, ignored)
        return pd.DataFrame(
            {
                "source": self.source,
                "source_id": [source_id for source_id, _, _, _ in listed],
                "source_split": [split for _, split, _, _ in listed],
                "origin": [str(file) for _, _, _, file in listed],
                "skip_reason": None,
                "label_orig": [label for _, _, label, _ in listed],
                "file": [source_id for source_id, _, _, _ in listed],
            },
            columns=["source", "source_id", "source_split", "origin", "skip_reason"]
            + ["label_orig", "file"],
        )

    def images(self, rows: pd.DataFrame) -> Iterator[bytes]:
        for origin, file in zip(rows["origin"], rows["file"], strict=True):
            try:
                yield (self._path / file).read_bytes()
            except OSError as exc:
                raise InputDataError(f"{origin}: cannot read the image: {exc}") from exc

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "splits": self._splits or None}
