"""What batch inference reads: the images and videos of a folder or zip.

Hostile input is skipped with its reason, never read blindly: only regular files are read
(no devices, pipes or sockets, even behind a link), links are followed only to files
inside the folder, each file or archive entry is read with a bounded read of at most
``max_file_bytes`` (its size, from the file system or the zip header, is checked first;
headers can lie), and an archive stops yielding data once ``max_archive_bytes`` have been
inflated. Images are read one at a time as they are used, not all at once.
"""

from __future__ import annotations

import errno
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from fer_pipeline.data.errors import SourceNotFoundError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv"}
MAX_FILE_BYTES = 50_000_000
"""Default largest image file or (decompressed) archive entry read; larger ones are
skipped and reported. A 50 MB photo is already far beyond any camera's JPEG."""
MAX_ARCHIVE_BYTES = 4_000_000_000
"""Default largest total decompressed size read from one zip archive; the entries past it
are skipped and reported."""
_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_KINDS = {
    stat.S_ISDIR: "a folder",
    stat.S_ISFIFO: "a named pipe",
    stat.S_ISSOCK: "a socket",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
}


class _Refused(Exception):
    """An input entry that is not read: the message says why."""


@dataclass(frozen=True)
class InputFile:
    """One image of the input: its ``path`` (relative to the folder, or the archive
    member's name as stored) and its bytes, or ``error``, why it was skipped."""

    path: str
    data: bytes | None
    error: str | None = None


@dataclass(frozen=True)
class _Entry:
    path: str
    source: Path | zipfile.ZipInfo | None  # what to read; None when refused
    error: str | None = None


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")


def _folder_entry(root: Path, entry: Path) -> _Entry:
    """What to read for ``entry`` (a file under ``root``, maybe a link), or why not."""
    path = entry.relative_to(root).as_posix()
    try:
        mode = os.stat(entry).st_mode  # follows links
    except OSError as exc:
        if entry.is_symlink():
            reasons = {errno.ELOOP: "a symbolic link loop", errno.ENOENT: "a dangling link"}
            reason = reasons.get(exc.errno, f"a link that cannot be followed: {exc.strerror}")
            return _Entry(path, None, f"{reason} (to {os.readlink(entry)})")
        return _Entry(path, None, f"cannot be read: {exc.strerror}")
    target = Path(os.path.realpath(entry))
    link = f" (a link to {target})" if entry.is_symlink() else ""
    if not stat.S_ISREG(mode):
        return _Entry(path, None, f"not a regular file: {_kind(mode)}{link}")
    if not target.is_relative_to(root):  # links to files elsewhere are not read
        return _Entry(path, None, f"a link out of the input folder{link}")
    return _Entry(path, target)


def _folder_entries(folder: Path, suffixes: set[str]) -> list[_Entry]:
    """The files under ``folder`` (searched recursively) with one of ``suffixes``, and the
    entries that cannot be searched or read (links to folders are not followed), sorted
    by path."""
    root = folder.resolve()
    entries: list[_Entry] = []

    def unlisted(exc: OSError) -> None:
        where = Path(exc.filename or root)
        path = where.relative_to(root).as_posix() if where.is_relative_to(root) else str(where)
        entries.append(_Entry(path, None, f"a folder that cannot be listed: {exc.strerror}"))

    for parent, folders, files in os.walk(root, onerror=unlisted, followlinks=False):
        for name in folders:
            if (Path(parent) / name).is_symlink():  # os.walk does not go into it
                path = (Path(parent) / name).relative_to(root).as_posix()
                entries.append(_Entry(path, None, "a link to a folder: not followed"))
        for name in files:
            if PurePosixPath(name).suffix.lower() in suffixes:
                entries.append(_folder_entry(root, Path(parent) / name))
    return sorted(entries, key=lambda e: e.path)


def _bounded_read(stream: IO[bytes], limit: int, too_long: str) -> bytes:
    """At most ``limit`` bytes of ``stream``; ``_Refused(too_long)`` when it holds more."""
    chunks, size = [], 0
    while chunk := stream.read(min(_CHUNK, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise _Refused(too_long)
    return b"".join(chunks)


def _read_file(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (checked again once open), at most
    ``limit``."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise _Refused(f"cannot be read: {exc.strerror}") from None
    with open(fd, "rb", buffering=0) as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _Refused(f"not a regular file: {_kind(info.st_mode)}")
        if info.st_size > limit:
            raise _Refused(f"{info.st_size:,} bytes: over max_file_bytes ({limit:,})")
        try:
            return _bounded_read(file, limit, f"over max_file_bytes ({limit:,}) once read")
        except OSError as exc:
            raise _Refused(f"cannot be read: {exc.strerror}") from None


def _zip_entries(archive: zipfile.ZipFile, suffixes: set[str]) -> list[_Entry]:
    """The members with one of ``suffixes`` (folders ignored), by name; links stored in
    the archive and second members of the same name are refused."""
    entries, seen = [], set()
    for info in archive.infolist():
        if info.is_dir() or PurePosixPath(info.filename).suffix.lower() not in suffixes:
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            entries.append(_Entry(info.filename, None, "a symbolic link stored in the archive"))
        elif info.filename in seen:
            entries.append(_Entry(info.filename, None, "a second member with the same name"))
        else:
            entries.append(_Entry(info.filename, info))
        seen.add(info.filename)
    return sorted(entries, key=lambda e: e.path)


class InputImages:
    """The images of a folder or zip archive, read one at a time while iterated (again
    on each iteration): ``InputFile``s in path order, those that cannot be read with the
    reason instead of the bytes. ``len()`` counts them all."""

    def __init__(
        self,
        location: Path,
        entries: list[_Entry],
        archive: bool,
        max_file_bytes: int,
        max_archive_bytes: int,
    ):
        self.location, self._entries, self._archive = location, entries, archive
        self.max_file_bytes, self.max_archive_bytes = max_file_bytes, max_archive_bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[InputFile]:
        if not self._archive:
            for entry in self._entries:
                yield self._read(entry, lambda e: _read_file(e.source, self.max_file_bytes))
            return
        with zipfile.ZipFile(self.location) as archive:
            inflated = 0

            def member(entry: _Entry) -> bytes:
                nonlocal inflated
                info, left = entry.source, self.max_archive_bytes - inflated
                if info.file_size > self.max_file_bytes:
                    raise _Refused(
                        f"{info.file_size:,} bytes once inflated: over max_file_bytes "
                        f"({self.max_file_bytes:,})"
                    )
                if info.file_size > left:
                    raise _Refused(f"past max_archive_bytes ({self.max_archive_bytes:,})")
                too_long = (  # than its header says
                    f"over max_file_bytes ({self.max_file_bytes:,}) once inflated"
                    if self.max_file_bytes <= left
                    else f"past max_archive_bytes ({self.max_archive_bytes:,}) once inflated"
                )
                try:
                    with archive.open(info) as stream:
                        data = _bounded_read(stream, min(self.max_file_bytes, left), too_long)
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                    raise _Refused(f"a corrupt archive member: {exc}") from None
                except (RuntimeError, NotImplementedError) as exc:  # encrypted, compression
                    raise _Refused(f"an archive member that cannot be read: {exc}") from None
                inflated += len(data)
                return data

            for entry in self._entries:
                yield self._read(entry, member)

    @staticmethod
    def _read(entry: _Entry, read: Any) -> InputFile:
        if entry.error is not None:
            return InputFile(entry.path, None, entry.error)
        try:
            return InputFile(entry.path, read(entry))
        except _Refused as exc:
            return InputFile(entry.path, None, str(exc))


class _InputFiles(AbstractDataset[None, Any]):
    """Files read from ``path``; read-only."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def _is_zip(self) -> bool:
        """Whether ``path`` is a zip archive (a regular file: a pipe is not opened)."""
        try:
            regular = stat.S_ISREG(os.stat(self._path).st_mode)
        except OSError:
            return False
        return regular and zipfile.is_zipfile(self._path)

    def save(self, data: None) -> None:
        raise DatasetError(f"{type(self).__name__} is read-only")

    def _exists(self) -> bool:
        return self._path.exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class ImageFiles(_InputFiles):
    """Image files of a folder (searched recursively; links to folders not followed) or a
    zip archive, as ``InputImages``: ``path`` and ``data`` (bytes) of each, read while
    iterated; files with other suffixes are ignored, and the entries that cannot be read
    (links out of the folder, loops, devices, files or members over ``max_file_bytes``,
    members past ``max_archive_bytes`` in all) come with the reason instead of data."""

    def __init__(
        self,
        path: str,
        max_file_bytes: int = MAX_FILE_BYTES,
        max_archive_bytes: int = MAX_ARCHIVE_BYTES,
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__(path, metadata)
        limits = {"max_file_bytes": max_file_bytes, "max_archive_bytes": max_archive_bytes}
        for name, value in limits.items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise DatasetError(f"{name} must be a positive number of bytes, got {value!r}")
        self._max_file_bytes, self._max_archive_bytes = max_file_bytes, max_archive_bytes

    def load(self) -> InputImages:
        limits = (self._max_file_bytes, self._max_archive_bytes)
        if self._path.is_dir():
            entries = _folder_entries(self._path, IMAGE_SUFFIXES)
            return InputImages(self._path, entries, False, *limits)
        if self._is_zip():
            try:
                with zipfile.ZipFile(self._path) as archive:
                    entries = _zip_entries(archive, IMAGE_SUFFIXES)
            except (zipfile.BadZipFile, OSError) as exc:
                raise DatasetError(f"the zip archive {self._path} cannot be read: {exc}") from exc
            return InputImages(self._path, entries, True, *limits)
        raise SourceNotFoundError(
            f"no folder or zip archive of images at {self._path} (set the path of "
            "inference_images in the catalog)"
        )

    def _describe(self) -> dict[str, Any]:
        return super()._describe() | {
            "max_file_bytes": self._max_file_bytes,
            "max_archive_bytes": self._max_archive_bytes,
        }


class VideoFiles(_InputFiles):
    """Video files of a folder (searched recursively; links to folders not followed) as a
    table of ``path`` (relative), ``file`` (absolute, for OpenCV, which reads videos from
    files) and ``error``: why an entry is not read (a link out of the folder, a loop, a
    pipe or device...), ``None`` for those that are. Other files are ignored, and so is a
    zip archive (videos are read from folders)."""

    def load(self) -> pd.DataFrame:
        if self._is_zip():
            return pd.DataFrame(columns=["path", "file", "error"])
        if not self._path.is_dir():
            raise SourceNotFoundError(
                f"no folder of videos at {self._path} (set the path of inference_videos "
                "in the catalog)"
            )
        rows = [
            (e.path, None if e.source is None else str(e.source), e.error)
            for e in _folder_entries(self._path, VIDEO_SUFFIXES)
        ]
        return pd.DataFrame(rows, columns=["path", "file", "error"])
