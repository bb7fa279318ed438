"""Local files a run writes, versioned: model bundles, bytes, zips of images."""

from __future__ import annotations

import io
import zipfile
from abc import abstractmethod
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from kedro.io import AbstractVersionedDataset, DatasetError, Version
from kedro.io.core import get_filepath_str, get_protocol_and_path

from fer_pipeline.data.versions import write_atomically

if TYPE_CHECKING:  # torch is imported only when a model is read or written
    from fer_pipeline.modelling.models import ModelBundle

T = TypeVar("T")


class _VersionedFile(AbstractVersionedDataset[T, T], Generic[T]):
    """One local file, versioned like Kedro's own file datasets, written atomically: to a
    temporary file in the same folder, flushed to disk, then renamed, so the file is
    whole or absent even if the process is killed while writing it."""

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
        # The temporary file is made by _write itself, so with the permissions of any
        # other file it writes.
        write_atomically(path, lambda temporary: self._write(data, temporary))

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
