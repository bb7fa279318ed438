"""A versioned model bundle file (safetensors weights, the spec in its metadata)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, DatasetError, Version
from kedro.io.core import get_filepath_str, get_protocol_and_path

from fer_pipeline.modelling.models import ModelBundle


class ModelBundleDataset(AbstractVersionedDataset[ModelBundle, ModelBundle]):
    """Saves and loads a ``ModelBundle`` as one ``.safetensors`` file."""

    def __init__(
        self,
        filepath: str,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        protocol, path = get_protocol_and_path(filepath, version)
        if protocol != "file":
            raise ValueError(f"ModelBundleDataset writes local files only, got {filepath}")
        super().__init__(filepath=PurePosixPath(path), version=version)
        self.metadata = metadata

    def load(self) -> ModelBundle:
        return ModelBundle.load(get_filepath_str(self._get_load_path(), "file"))

    def save(self, data: ModelBundle) -> None:
        path = Path(get_filepath_str(self._get_save_path(), "file"))
        path.parent.mkdir(parents=True, exist_ok=True)
        data.save(path)

    def _exists(self) -> bool:
        try:
            return Path(get_filepath_str(self._get_load_path(), "file")).is_file()
        except DatasetError:  # no version saved yet
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "version": self._version}
