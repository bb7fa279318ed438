"""Shared behaviour of the read-only source readers."""

from __future__ import annotations

import logging
from abc import abstractmethod
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from fer_pipeline.errors import SourceNotFoundError
from fer_pipeline.schema import RELEASE_COLUMNS

logger = logging.getLogger(__name__)


def empty_release() -> pd.DataFrame:
    """A release table with no rows."""
    return pd.DataFrame({column: pd.Series(dtype=object) for column in RELEASE_COLUMNS})


class SourceDataset(AbstractDataset[None, pd.DataFrame]):
    """A read-only source of face images that loads as a release table.

    The table has one row per image with the columns of ``schema.RELEASE_COLUMNS`` plus
    the source's label columns. A source that is absent raises ``SourceNotFoundError``
    naming the files it expected, or, when ``optional``, loads as an empty table with a
    warning.
    """

    source: str

    def __init__(
        self, path: str, *, optional: bool = False, metadata: dict[str, Any] | None = None
    ):
        self._path = Path(path)
        self._optional = optional
        self.metadata = metadata

    @abstractmethod
    def _missing(self) -> list[str]:
        """The expected files or folders that are absent."""

    @abstractmethod
    def _read(self) -> pd.DataFrame:
        """Read the present source into a release table."""

    def load(self) -> pd.DataFrame:
        missing = self._missing()
        if not missing:
            table = self._read()
            logger.info("%s: read %d images from %s", self.source, len(table), self._path)
            return table
        message = f"{self.source}: not found at {self._path}; expected {', '.join(missing)}"
        if not self._optional:
            raise SourceNotFoundError(message)
        logger.warning("%s (optional source skipped)", message)
        return empty_release()

    def save(self, data: None) -> None:
        raise DatasetError(f"{type(self).__name__} is read-only")

    def _exists(self) -> bool:
        return not self._missing()

    def _describe(self) -> dict[str, Any]:
        return {"source": self.source, "path": str(self._path), "optional": self._optional}
