"""Generate a large synthetic AffectNet release from real faces, to measure the data
pipeline (ingestion, deduplication, splitting) at AffectNet's scale.

No copy of AffectNet can be obtained, so this writes one in the official layout to
``--out``: ``training.csv`` and ``validation.csv`` (and ``automatically_annotated.csv``
with ``--auto``) with all nine official columns, ``Manually_Annotated_Images/<n>/<hex>.jpg``
(and ``Automatically_Annotated_Images/``). Expression codes 0-10 come in the proportions
of the real ``training.csv``; validation holds 500 per code (proportionally fewer for a
small release). Every photo holds a real face of ``../shared/data`` (FER2013 or RAF-DB,
with a matching label for codes 0-6), flipped, turned by up to 10 degrees, scaled to
110-300 px, tinted (grey FER2013 faces) or colour-jittered and noised, then pasted into a
300-700 px photo on a soft background (gradients, blurred texture and shapes, sensor
noise) and saved as a JPEG of quality 75-95. The face box, 68 landmarks and
valence / arousal go into the CSV row.

Planted duplicates, listed in ``planted.csv`` (``a`` is the original, ``b`` the copy;
ids as the project names rows: AffectNet ``subDirectory_filePath``, FER+ ``00042``,
RAF-DB ``train_00001``), so deduplication can be scored:

- exact (``--exact-duplicates``): a byte-identical copy of another row's file under
  another name, with the same box;
- near, within AffectNet (half of ``--near-duplicates``): another row's face, only
  resized (0.8-1.25), in a new photo saved at another JPEG quality, its box shifted or
  cropped by up to 4 % of the side;
- near, across sources (the other half): a FER+ or RAF-DB face at its own appearance
  (no flip, turn or colour change), resized, in a new photo, box shifted the same way.

Other rows reuse the same real faces (about 51,000 of them) under different transforms,
so a large release also holds unplanted look-alikes. Each row is drawn from its own
seeded generator: the output depends on ``--seed`` and the arguments only. The photos
are made by a pool of ``--workers`` processes, in chunks; the CSV rows are written as
chunks finish. At the end it prints photos per second and bytes written.

    python benchmarks/scale_data.py --faces 20000 --out /tmp/affectnet20k
    python benchmarks/scale_data.py --faces 420299 --auto 1000000 --out /data/affectnet

The release is built from research-only data: never commit or share it.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import multiprocessing
import os
import shlex
import shutil
import sys
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import simplejpeg
from _scratch import SHARED_DATA
from pyarrow import csv as pa_csv
from tqdm import tqdm

from fer_pipeline.datasets.affectnet import OFFICIAL_COLUMNS

TRAINING_COUNTS = (74874, 134415, 25459, 14090, 6378, 3803, 24882, 3750, 33088, 11645, 82415)
"""Rows per expression code 0-10 in the real ``training.csv``: 0 neutral, 1 happy, 2 sad,
3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt, 8 none, 9 uncertain, 10 no-face."""
CODES = len(TRAINING_COUNTS)
VALIDATION_PER_CODE = 500
FER_TO_CODE = (6, 5, 4, 1, 2, 3, 0)
"""AffectNet code of each FER2013 emotion (0 angry ... 6 neutral)."""
RAF_TO_CODE = {1: 3, 2: 4, 3: 5, 4: 1, 5: 2, 6: 6, 7: 0}
"""AffectNet code of each RAF-DB label (1 surprise ... 7 neutral)."""
LABELLED = 7
"""Codes below this need a face of the same expression; 7-10 take any face."""
VALENCE_AROUSAL = (
    (0.0, 0.0),
    (0.65, 0.25),
    (-0.6, -0.2),
    (0.15, 0.65),
    (-0.45, 0.65),
    (-0.6, 0.35),
    (-0.55, 0.6),
    (-0.45, 0.25),
)
"""Mean valence and arousal of codes 0-7; codes 8-10 have -2 for both, as in the release."""
PARTS = (
    ("training.csv", "Manually_Annotated_Images"),
    ("validation.csv", "Manually_Annotated_Images"),
    ("automatically_annotated.csv", "Automatically_Annotated_Images"),
)
TRAINING, VALIDATION, AUTOMATIC = range(3)
REGULAR, EXACT, NEAR_WITHIN, NEAR_ACROSS = range(4)
FOLDERS = 1000
FACE_SIDES = (110, 300)
PHOTO_SIDES = (300, 700)
QUALITIES = (75, 95)
MAX_TURN = 10.0  # degrees
NEAR_SCALE = (0.8, 1.25)
NEAR_SHIFT = 0.04  # of the side
BYTES_PER_PHOTO = 45_000  # a generous estimate, for the disk-space check
NOISE_TILE = 1024
SPEC = [("index", "i8"), ("part", "i1"), ("code", "i1"), ("kind", "i1"), ("ref", "i8")]
"""One row of the plan: ``ref`` is the original row of an exact or near-within copy and
the face number of a near-across copy."""


def _landmark_template() -> np.ndarray:
    """68 points (iBUG order) of a frontal face in a unit square."""
    jaw = np.linspace(np.pi, 0, 17)
    points = [np.c_[0.5 + 0.45 * np.cos(jaw), 0.35 + 0.6 * np.sin(jaw)]]
    t = np.linspace(0, 1, 5)
    points += [np.c_[0.15 + 0.27 * t, 0.28 - 0.05 * np.sin(np.pi * t)]]  # brows
    points += [np.c_[0.58 + 0.27 * t, 0.28 - 0.05 * np.sin(np.pi * t)]]
    points += [np.c_[np.full(4, 0.5), np.linspace(0.37, 0.58, 4)]]  # nose
    points += [np.c_[np.linspace(0.4, 0.6, 5), 0.63 + 0.02 * np.sin(np.pi * t)]]
    eye = np.linspace(np.pi, -np.pi, 6, endpoint=False)
    for cx in (0.31, 0.69):
        points += [np.c_[cx + 0.08 * np.cos(eye), 0.4 - 0.03 * np.sin(eye)]]
    outer = np.linspace(np.pi, -np.pi, 12, endpoint=False)
    inner = np.linspace(np.pi, -np.pi, 8, endpoint=False)
    points += [np.c_[0.5 + 0.16 * np.cos(outer), 0.78 - 0.07 * np.sin(outer)]]
    points += [np.c_[0.5 + 0.1 * np.cos(inner), 0.78 - 0.025 * np.sin(inner)]]
    return np.concatenate(points).astype(np.float64)


LANDMARKS = _landmark_template()


@dataclass
class Faces:
    """The real faces: FER2013 (grey 48 px, kept as the CSV's text and parsed when
    used) first, then RAF-DB (colour 100 px, kept as JPEG)."""

    fer_rows: np.ndarray  # the data row in fer2013.csv of each FER2013 face
    fer_offsets: np.ndarray  # where each data row's pixels start in fer_text (and end)
    fer_text: np.ndarray  # the pixels column, as bytes
    raf: list[bytes]
    raf_names: list[str]  # stems of the label file's names: train_00001
    pools: list[np.ndarray]  # face numbers usable for each code 0-10

    def pixels(self, number: int) -> np.ndarray:
        """Face ``number``: (48, 48) grey or (100, 100, 3) RGB."""
        if number < len(self.fer_rows):
            row = self.fer_rows[number]
            text = self.fer_text[self.fer_offsets[row] : self.fer_offsets[row + 1]].tobytes()
            return np.fromstring(text, dtype=np.uint8, sep=" ").reshape(48, 48)
        return simplejpeg.decode_jpeg(self.raf[number - len(self.fer_rows)], colorspace="RGB")

    def source_id(self, number: int) -> tuple[str, str]:
        """The source and the id of face ``number`` as the project names them."""
        if number < len(self.fer_rows):
            return "ferplus", f"{self.fer_rows[number]:05d}"
        return "rafdb", self.raf_names[number - len(self.fer_rows)]


def load_faces(shared: Path) -> Faces:
    """Every FER2013 face that FER+ keeps (a unique ``Image name``) and every RAF-DB
    aligned face, with pools by AffectNet code."""
    table = pa_csv.read_csv(
        shared / "ferplus/fer2013.csv.gz",
        convert_options=pa_csv.ConvertOptions(
            include_columns=["emotion", "pixels"],
            column_types={"emotion": pa.int8(), "pixels": pa.string()},
        ),
    )
    emotion = table.column("emotion").to_numpy()
    text = table.column("pixels").combine_chunks()
    offsets = np.frombuffer(text.buffers()[1], np.int32)[text.offset : text.offset + len(text) + 1]
    names = pd.read_csv(shared / "ferplus/fer2013new.csv", usecols=["Image name"], dtype=str)
    names = names["Image name"].str.strip().replace("", np.nan)
    keep = (names.notna() & ~names.duplicated(keep=False)).to_numpy()
    fer_rows = np.flatnonzero(keep)
    fer_codes = np.array(FER_TO_CODE)[emotion[keep]]
    lines = (shared / "rafdb/basic/EmoLabel/list_patition_label.txt").read_text().split("\n")
    labels = [line.split() for line in lines if line.strip()]
    with zipfile.ZipFile(shared / "rafdb/basic/Image/aligned.zip") as archive:
        raf = [
            archive.read(f"aligned/{name.removesuffix('.jpg')}_aligned.jpg") for name, _ in labels
        ]
    raf_codes = np.array([RAF_TO_CODE[int(label)] for _, label in labels])
    codes = np.concatenate([fer_codes, raf_codes])
    everything = np.arange(len(codes))
    pools = [np.flatnonzero(codes == c) if c < LABELLED else everything for c in range(CODES)]
    stems = [name.removesuffix(".jpg") for name, _ in labels]
    fer_text = np.frombuffer(text.buffers()[2], np.uint8)
    return Faces(fer_rows, offsets, fer_text, raf, stems, pools)


# -- the plan ---------------------------------------------------------------------------


def proportional(total: int, weights) -> np.ndarray:
    """``total`` split in proportion to ``weights`` (largest remainders)."""
    weights = np.asarray(weights, dtype=np.float64)
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(counts - exact)[: total - counts.sum()]] += 1
    return counts


def default_validation(faces: int) -> int:
    """500 per code, or as many as the real release's share of validation (5500 of
    420,299) for a smaller one, at least one per code and at most half the rows."""
    share = round(faces * CODES * VALIDATION_PER_CODE / (sum(TRAINING_COUNTS) + 5500))
    return min(CODES * VALIDATION_PER_CODE, max(CODES, share), faces // 2)


def default_duplicates(faces: int) -> int:
    return max(10, round(0.002 * faces)) if faces >= 1000 else round(0.002 * faces)


def plan(args: argparse.Namespace, faces: Faces) -> np.ndarray:
    """One ``SPEC`` row per photo: training rows, then validation, then automatic."""
    rng = np.random.default_rng((args.seed, 0))
    training = args.faces - args.validation
    val_counts = np.full(CODES, args.validation // CODES)
    val_counts[rng.permutation(CODES)[: args.validation % CODES]] += 1
    codes = [
        rng.permutation(np.repeat(np.arange(CODES), counts))
        for counts in (
            proportional(training, TRAINING_COUNTS),
            val_counts,
            proportional(args.auto, TRAINING_COUNTS),
        )
    ]
    specs = np.zeros(args.faces + args.auto, dtype=SPEC)
    specs["index"] = np.arange(len(specs))
    specs["part"] = np.repeat([TRAINING, VALIDATION, AUTOMATIC], [len(c) for c in codes])
    specs["code"] = np.concatenate(codes)
    specs["ref"] = -1
    plant(specs[: args.faces], args, faces, rng)
    return specs


def plant(manual: np.ndarray, args: argparse.Namespace, faces: Faces, rng) -> None:
    """Turn rows of ``manual`` into exact and near copies: at least one in each of
    training and validation; each original is an ordinary row of the same code."""
    within = args.near_duplicates - args.near_duplicates // 2
    across = args.near_duplicates // 2
    copies = args.exact_duplicates + within + across
    if copies == 0:
        return
    first = []
    for part in (VALIDATION, TRAINING):
        rows = np.flatnonzero(manual["part"] == part)
        if rows.size and len(first) < copies:
            first.append(int(rng.choice(rows)))
    order = rng.permutation(len(manual))
    rest = order[~np.isin(order, first)]
    chosen = rng.permutation(np.concatenate([first, rest[: copies - len(first)]]).astype(int))
    kinds = [EXACT] * args.exact_duplicates + [NEAR_WITHIN] * within + [NEAR_ACROSS] * across
    ordinary = rest[copies - len(first) :]  # in random order
    codes = manual["code"][ordinary]
    originals = {c: ordinary[codes == c][:copies].tolist() for c in range(CODES)}
    for row, kind in zip(chosen.tolist(), kinds):
        manual["kind"][row] = kind
        code = int(manual["code"][row])
        if kind == NEAR_ACROSS:
            manual["ref"][row] = rng.choice(faces.pools[code])
            continue
        if not originals[code]:  # a tiny release: take any code, and the copy takes it too
            code = max(originals, key=lambda c: len(originals[c]))
            manual["code"][row] = code
        manual["ref"][row] = originals[code].pop()


# -- one photo --------------------------------------------------------------------------

_worker: dict = {}
"""The state of a worker process: faces, seed, output folder, noise tiles."""


def _init(faces: Faces, seed: int, out: Path) -> None:
    cv2.setNumThreads(1)
    noise = np.random.default_rng((seed, 1)).normal(0, 4, (NOISE_TILE, NOISE_TILE, 3))
    noise = noise.round().clip(-255, 255)
    _worker.update(
        faces=faces,
        seed=seed,
        out=out,
        plus=np.maximum(noise, 0).astype(np.uint8),
        minus=np.maximum(-noise, 0).astype(np.uint8),
        folders=set(),
    )


def _rng(index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng((_worker["seed"], index, stream))


def relative_path(seed: int, part: int, index: int) -> str:
    """``<folder>/<56 hex digits>.jpg``, like AffectNet's names."""
    digest = hashlib.sha224(f"{seed}/{part}/{index}".encode()).hexdigest()
    return f"{int(digest[:8], 16) % FOLDERS + 1}/{digest}.jpg"


def _noisy(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``pixels`` plus sensor noise, a random window of the worker's noise tiles."""
    h, w = pixels.shape[:2]
    y, x = (int(v) for v in rng.integers(0, NOISE_TILE - max(h, w), 2))
    plus = _worker["plus"][y : y + h, x : x + w]
    minus = _worker["minus"][y + 1 : y + 1 + h, x : x + w]
    return cv2.subtract(cv2.add(pixels, plus), minus)


@dataclass
class Face:
    """A face ready to paste: ``patch`` is the face (``side`` px) inside a margin of
    ``band`` px of reflected face that fades into the photo."""

    patch: np.ndarray  # (side + 2 band) square, RGB
    side: int
    band: int
    landmarks: np.ndarray  # (68, 2) in the face's own pixels
    quality: int  # of the JPEG it goes into


def _warp(
    pixels: np.ndarray, side: int, turn: float, flip: bool, rng: np.random.Generator
) -> tuple[np.ndarray, int, np.ndarray]:
    """``pixels`` scaled to ``side`` px (zoomed in so a turned face fills it), turned by
    ``turn`` degrees, in a reflected margin; and the landmarks (jittered a little) in the
    face's pixels. Turned at the source's size, then scaled up: one pass at full size."""
    band = max(4, side // 8)
    size = side + 2 * band
    n = pixels.shape[0]
    if flip:
        pixels = cv2.flip(pixels, 1)
    radians = math.radians(turn)
    small = round(n * size / side)
    zoom = (abs(math.cos(radians)) + abs(math.sin(radians))) * small * side / (n * size)
    matrix = cv2.getRotationMatrix2D((n / 2, n / 2), turn, zoom)
    matrix[:, 2] += small / 2 - n / 2
    turned = cv2.warpAffine(
        pixels, matrix, (small, small), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
    patch = cv2.resize(turned, (size, size), interpolation=cv2.INTER_LINEAR)
    points = (LANDMARKS + rng.normal(0, 0.01, LANDMARKS.shape)) * n
    if flip:
        points[:, 0] = n - points[:, 0]
    points = (points @ matrix[:, :2].T + matrix[:, 2]) * (size / small) - band
    return patch, band, points.clip(0, side)


def _regular_face(index: int, code: int) -> Face:
    """The face of an ordinary row: a real face of the row's expression, flipped, turned,
    scaled, re-coloured and noised."""
    rng = _rng(index, 1)
    quality = int(rng.integers(QUALITIES[0], QUALITIES[1] + 1))
    faces = _worker["faces"]
    pool = faces.pools[code]
    pixels = faces.pixels(int(pool[rng.integers(len(pool))]))
    contrast = rng.uniform(0.85, 1.15)
    offset = rng.uniform(-20, 20) + 128 * (1 - contrast)
    if pixels.ndim == 2:  # grey: mostly tinted like skin, sometimes left black and white
        gains = rng.uniform((1.0, 0.88, 0.72), (1.12, 1.0, 0.92))
        if rng.random() < 0.15:
            gains[:] = 1
        matrix = np.c_[contrast * gains, np.full(3, offset)]
    else:
        matrix = np.c_[np.diag(contrast * rng.uniform(0.9, 1.1, 3)), np.full(3, offset)]
    pixels = cv2.transform(pixels, matrix)  # at the source's size: cheap
    side = int(rng.integers(FACE_SIDES[0], FACE_SIDES[1] + 1))
    turn = float(rng.uniform(-MAX_TURN, MAX_TURN))
    patch, band, points = _warp(pixels, side, turn, bool(rng.random() < 0.5), rng)
    return Face(_noisy(patch, rng), side, band, points, quality)


def _real_face(number: int, rng: np.random.Generator) -> Face:
    """A real face at its own appearance, only scaled (the near-across copies)."""
    pixels = _worker["faces"].pixels(number)
    if pixels.ndim == 2:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    quality = int(rng.integers(QUALITIES[0], QUALITIES[1] + 1))
    lo, hi = _near_sides()
    side = int(rng.integers(lo, hi + 1))
    patch, band, points = _warp(pixels, side, 0.0, False, rng)
    return Face(patch, side, band, points, quality)


def _near_sides() -> tuple[int, int]:
    """Face sides whose box, shifted and cropped, stays within ``FACE_SIDES``."""
    return math.ceil(FACE_SIDES[0] / (1 - NEAR_SHIFT)), int(FACE_SIDES[1] / (1 + NEAR_SHIFT))


def _resized(face: Face, rng: np.random.Generator) -> Face:
    """``face`` scaled by 0.8-1.25 for a JPEG of another quality (the near-within
    copies)."""
    lo, hi = _near_sides()
    factor = rng.uniform(max(NEAR_SCALE[0], lo / face.side), min(NEAR_SCALE[1], hi / face.side))
    side = round(face.side * factor)
    band = max(4, side // 8)
    size = side + 2 * band
    interpolation = cv2.INTER_AREA if size < face.patch.shape[0] else cv2.INTER_LINEAR
    patch = cv2.resize(face.patch, (size, size), interpolation=interpolation)
    others = [q for q in range(QUALITIES[0], QUALITIES[1] + 1) if abs(q - face.quality) >= 5]
    quality = int(rng.choice(others))
    return Face(patch, side, band, face.landmarks * side / face.side, quality)


@lru_cache(maxsize=1024)
def _mask(size: int, band: int) -> tuple[np.ndarray, np.ndarray]:
    """Blend weights of a patch (1 on the face, fading to 0 across the margin), and
    their complement."""
    ramp = np.minimum(np.arange(size) + 1, np.arange(size)[::-1] + 1) / (band + 1)
    ramp = np.minimum(ramp, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
    weights = np.minimum.outer(ramp, ramp).astype(np.float32)
    return weights, 1 - weights


def _colours(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` muted colours: random hues mixed with a grey."""
    grey = rng.integers(40, 220, (count, 1))
    return rng.uniform(0.3, 0.7, (count, 1)) * (rng.integers(0, 256, (count, 3)) - grey) + grey


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A soft scene: a colour gradient under blurred blotches and shapes, built at a
    quarter of the size and scaled up, then a few sharp lines and sensor noise."""
    w, h = width // 4, height // 4
    corners = _colours(rng, 4).reshape(2, 2, 3).astype(np.uint8)
    small = cv2.resize(corners, (w, h), interpolation=cv2.INTER_LINEAR)
    grain = int(rng.integers(3, 12))
    blotches = rng.integers(0, 256, (h // grain + 2, w // grain + 2), dtype=np.uint8)
    blotches = cv2.resize(blotches, (w, h), interpolation=cv2.INTER_CUBIC)
    blotches = cv2.cvtColor(blotches, cv2.COLOR_GRAY2RGB)
    small = cv2.addWeighted(small, 1 - (mix := rng.uniform(0.1, 0.4)), blotches, mix, 0)
    shapes = int(rng.integers(2, 8))
    for colour, (x, y, a, b), kind in zip(
        _colours(rng, shapes).tolist(),
        rng.integers(0, (w, h, w // 2 + 1, h // 2 + 1), (shapes, 4)).tolist(),
        rng.random(shapes),
    ):
        if kind < 0.5:
            cv2.rectangle(small, (x, y), (x + a, y + b), colour, -1)
        else:
            cv2.ellipse(small, (x, y), (a // 2 + 1, b // 2 + 1), 0, 0, 360, colour, -1)
    blur = int(rng.integers(1, 4)) * 2 + 1
    small = cv2.blur(small, (blur, blur))
    canvas = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    lines = int(rng.integers(0, 4))
    for colour, (x0, y0, x1, y1) in zip(
        _colours(rng, lines).tolist(), rng.integers(0, (width, height) * 2, (lines, 4)).tolist()
    ):
        cv2.line(canvas, (x0, y0), (x1, y1), colour, 2)
    return _noisy(canvas, rng)


def _photo(face: Face, rng: np.random.Generator, shift: bool):
    """``face`` pasted into a new photo: the photo, and the face box (shifted and cropped
    by up to 4 % of the side when ``shift``) and landmarks in the photo's pixels."""
    side, band = face.side, face.band
    lo = max(PHOTO_SIDES[0], int(side * 1.15))
    width, height = (int(v) for v in rng.integers(lo, PHOTO_SIDES[1] + 1, 2))
    canvas = _background(rng, width, height)
    x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    size = side + 2 * band
    x0, y0 = max(0, x - band), max(0, y - band)
    x1, y1 = min(width, x - band + size), min(height, y - band + size)
    px, py = x0 - (x - band), y0 - (y - band)
    weights, rest = _mask(size, band)
    window = (slice(py, py + y1 - y0), slice(px, px + x1 - x0))
    canvas[y0:y1, x0:x1] = cv2.blendLinear(
        np.ascontiguousarray(face.patch[window]),
        np.ascontiguousarray(canvas[y0:y1, x0:x1]),
        np.ascontiguousarray(weights[window]),
        np.ascontiguousarray(rest[window]),
    )
    box = [x, y, side, side]
    if shift:
        dx, dy, dw, dh = rng.uniform(-NEAR_SHIFT, NEAR_SHIFT, 4) * side
        w = min(max(round(side + dw), FACE_SIDES[0]), FACE_SIDES[1])
        h = min(max(round(side + dh), FACE_SIDES[0]), FACE_SIDES[1])
        box = [
            min(max(round(x + dx), 0), width - w),
            min(max(round(y + dy), 0), height - h),
            w,
            h,
        ]
    points = face.landmarks + (x, y)
    points = points.clip((box[0], box[1]), (box[0] + box[2], box[1] + box[3]))
    return canvas, box, points


def _encode(pixels: np.ndarray, quality: int) -> bytes:
    return simplejpeg.encode_jpeg(
        pixels, quality=quality, colorspace="RGB", colorsubsampling="420", fastdct=True
    )


def _line(path: str, box: list[int], points: np.ndarray, code: int, rng) -> str:
    """A CSV row (the landmarks hold no comma, so nothing needs quoting)."""
    if code < len(VALENCE_AROUSAL):
        va = np.clip(rng.normal(VALENCE_AROUSAL[code], 0.2), -1, 1)
        valence, arousal = f"{va[0]:.6f}", f"{va[1]:.6f}"
    else:
        valence = arousal = "-2"
    landmarks = (LANDMARK_FORMAT % tuple(points.ravel().tolist()))[:-1]
    return f"{path},{box[0]},{box[1]},{box[2]},{box[3]},{landmarks},{code},{valence},{arousal}\n"


LANDMARK_FORMAT = "%.2f;" * LANDMARKS.size


def _row(index: int, code: int, kind: int, ref: int, path: str) -> tuple[bytes, str]:
    """The JPEG and CSV row of one row of the plan."""
    if kind == NEAR_ACROSS:
        rng = _rng(index, 1)
        face = _real_face(ref, rng)
    elif kind == NEAR_WITHIN:
        rng = _rng(index, 1)
        face = _resized(_regular_face(ref, code), rng)
    else:  # an exact copy is its original made again
        index = ref if kind == EXACT else index
        face = _regular_face(index, code)
    rng = _rng(index, 2)
    pixels, box, points = _photo(face, rng, shift=kind in (NEAR_WITHIN, NEAR_ACROSS))
    return _encode(pixels, face.quality), _line(path, box, points, code, rng)


def make_chunk(specs: np.ndarray) -> tuple[list[tuple[int, str]], int]:
    """Write the photos of ``specs``; their CSV rows (with their part) and bytes."""
    seed, out, folders = _worker["seed"], _worker["out"], _worker["folders"]
    rows, written = [], 0
    for index, part, code, kind, ref in specs.tolist():
        path = relative_path(seed, part, index)
        data, line = _row(index, code, kind, ref, path)
        file = out / PARTS[part][1] / path
        if file.parent not in folders:
            file.parent.mkdir(parents=True, exist_ok=True)
            folders.add(file.parent)
        file.write_bytes(data)
        written += len(data)
        rows.append((part, line))
    return rows, written


# -- the release ------------------------------------------------------------------------


def write_planted(specs: np.ndarray, faces: Faces, seed: int, path: Path) -> int:
    """``planted.csv``: one row per copy; ``a`` is the original, ``b`` the copy."""
    lines = ["kind,scope,a_source,a_id,b_source,b_id\n"]
    for spec in specs[specs["kind"] != REGULAR]:
        kind, copy = int(spec["kind"]), relative_path(seed, int(spec["part"]), int(spec["index"]))
        if kind == NEAR_ACROSS:
            source, original = faces.source_id(int(spec["ref"]))
        else:
            ref = int(spec["ref"])
            source, original = "affectnet", relative_path(seed, int(specs["part"][ref]), ref)
        name = "exact" if kind == EXACT else "near"
        scope = "across" if kind == NEAR_ACROSS else "within"
        lines.append(f"{name},{scope},{source},{original},affectnet,{copy}\n")
    path.write_text("".join(lines))
    return len(lines) - 1


README = """\
SYNTHETIC AffectNet-layout release, made by benchmarks/scale_data.py of the fer_pipeline
project to measure its data pipeline at scale. It is NOT AffectNet.

Every photo holds a real face taken from FER2013 / FER+ and RAF-DB, which are licensed
for non-commercial research use only. Do not commit this folder to any repository and do
not share or publish it; delete it when the measurement is done.

How it was made:
    {command}

{faces} manual rows (training.csv + validation.csv), {auto} automatic rows. Each photo is a
real face (label matched for codes 0-6), flipped, turned, scaled, re-coloured and noised,
pasted on a synthetic background. planted.csv lists the planted exact and near
duplicates (a: the original, b: the copy).
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, required=True, help="rows of training + validation")
    parser.add_argument("--out", type=Path, required=True, help="an empty or new folder")
    parser.add_argument("--auto", type=int, default=0, help="rows of automatically_annotated")
    parser.add_argument("--validation", type=int, help="validation rows (default: 500 a code)")
    parser.add_argument("--exact-duplicates", type=int, help="default: 0.2 %% of --faces")
    parser.add_argument("--near-duplicates", type=int, help="default: 0.2 %% of --faces")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", type=Path, default=SHARED_DATA, help="the real data")
    parser.add_argument(
        "--force", action="store_true", help="write into a non-empty --out (what is there stays)"
    )
    args = parser.parse_args(argv)
    if args.faces < 2 or args.auto < 0 or args.workers < 1:
        parser.error("--faces must be at least 2, --auto at least 0, --workers at least 1")
    if args.validation is None:
        args.validation = default_validation(args.faces)
    if args.exact_duplicates is None:
        args.exact_duplicates = default_duplicates(args.faces)
    if args.near_duplicates is None:
        args.near_duplicates = default_duplicates(args.faces)
    if not 0 < args.validation < args.faces:
        parser.error(f"--validation must be between 1 and {args.faces - 1}")
    within = args.near_duplicates - args.near_duplicates // 2
    needed = 2 * (args.exact_duplicates + within) + args.near_duplicates // 2
    if min(args.exact_duplicates, args.near_duplicates) < 0 or needed > args.faces:
        parser.error(f"the duplicates and their originals need {needed} rows of --faces")
    return args


def check_target(args: argparse.Namespace) -> None:
    """Refuse a non-empty ``--out`` (unless ``--force``) and a disk without room."""
    if args.out.exists() and not args.out.is_dir():
        sys.exit(f"{args.out} exists and is not a folder")
    if args.out.exists() and any(args.out.iterdir()) and not args.force:
        sys.exit(f"{args.out} is not empty: give an empty or new folder, or --force")
    existing = args.out
    while not existing.exists():
        existing = existing.parent
    needed = (args.faces + args.auto) * BYTES_PER_PHOTO
    free = shutil.disk_usage(existing).free
    if needed > free:
        sys.exit(
            f"{args.out}: about {needed / 1e9:.1f} GB needed ({BYTES_PER_PHOTO // 1000} KB a "
            f"photo) but only {free / 1e9:.1f} GB free"
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_target(args)
    started = time.perf_counter()
    faces = load_faces(args.shared)
    specs = plan(args, faces)
    loaded = time.perf_counter() - started
    print(f"{len(faces.fer_rows)} FER+ and {len(faces.raf)} RAF-DB faces loaded in {loaded:.1f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    (args.out / "README.txt").write_text(
        README.format(command=command, faces=args.faces, auto=args.auto)
    )
    planted = write_planted(specs, faces, args.seed, args.out / "planted.csv")
    chunk = min(256, max(8, math.ceil(len(specs) / (8 * args.workers))))
    chunks = [specs[i : i + chunk] for i in range(0, len(specs), chunk)]
    parts = PARTS if args.auto else PARTS[:AUTOMATIC]
    written, started = 0, time.perf_counter()
    with ExitStack() as stack:
        files = [stack.enter_context(open(args.out / name, "w")) for name, _ in parts]
        for file in files:
            file.write(",".join(OFFICIAL_COLUMNS) + "\n")
        if args.workers == 1:
            _init(faces, args.seed, args.out)
            results = map(make_chunk, chunks)
        else:
            # forked workers share the faces (hundreds of MB) instead of unpickling copies
            fork = "fork" in multiprocessing.get_all_start_methods()
            pool = stack.enter_context(
                ProcessPoolExecutor(
                    args.workers,
                    mp_context=multiprocessing.get_context("fork" if fork else None),
                    initializer=_init,
                    initargs=(faces, args.seed, args.out),
                )
            )
            stack.callback(pool.shutdown, cancel_futures=True)  # on an error, drop the rest
            results = pool.map(make_chunk, chunks)
        bar = stack.enter_context(tqdm(total=len(specs), unit="photo", smoothing=0.05))
        for rows, size in results:
            for part, line in rows:
                files[part].write(line)
            written += size
            bar.update(len(rows))
    seconds = time.perf_counter() - started
    print(
        f"{len(specs)} photos ({args.faces - args.validation} training, {args.validation} "
        f"validation, {args.auto} automatic; {planted} planted copies) in {seconds:.1f} s "
        f"with {args.workers} workers: {len(specs) / seconds:.0f} photos/s, "
        f"{written / 1e9:.2f} GB ({written / len(specs) / 1000:.1f} KB a photo) in {args.out}"
    )


if __name__ == "__main__":
    main()
