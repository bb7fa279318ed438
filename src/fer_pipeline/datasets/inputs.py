"""What batch inference reads: the images and videos of a folder or zip."""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from fer_pipeline.errors import SourceNotFoundError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv"}


class _InputFiles(AbstractDataset[None, pd.DataFrame]):
    """Files read from ``path``, as a table; read-only."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def _files(self, suffixes: set[str]) -> list[Path]:
        """The files under the folder ``path`` with one of ``suffixes``, sorted."""
        return sorted(p for p in self._path.rglob("*") if p.suffix.lower() in suffixes)

    def save(self, data: None) -> None:
        raise DatasetError(f"{type(self).__name__} is read-only")

    def _exists(self) -> bool:
        return self._path.exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class ImageFiles(_InputFiles):
    """Image files of a folder (searched recursively) or a zip archive, as a table of
    ``path`` and ``data`` (bytes); files with other suffixes are ignored."""

    def load(self) -> pd.DataFrame:
        if self._path.is_dir():
            rows = [
                (str(p.relative_to(self._path)), p.read_bytes())
                for p in self._files(IMAGE_SUFFIXES)
            ]
        elif zipfile.is_zipfile(self._path):
            with zipfile.ZipFile(self._path) as archive:
                names = sorted(
                    n
                    for n in archive.namelist()
                    if PurePosixPath(n).suffix.lower() in IMAGE_SUFFIXES
                )
                rows = [(name, archive.read(name)) for name in names]
        else:
            raise SourceNotFoundError(
                f"no folder or zip archive of images at {self._path} (set the path of "
                "inference_images in the catalog)"
            )
        return pd.DataFrame(rows, columns=["path", "data"])


class VideoFiles(_InputFiles):
    """Video files of a folder (searched recursively) as a table of ``path`` (relative)
    and ``file`` (absolute, for OpenCV, which reads videos from files); other files are
    ignored, and so is a zip archive (videos are read from folders)."""

    def load(self) -> pd.DataFrame:
        if zipfile.is_zipfile(self._path):
            return pd.DataFrame(columns=["path", "file"])
        if not self._path.is_dir():
            raise SourceNotFoundError(
                f"no folder of videos at {self._path} (set the path of inference_videos "
                "in the catalog)"
            )
        files = self._files(VIDEO_SUFFIXES)
        rows = [(str(p.relative_to(self._path)), str(p.resolve())) for p in files]
        return pd.DataFrame(rows, columns=["path", "file"])
