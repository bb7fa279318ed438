"""Served-path accuracy: the test faces classified from the dataset's own crop (what the
evaluation does) against the same faces put through what the API does with a photo.

For a stratified sample of the test shards (``--faces`` per source, in the proportions
of the classes there), each face is

1. classified from its dataset crop, as the evaluation does
   (``OnnxClassifier.probabilities``);
2. placed in a photo (``place``): resized so that the dataset crop is ``side`` px
   (``--scales``, 64, 128 and 256: a face in a group photo, a portrait, a selfie) on a
   ``--canvas`` picture (640 x 480), at three places (``OFFSETS``: centre, off-centre,
   flush with a corner, where ``crop`` clips the margin), JPEG-encoded (quality 90) as
   an upload is, then decoded, searched and cropped by the API's own code
   (``decode_image``, then ``FaceRecogniser.find`` and ``classify``, built by
   ``recogniser_from_params`` from ``RecognitionConfig``'s defaults: YuNet, min face 48
   px, margin 0.2), the detection matched to the placed face by IoU (``match``);
3. with ``--whole``, the whole picture classified too (the API's ``detect=false``).

The background (``background``): the face's border pixels replicated outwards (OpenCV's
``BORDER_REPLICATE``) to fill the picture and blurred strongly (a Gaussian of a quarter
of the face's side); the face pasted sharp over it, feathered over 1/32 of its side;
sensor noise (sigma 3 grey levels) over the whole. Why: the served crop reaches past the
dataset crop (the margin around the detector's box), so what lies there must continue
the face's edges (hair, skin, the backdrop the dataset crop kept) in their colours and
brightness, as a photo's surroundings do; a flat grey or unrelated clutter would draw an
edge around every face that no photo has. Replicated rather than reflected: mirrored
copies of the face, even blurred, tile the picture with eye-like blobs, which YuNet took
for one large face on 2-3 pictures in 20 at 64 px; replicated streaks hold no features
(the table counts extra boxes). A sharp subject before a blurred backdrop is what
portraits look like. The limit: in a photo the band past the dataset crop is sharp
(ears, hair, collar); here it is blurred, so the figures measure the framing, the
detector's box, the resampling and the JPEG, not unseen detail there.

The table per source and scale (pictures: faces x the three places): the detection rate
(one box matching the placed face), then on the detected faces the accuracy of the
dataset crop, of the placed box cropped from the picture (the dataset's framing after
resizing, noise and JPEG: a detector that framed faces as the dataset does), and of the
served crop; the gap (dataset crop minus served crop) in points with a 95% interval
(paired: both crops of the same faces), top-1 agreement of the two, the median served
box's width and height over the dataset crop's side, extra boxes per picture, and with
``--whole`` the whole picture's accuracy.

    python benchmarks/served_path.py data/06_models/model.onnx --whole --out served_path.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fer_pipeline.data.images import decode_image, encode_jpeg
from fer_pipeline.data.schema import CLASSES
from fer_pipeline.data.shards import Shards
from fer_pipeline.data.versions import latest_split
from fer_pipeline.runtime.faces import Box, FaceRecogniser, recogniser_from_params
from fer_pipeline.runtime.recogniser import load_classifier, recognition_config

SCALES = (64, 128, 256)
"""Sides of the dataset crop in the photo, in px."""
OFFSETS = {"centre": (0.5, 0.5), "off-centre": (0.15, 0.8), "corner": (1.0, 0.0)}
"""Where the face goes: its top-left corner at these fractions of the room the picture
leaves (1.0, 0.0: flush with the top-right corner)."""
CANVAS = (480, 640)
"""The picture's height and width: a VGA photo."""
BLUR = 0.25
"""The background's Gaussian sigma, as a fraction of the face's side."""
NOISE = 3.0
"""Sensor noise over the whole picture, sigma in grey levels."""
QUALITY = 90
"""JPEG quality of the 'upload'."""
MIN_IOU = 0.3
"""A detection matches the placed face when their IoU reaches this. YuNet's box on a
placed face overlaps it by 0.6-0.8 (it is as wide as a dataset crop and taller: 1.3 x
the side on RAF-DB's aligned faces, 1.15 x on FER's); other boxes hardly touch it."""


def placement(side: int, canvas: tuple[int, int], at: tuple[float, float]) -> Box:
    """The box ``(x, y, side, side)`` of a face placed at ``at`` (fractions of the room
    left on each axis) in a picture of ``canvas`` (height, width)."""
    height, width = canvas
    if side > min(height, width):
        raise ValueError(f"a {side} px face does not fit in {width} x {height}")
    return round(at[0] * (width - side)), round(at[1] * (height - side)), side, side


def background(face: np.ndarray, box: Box, canvas: tuple[int, int]) -> np.ndarray:
    """The face (already ``box``'s size) with its border pixels replicated outwards to
    fill ``canvas``, blurred by ``BLUR`` of its side (float32; grey faces stay 2-D)."""
    x, y, side, _ = box
    height, width = canvas
    padded = cv2.copyMakeBorder(
        face, y, height - y - side, x, width - x - side, cv2.BORDER_REPLICATE
    )
    # A Gaussian of side/4 at full size is slow (a kernel of 1.5 x side): blur a copy
    # downscaled so that the face is 16 px, then upscale.
    factor = max(1, side // 16)
    small = cv2.resize(
        padded, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA
    ).astype(np.float32)
    small = cv2.GaussianBlur(small, (0, 0), BLUR * side / factor)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def place(
    face: np.ndarray,
    side: int,
    canvas: tuple[int, int] = CANVAS,
    at: tuple[float, float] = OFFSETS["centre"],
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, Box]:
    """A uint8 picture of ``canvas`` (height, width) showing ``face`` (uint8, grey or
    RGB) resized to ``side`` px at ``at`` on its ``background``, feathered over
    ``side / 32`` px at its edge, with ``NOISE``; and the face's box
    ``(x, y, side, side)``."""
    box = placement(side, canvas, at)
    x, y = box[:2]
    shrink = side < min(face.shape[:2])
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    sized = cv2.resize(face, (side, side), interpolation=interpolation)
    picture = background(sized, box, canvas)
    feather = max(1, side // 32)
    mask = np.zeros((side, side), np.float32)
    mask[feather:-feather, feather:-feather] = 1
    mask = cv2.blur(mask, (2 * feather + 1, 2 * feather + 1), borderType=cv2.BORDER_CONSTANT)
    if picture.ndim == 3:
        mask = mask[..., None]
    region = picture[y : y + side, x : x + side]
    region[:] = mask * sized + (1 - mask) * region
    rng = rng if rng is not None else np.random.default_rng(0)
    picture += NOISE * rng.standard_normal(picture.shape, dtype=np.float32)
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8), box


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0


def match(boxes: list[Box], placed: Box, min_iou: float = MIN_IOU) -> Box | None:
    """The detection that best overlaps the placed face (``None``: none reaches
    ``min_iou``)."""
    scored = [(iou(tuple(b), placed), tuple(b)) for b in boxes]
    best = max(scored, default=(0.0, None))
    return best[1] if best[0] >= min_iou else None


def upload(picture: np.ndarray, quality: int = QUALITY) -> np.ndarray:
    """The picture as the API receives it: JPEG-encoded, then decoded by its decoder."""
    return decode_image(encode_jpeg(picture, quality))


@dataclass
class Served:
    """What the served path made of one placed face."""

    box: Box | None  # the detection matched to the placed face
    label: int  # the served crop's top-1 (-1 when not found)
    placed: int  # the placed box's top-1, cropped without margin: the dataset's framing
    whole: int  # the whole picture's top-1 (-1 when not asked)
    extra: int  # boxes that do not match the placed face


def serve(faces: FaceRecogniser, picture: np.ndarray, placed: Box, whole: bool = False) -> Served:
    """The API's path on ``picture``: find the faces, classify the one on ``placed``;
    and the placed box itself, as a detector framing faces as the dataset does would."""
    timings: dict[str, float] = {}
    boxes = faces.find(picture, True, timings)
    box = match(boxes, placed)
    classes = list(faces.predictor.classes)
    label = whole_label = -1
    if box is not None:
        label = classes.index(faces.classify(picture, [box], timings)[0]["label"])
    x, y, w, h = placed
    placed_label = int(faces.predictor.probabilities([picture[y : y + h, x : x + w]])[0].argmax())
    if whole:
        whole_label = classes.index(faces.recognise(picture, detect=False)[0]["label"])
    return Served(box, label, placed_label, whole_label, len(boxes) - (box is not None))


def sample(shards: Path, per_source: int, seed: int) -> pd.DataFrame:
    """``per_source`` faces of each source, stratified by label (the source's class
    proportions), from the ``part-*.parquet`` shards in ``shards``."""
    frame = Shards(shards).read(["image", "label", "source"])
    chosen = []
    for _, rows in frame.groupby("source", sort=True):
        fraction = min(1.0, per_source / len(rows))
        chosen.append(rows.groupby("label").sample(frac=fraction, random_state=seed))
    return pd.concat(chosen, ignore_index=True)


def paired_gap(crop_right: np.ndarray, served_right: np.ndarray) -> tuple[float, float]:
    """Accuracy of the dataset crop minus the served crop's on the same faces, in
    points, and the half-width of its 95% interval (normal, paired)."""
    diff = crop_right.astype(float) - served_right.astype(float)
    if not len(diff):
        return float("nan"), float("nan")
    half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    return 100 * diff.mean(), 100 * half


def summarise(rows: pd.DataFrame) -> dict:
    """The figures of one group of results (columns ``label``, ``crop``, ``served``,
    ``found``, ``placed``, ``whole``, ``extra``, ``box_width``, ``box_height``)."""
    found = rows[rows["found"]]
    crop_right = (found["crop"] == found["label"]).to_numpy()
    served_right = (found["served"] == found["label"]).to_numpy()
    gap, half = paired_gap(crop_right, served_right)
    figures = {
        "pictures": len(rows),
        "detected": float(rows["found"].mean()),
        "crop_accuracy_all": float((rows["crop"] == rows["label"]).mean()),
        "crop_accuracy": float(crop_right.mean()) if len(found) else float("nan"),
        "served_accuracy": float(served_right.mean()) if len(found) else float("nan"),
        "placed_accuracy": float((found["placed"] == found["label"]).mean())
        if len(found)
        else float("nan"),
        "served_accuracy_all": float(((rows["served"] == rows["label"]) & rows["found"]).mean()),
        "gap_points": gap,
        "gap_ci95": half,
        "agreement": float((found["crop"] == found["served"]).mean()) if len(found) else 0.0,
        "extra_boxes": float(rows["extra"].mean()),
        "box_width": float(found["box_width"].median()),  # / the dataset crop's side
        "box_height": float(found["box_height"].median()),
    }
    if (rows["whole"] >= 0).all():
        figures["whole_accuracy"] = float((rows["whole"] == rows["label"]).mean())
    return figures


def table(results: pd.DataFrame, by: list[str], whole: bool) -> tuple[str, list[dict]]:
    """A Markdown table of ``summarise`` per group of ``by`` and all faces."""
    head = "| " + " | ".join(by) + " | pictures | detected | dataset crop | placed box | "
    head += "served crop | gap (points) | agreement | box (w x h) | extra boxes |"
    head += " whole picture |" if whole else ""
    lines = [head, "| " + " | ".join(["---"] * len(by)) + " |" + " ---: |" * (9 + whole)]
    groups = [(keys, rows) for keys, rows in results.groupby(by, sort=False)]
    groups.append((("all",) + ("",) * (len(by) - 1), results))
    records = []
    for keys, rows in groups:
        keys = keys if isinstance(keys, tuple) else (keys,)
        f = summarise(rows)
        records.append(dict(zip(by, keys)) | f)
        line = (
            f"| {' | '.join(str(k) for k in keys)} | {f['pictures']} | {f['detected']:.1%} | "
            f"{f['crop_accuracy']:.1%} | {f['placed_accuracy']:.1%} | "
            f"{f['served_accuracy']:.1%} | {f['gap_points']:+.1f} ± {f['gap_ci95']:.1f} | "
            f"{f['agreement']:.1%} | {f['box_width']:.2f} x {f['box_height']:.2f} | "
            f"{f['extra_boxes']:.2f} |"
        )
        lines.append(line + (f" {f['whole_accuracy']:.1%} |" if whole else ""))
    return "\n".join(lines), records


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    cv2.setNumThreads(args.threads)
    classifier, version = load_classifier(args.model, threads=args.threads)
    if list(classifier.classes) != list(CLASSES):
        raise SystemExit(f"the model's classes {classifier.classes} are not {list(CLASSES)}")
    chosen = (("detector", args.detector), ("margin", args.margin))
    settings = {k: v for k, v in chosen if v is not None}
    config = recognition_config(**settings)
    faces = recogniser_from_params(classifier, config.model_dump())
    data = sample(args.shards, args.faces, args.seed)
    pixels = [decode_image(image) for image in data["image"]]
    crop_labels = np.concatenate(
        [
            classifier.probabilities(pixels[i : i + 256]).argmax(1)
            for i in range(0, len(pixels), 256)
        ]
    )
    print(
        f"{version}: {classifier.spec.get('name')} at {classifier.image_size} px; "
        f"{len(data)} faces ({data['source'].value_counts().to_dict()}); "
        f"{config.detector}, margin {config.margin}, min face {config.min_face}; "
        f"canvas {args.canvas[1]}x{args.canvas[0]}",
        file=sys.stderr,
        flush=True,
    )
    rng = np.random.default_rng(args.seed)
    results = []
    for side in args.scales:
        for where, at in OFFSETS.items():
            for i, face in enumerate(pixels):
                picture, placed = place(face, side, args.canvas, at, rng)
                served = serve(faces, upload(picture, QUALITY), placed, args.whole)
                results.append(
                    {
                        "source": data["source"].iat[i],
                        "scale": side,
                        "offset": where,
                        "label": int(data["label"].iat[i]),
                        "crop": int(crop_labels[i]),
                        "served": served.label,
                        "placed": served.placed,
                        "found": served.box is not None,
                        "box_width": served.box[2] / side if served.box else np.nan,
                        "box_height": served.box[3] / side if served.box else np.nan,
                        "whole": served.whole,
                        "extra": served.extra,
                    }
                )
            print(
                f"  {side} px {where}: {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    frame = pd.DataFrame(results)
    by_scale, scale_records = table(frame, ["source", "scale"], args.whole)
    by_offset, offset_records = table(frame, ["offset", "scale"], args.whole)
    seconds = time.perf_counter() - started
    print(f"\n{by_scale}\n\nPer place in the picture (both sources):\n\n{by_offset}")
    print(f"\n{seconds:.0f} s")
    report = {
        "model": str(args.model),
        "version": version,
        "spec": {k: classifier.spec.get(k) for k in ("name", "image_size", "epochs")},
        "shards": str(args.shards),
        "faces_per_source": args.faces,
        "seed": args.seed,
        "canvas": list(args.canvas),
        "scales": list(args.scales),
        "offsets": OFFSETS,
        "recognition": config.model_dump(),
        "jpeg_quality": QUALITY,
        "by_source_and_scale": scale_records,
        "by_offset_and_scale": offset_records,
        "seconds": seconds,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}")
    return report


def canvas_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return height, width


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="an exported .onnx file or its versions folder")
    parser.add_argument(
        "shards", type=Path, nargs="?",
        help="a folder of test part-*.parquet shards; default: the project's newest test split",
    )  # fmt: skip
    parser.add_argument("--faces", type=int, default=600, help="faces per source")
    parser.add_argument("--scales", type=int, nargs="+", default=list(SCALES))
    parser.add_argument("--canvas", type=canvas_size, default=CANVAS, help="WIDTHxHEIGHT")
    parser.add_argument("--detector", choices=["yunet", "haar"], help="default: the API's")
    parser.add_argument("--margin", type=float, help="default: the API's")
    parser.add_argument("--whole", action="store_true", help="also classify the whole picture")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime's and OpenCV's")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    args.shards = args.shards or latest_split(Path(__file__).resolve().parents[1], "test")
    return run(args)


if __name__ == "__main__":
    main()
