"""Local files: versioned model bundles, bytes and zips of images; folders of images."""

from __future__ import annotations

import io
import zipfile
from abc import abstractmethod
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pandas as pd
from kedro.io import AbstractDataset, AbstractVersionedDataset, DatasetError, Version
from kedro.io.core import get_filepath_str, get_protocol_and_path

from fer_pipeline.errors import SourceNotFoundError

if TYPE_CHECKING:  # torch is imported only when a model is read or written
    from fer_pipeline.modelling.models import ModelBundle

T = TypeVar("T")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv"}


class _VersionedFile(AbstractVersionedDataset[T, T], Generic[T]):
    """One local file, versioned like Kedro's own file datasets."""

    def __init__(
        self, filepath: str, version: Version | None = None, metadata: dict[str, Any] | None = None
    ):
        protocol, path = get_protocol_and_path(filepath, version)
        if protocol != "file":
            raise ValueError(f"{type(self).__name__} writes local files only, got {filepath}")
        super().__init__(filepath=PurePosixPath(path), version=version)
        self.metadata = metadata

    @abstractmethod
    def _read(self, path: Path) -> T: ...

    @abstractmethod
    def _write(self, data: T, path: Path) -> None: ...

    def load(self) -> T:
        return self._read(Path(get_filepath_str(self._get_load_path(), "file")))

    def save(self, data: T) -> None:
        path = Path(get_filepath_str(self._get_save_path(), "file"))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write(data, path)

    def _exists(self) -> bool:
        try:
            return Path(get_filepath_str(self._get_load_path(), "file")).is_file()
        except DatasetError:  # no version saved yet
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "version": self._version}


class ModelBundleDataset(_VersionedFile["ModelBundle"]):
    """A ``ModelBundle`` as one ``.safetensors`` file (the spec in its metadata)."""

    def _read(self, path: Path) -> ModelBundle:
        from fer_pipeline.modelling.models import ModelBundle

        return ModelBundle.load(path)

    def _write(self, data: ModelBundle, path: Path) -> None:
        data.save(path)


class BytesDataset(_VersionedFile[bytes]):
    """Raw bytes, e.g. an exported ONNX or TorchScript model."""

    def _read(self, path: Path) -> bytes:
        return path.read_bytes()

    def _write(self, data: bytes, path: Path) -> None:
        path.write_bytes(data)


class ZipDataset(_VersionedFile[dict[str, bytes]]):
    """``{name: bytes}`` as one zip archive, e.g. annotated images."""

    def _read(self, path: Path) -> dict[str, bytes]:
        with zipfile.ZipFile(path) as archive:
            return {name: archive.read(name) for name in archive.namelist()}

    def _write(self, data: dict[str, bytes], path: Path) -> None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for name, content in data.items():
                archive.writestr(name, content)
        path.write_bytes(buffer.getvalue())


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
