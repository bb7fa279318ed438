"""Face detectors on a realistic set built from real faces: faces found, false detections
and ms per image for YuNet (the default) and Haar.

The set (``realistic_set``): 640 x 480 pictures on synthetic cluttered backgrounds
(gradients, shapes, lines, sensor noise), each with 1-5 real faces (RAF-DB test faces in
colour and FER2013 PrivateTest faces in grey) of 56-200 px, half of them rotated by up
to 30 degrees, pasted with a soft elliptical edge, then JPEG-compressed; and
pictures of the same backgrounds with no face. FER2013 holds faces turned towards
profile too, unlabelled as such, so they come in at the rate the data has them; RAF-DB's
aligned faces are frontal. A face counts as found when a detection's centre lies within
a third of its side of the face's centre and its side is 0.5-2x the face's; every other
detection is false.

    python benchmarks/detectors.py                    # 60 pictures with faces, 20 without
"""

from __future__ import annotations

import argparse
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from _scratch import SHARED_DATA

from fer_pipeline.data.images import decode_image, encode_jpeg
from fer_pipeline.runtime.faces import FaceDetector

SIZE = (480, 640)  # height, width


@dataclass
class Picture:
    pixels: np.ndarray  # RGB
    faces: list[tuple[float, float, float, float]]  # centre x, centre y, side, angle
    sources: list[str]  # of each face: rafdb | fer2013


def real_faces(shared: Path, count: int, seed: int) -> list[tuple[np.ndarray, str]]:
    """``count`` real faces and their source, two thirds RAF-DB test (RGB, 100 px), one
    third FER2013 PrivateTest (grey, 48 px, as RGB), in a seeded random order."""
    rng = np.random.default_rng(seed)
    raf = count - count // 3
    with zipfile.ZipFile(shared / "rafdb/basic/Image/aligned.zip") as archive:
        numbers = rng.choice(np.arange(1, 3069), raf, replace=False)
        faces = [
            (decode_image(archive.read(f"aligned/test_{n:04d}_aligned.jpg")), "rafdb")
            for n in numbers
        ]
    fer = pd.read_csv(shared / "ferplus/fer2013.csv.gz", skiprows=range(1, 32299), nrows=2000)
    rows = fer[fer["Usage"] == "PrivateTest"].sample(count // 3, random_state=seed)
    for pixels in rows["pixels"]:
        grey = np.array(pixels.split(), dtype=np.uint8).reshape(48, 48)
        faces.append((cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB), "fer2013"))
    return [faces[i] for i in rng.permutation(len(faces))]


def background(rng: np.random.Generator) -> np.ndarray:
    """A cluttered scene without faces: a colour gradient, shapes, lines and noise."""
    height, width = SIZE
    ys, xs = np.mgrid[0:height, 0:width] / max(SIZE)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    canvas = (a * (1 - xs[..., None]) + b * ys[..., None]).clip(0, 255).astype(np.uint8)
    for _ in range(rng.integers(8, 20)):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        kind = rng.integers(3)
        if kind == 0:
            w, h = (int(v) for v in rng.integers(20, 200, 2))
            cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, -1)
        elif kind == 1:
            axes = tuple(int(v) for v in rng.integers(10, 120, 2))
            cv2.ellipse(canvas, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        else:
            end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(canvas, (x, y), end, colour, int(rng.integers(1, 8)))
    noise = rng.normal(0, 6, canvas.shape)
    return (canvas + noise).clip(0, 255).astype(np.uint8)


def paste(canvas: np.ndarray, face: np.ndarray, side: int, angle: float, x: int, y: int):
    """``face`` at ``side`` px, rotated by ``angle`` degrees, centred on (x, y), blended
    in with a soft elliptical edge."""
    resized = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    pad = side // 2
    patch = cv2.copyMakeBorder(resized, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    mask = np.zeros(patch.shape[:2], np.float32)
    centre = (patch.shape[1] // 2, patch.shape[0] // 2)
    cv2.ellipse(mask, centre, (int(side * 0.47), int(side * 0.5)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), side * 0.06)
    turn = cv2.getRotationMatrix2D(centre, angle, 1.0)
    patch = cv2.warpAffine(patch, turn, patch.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
    mask = cv2.warpAffine(mask, turn, mask.shape[::-1])[..., None]
    top, left = y - patch.shape[0] // 2, x - patch.shape[1] // 2
    region = canvas[top : top + patch.shape[0], left : left + patch.shape[1]]
    region[:] = (patch * mask + region * (1 - mask)).astype(np.uint8)


def realistic_set(
    shared: Path, pictures: int, empty: int, seed: int = 0
) -> tuple[list[Picture], list[np.ndarray]]:
    """``pictures`` pictures with 1-5 real faces each and ``empty`` without."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, pictures)
    faces = iter(real_faces(shared, int(counts.sum()), seed))
    height, width = SIZE
    out = []
    for count in counts:
        canvas, placed, sources = background(rng), [], []
        for _ in range(count):
            for _attempt in range(50):  # a place that overlaps no other face
                side = int(rng.integers(56, 201))
                margin = side  # the rotated, padded patch stays inside the picture
                x = int(rng.integers(margin, width - margin + 1)) if width > 2 * margin else -1
                y = int(rng.integers(margin, height - margin + 1)) if height > 2 * margin else -1
                clear = all(
                    abs(x - px) > (side + ps) * 0.6 or abs(y - py) > (side + ps) * 0.6
                    for px, py, ps, _ in placed
                )
                if x > 0 and y > 0 and clear:
                    break
            else:
                continue
            angle = float(rng.uniform(-30, 30)) if rng.random() < 0.5 else 0.0
            face, source = next(faces)
            paste(canvas, face, side, angle, x, y)
            placed.append((x, y, side, angle))
            sources.append(source)
        compressed = decode_image(encode_jpeg(canvas, 85))
        faces_placed = [tuple(float(v) for v in face) for face in placed]
        out.append(Picture(compressed, faces_placed, sources))
    return out, [decode_image(encode_jpeg(background(rng), 85)) for _ in range(empty)]


GROUPS = {
    "upright": lambda face, source: face[3] == 0,
    "rotated": lambda face, source: face[3] != 0,
    "rafdb": lambda face, source: source == "rafdb",
    "fer2013": lambda face, source: source == "fer2013",
    "under 100 px": lambda face, source: face[2] < 100,
}
"""Kinds of face whose recall is reported separately."""


def score(detector: FaceDetector, pictures: list[Picture], empty: list[np.ndarray]) -> dict:
    """Faces found (all, and per ``GROUPS``), false detections (on pictures with faces
    and without) and ms per picture."""
    found = false = false_empty = 0
    group_found = dict.fromkeys(GROUPS, 0)
    seconds = 0.0
    for picture in pictures:
        started = time.perf_counter()
        boxes = detector.detect(picture.pixels)
        seconds += time.perf_counter() - started
        matched = set()
        for x, y, w, h in boxes:
            cx, cy, side = x + w / 2, y + h / 2, (w + h) / 2
            hits = [
                i
                for i, (fx, fy, fs, _) in enumerate(picture.faces)
                if i not in matched
                and abs(cx - fx) < fs / 3
                and abs(cy - fy) < fs / 3
                and 0.5 * fs <= side <= 2 * fs
            ]
            if hits:
                matched.add(hits[0])
            else:
                false += 1
        found += len(matched)
        for name, member in GROUPS.items():
            group_found[name] += sum(member(picture.faces[i], picture.sources[i]) for i in matched)
    for pixels in empty:
        started = time.perf_counter()
        false_empty += len(detector.detect(pixels))
        seconds += time.perf_counter() - started
    faces = sum(len(p.faces) for p in pictures)
    group_total = {
        name: sum(member(f, s) for p in pictures for f, s in zip(p.faces, p.sources))
        for name, member in GROUPS.items()
    }
    return {
        "faces": faces,
        "found": found,
        "recall": found / faces,
        "recall_of": {name: group_found[name] / max(1, group_total[name]) for name in GROUPS},
        "false_on_faces": false,
        "false_on_empty": false_empty,
        "ms_per_picture": 1000 * seconds / (len(pictures) + len(empty)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=int, default=60)
    parser.add_argument("--empty", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pictures, empty = realistic_set(SHARED_DATA, args.pictures, args.empty, args.seed)
    rotated = "half rotated by up to 30 degrees"
    print(
        f"{len(pictures)} pictures {SIZE[1]}x{SIZE[0]} with "
        f"{sum(len(p.faces) for p in pictures)} faces of 56-200 px ({rotated}), "
        f"{len(empty)} without faces"
    )
    groups = " | ".join(GROUPS)
    print(
        f"| detector | faces found | {groups} | false detections (pictures with faces) | "
        f"false detections (no face) | ms per picture |\n" + "| --- " * (5 + len(GROUPS)) + "|"
    )
    for method in ("yunet", "haar"):
        figures = score(FaceDetector(method), pictures, empty)
        recalls = " | ".join(f"{v:.0%}" for v in figures["recall_of"].values())
        print(
            f"| {method} | {figures['found']} / {figures['faces']} ({figures['recall']:.0%}) | "
            f"{recalls} | {figures['false_on_faces']} | {figures['false_on_empty']} / "
            f"{len(empty)} | {figures['ms_per_picture']:.1f} |"
        )


if __name__ == "__main__":
    main()
