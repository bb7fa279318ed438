"""Shared behaviour of the read-only source readers."""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from fer_pipeline.data.errors import SourceNotFoundError
from fer_pipeline.data.schema import RELEASE_COLUMNS

logger = logging.getLogger(__name__)


def empty_release() -> pd.DataFrame:
    """A release's table with no rows."""
    return pd.DataFrame({column: pd.Series(dtype=object) for column in RELEASE_COLUMNS})


@dataclass(frozen=True)
class Release:
    """A source's rows without their images, and the reader that fetches the images of
    any of them, in any process: ``reader.images(table.iloc[a:b])``."""

    reader: SourceDataset
    table: pd.DataFrame


class SourceDataset(AbstractDataset[None, Release]):
    """A read-only source of face images that loads as a ``Release``.

    Its table has one row per image with the columns of ``schema.RELEASE_COLUMNS``, the
    source's label columns and the columns that locate each image (``locators``), so that
    images are read in bounded chunks, never all at once. A source that is absent raises
    ``SourceNotFoundError`` naming the files it expected, or, when ``optional``, loads as
    an empty release with a warning.
    """

    source: str
    locators: ClassVar[tuple[str, ...]] = ()
    """Columns of the table that only ``images`` reads."""
    pixel_format: ClassVar[Literal["jpeg", "png"]] = "jpeg"
    """How decoded pixels that ``images`` returns are stored."""

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
    def _rows(self) -> pd.DataFrame:
        """The present source's table (checked; no image read)."""

    @abstractmethod
    def images(self, rows: pd.DataFrame) -> Iterator[bytes | np.ndarray]:
        """The images of ``rows`` (rows of the table), one at a time, as encoded bytes
        to store as they are or as decoded pixels; a file that cannot be read is an
        ``InputDataError`` naming it."""

    def load(self) -> Release:
        missing = self._missing()
        if not missing:
            table = self._rows()
            logger.info("%s: %d images listed in %s", self.source, len(table), self._path)
            return Release(self, table)
        message = f"{self.source}: not found at {self._path}; expected {', '.join(missing)}"
        if not self._optional:
            raise SourceNotFoundError(message)
        logger.warning("%s (optional source skipped)", message)
        return Release(self, empty_release())

    def save(self, data: None) -> None:
        raise DatasetError(f"{type(self).__name__} is read-only")

    def _exists(self) -> bool:
        return not self._missing()

    def _describe(self) -> dict[str, Any]:
        return {"source": self.source, "path": str(self._path), "optional": self._optional}
