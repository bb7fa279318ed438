"""Decoding, encoding and hashing images; one decoder for the whole project."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np
import simplejpeg
from PIL import Image, PngImagePlugin
from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")

PHASH_SIZE = 32
"""Side of the grayscale thumbnail a perceptual hash is computed from."""
NEAR_THUMBNAIL_SIDE = 20
"""Side of the grayscale thumbnail stored with each face, on which near-duplicate
candidates are compared (``near_duplicates.shifted_correlation``)."""
_CHUNK = 256
MIN_SIDE = 8
"""Images with a shorter side are refused: a line of pixels, not a photo, and too thin
to search or resize (a 20000 x 1 strip downscales to nothing)."""
_EXIF_MARKERS = (b"Exif", b"eXIf", b"EXIF")  # JPEG's APP1, PNG's eXIf, WebP's EXIF chunk

PngImagePlugin.MAX_TEXT_CHUNK = 16 * 1024 * 1024
"""Pillow's ceiling on a PNG chunk's decompressed size (1 MB) applies to the ICC profile
too, and a valid photo's can weigh a few MB; 16 MB still stops a zlib bomb."""


class NotAnImage(ValueError):
    """Bytes that no image format recognises."""


class TooManyPixels(ValueError):
    """An image whose header claims more pixels than Pillow's decompression-bomb
    ceiling."""


@dataclass(frozen=True)
class Header:
    """What an image's header says, read without decoding its pixels."""

    format: str  # Pillow's name: JPEG, PNG, WEBP, ...
    width: int  # as stored, before the EXIF orientation turns it
    height: int
    orientation: int = 1  # EXIF orientation, 1-8


def read_header(data: bytes) -> Header:
    """The format, size and EXIF orientation of encoded bytes, parsed by Pillow from the
    header (segments and chunks, not pixels: an EXIF block is found wherever it lies).

    Raises ``NotAnImage`` when no format claims the bytes, ``TooManyPixels`` beyond
    Pillow's bomb ceiling and ``ValueError`` for a corrupt or truncated header.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            return Header(image.format, *image.size, _orientation(image))
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(str(exc)) from None
    except Exception as exc:  # what a plugin raises for a broken header varies
        raise _unreadable(data, exc) from None


def _unreadable(data: bytes, reason: object) -> ValueError:
    """``NotAnImage``, or the error for an image of a known format that is broken."""
    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        claimed = accept is not None and accept(data[:16])
        if claimed and not isinstance(claimed, str):
            return ValueError(f"corrupt or truncated {name} ({reason})")
    return NotAnImage("not an image (no known image format)")


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8) of an open image; 1 when absent or unreadable."""
    try:  # Image's own getexif: a PNG's would decode the pixels to look past them
        orientation = Image.Image.getexif(image).get(0x0112, 1)
    except Exception:  # a broken EXIF block does not make the pixels unreadable
        return 1
    return orientation if orientation in range(1, 9) else 1


def decode_image(data: bytes, header: Header | None = None) -> np.ndarray:
    """Decode encoded bytes to uint8 pixels: ``(H, W)`` grayscale or ``(H, W, 3)`` RGB,
    turned as their EXIF orientation says (from ``header`` when it was read already).

    Raises ``ValueError`` for bytes that are not a complete, intact image, and for an
    image with a side under ``MIN_SIDE``. JPEGs are decoded strictly (libjpeg-turbo
    through simplejpeg), in every colour space: corrupt or truncated entropy-coded data,
    which OpenCV and Pillow decode to noise with only a warning on stderr, is an error.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf[:2].tobytes() == b"\xff\xd8":
        if b"\xff\xd9" not in buf[-1024:].tobytes():
            raise ValueError("truncated JPEG (no end-of-image marker)")
        pixels = _decode_jpeg(data)
    else:
        pixels = cv2.imdecode(buf, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if pixels is None:
            raise _unreadable(data, "its data cannot be decoded")
        if pixels.ndim == 3:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    height, width = pixels.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ValueError(
            f"the image is {width} x {height} pixels: each side must be at least {MIN_SIDE}"
        )
    return upright(pixels, header.orientation if header else exif_orientation(data))


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1-8) of encoded bytes; 1 when absent or unreadable."""
    if not any(marker in data for marker in _EXIF_MARKERS):  # Pillow only when it may be
        return 1
    try:
        return read_header(data).orientation
    except ValueError:
        return 1


def upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """``pixels`` turned as the EXIF ``orientation`` says (as Pillow's
    ``ImageOps.exif_transpose``), so that boxes and sizes are those a viewer shows."""
    turned = {
        2: lambda p: p[:, ::-1],
        3: lambda p: p[::-1, ::-1],
        4: lambda p: p[::-1],
        5: lambda p: p.swapaxes(0, 1),
        6: lambda p: np.rot90(p, -1),
        7: lambda p: p[::-1, ::-1].swapaxes(0, 1),
        8: lambda p: np.rot90(p, 1),
    }.get(orientation)
    return pixels if turned is None else np.ascontiguousarray(turned(pixels))


def _decode_jpeg(data: bytes) -> np.ndarray:
    try:
        colorspace = simplejpeg.decode_jpeg_header(data)[2]
        if colorspace == "Gray":
            return simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True)[..., 0]
        if colorspace in ("YCbCr", "RGB"):
            return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
        return _cmyk_to_rgb(simplejpeg.decode_jpeg(data, colorspace="CMYK", strict=True))
    except ValueError as exc:
        raise ValueError(f"corrupt JPEG ({exc})") from None


def _cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """RGB of a CMYK or YCCK JPEG's decoded inks, which Adobe's writers (and libjpeg's,
    Pillow's) store inverted; OpenCV reads them so too."""
    inks = cmyk.astype(np.uint16)
    return ((inks[..., :3] * inks[..., 3:] + 127) // 255).astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode grayscale or RGB pixels as a lossless PNG."""
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def encode_jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    """Encode grayscale or RGB pixels as a JPEG."""
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def resized_rgb(pixels: np.ndarray, size: int) -> np.ndarray:
    """Grayscale or RGB pixels as a ``size`` square RGB image (a model's input)."""
    if not pixels.size:
        raise ValueError(f"cannot resize an empty image ({' x '.join(map(str, pixels.shape))})")
    if pixels.ndim == 2:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    h, w = pixels.shape[:2]
    interpolation = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_CUBIC
    return cv2.resize(pixels, (size, size), interpolation=interpolation)


def resized_to_side(pixels: np.ndarray, side: int) -> np.ndarray:
    """Pixels downscaled so that their longer side is ``side``, keeping the aspect."""
    h, w = pixels.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def to_gray(pixels: np.ndarray) -> np.ndarray:
    """Grayscale view of grayscale or RGB pixels."""
    return pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)


def pixel_hash(pixels: np.ndarray) -> str:
    """Hash of the decoded pixels and their shape; an RGB image with three equal
    channels hashes like its grayscale version."""
    if (
        pixels.ndim == 3
        and (pixels[..., 0] == pixels[..., 1]).all()
        and (pixels[..., 0] == pixels[..., 2]).all()
    ):
        pixels = pixels[..., 0]
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def phash_thumbnail(pixels: np.ndarray) -> np.ndarray:
    """The ``PHASH_SIZE`` square grayscale thumbnail that ``phashes`` reads."""
    return cv2.resize(to_gray(pixels), (PHASH_SIZE, PHASH_SIZE), interpolation=cv2.INTER_AREA)


def near_thumbnail(pixels: np.ndarray) -> bytes:
    """The ``NEAR_THUMBNAIL_SIDE`` square grayscale thumbnail of a face, as bytes."""
    side = NEAR_THUMBNAIL_SIDE
    return cv2.resize(to_gray(pixels), (side, side), interpolation=cv2.INTER_AREA).tobytes()


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m.astype(np.float32)


def phashes(thumbnails: np.ndarray) -> np.ndarray:
    """64-bit perceptual hashes (as int64) of ``(N, 32, 32)`` grayscale thumbnails:
    the signs of the 8x8 lowest DCT frequencies against their median."""
    d = _dct_matrix(PHASH_SIZE)
    coeffs = d @ thumbnails.astype(np.float32) @ d.T
    low = coeffs[:, :8, :8].reshape(len(thumbnails), 64)
    bits = low > np.median(low[:, 1:], axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64).view(np.int64)


def parallel_map(fn: Callable[[T], R], items: Sequence[T], *, desc: str) -> list[R]:
    """``[fn(x) for x in items]`` in chunks on a thread pool (OpenCV releases the GIL),
    with a progress bar named ``desc`` (none when empty); exceptions propagate
    unchanged."""
    chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    out: list[R] = []
    with (
        ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool,
        tqdm(total=len(items), desc=desc, unit="img", mininterval=1.0, disable=not desc) as bar,
    ):
        for done in pool.map(lambda chunk: [fn(x) for x in chunk], chunks):
            out.extend(done)
            bar.update(len(done))
    return out
