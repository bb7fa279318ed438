"""Batch inference: every face in a folder or zip of images, and in sampled frames of
the videos in a folder. A file that cannot be read, decoded or searched is skipped and
reported with its reason (``unreadable`` in the reports); it never stops the run."""

from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath
from typing import Any, Protocol

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image
from tqdm.auto import tqdm

from fer_pipeline.data.images import decode_image, encode_jpeg
from fer_pipeline.runtime.classifier import OnnxClassifier
from fer_pipeline.runtime.faces import FaceRecogniser, recogniser_from_params
from fer_pipeline.runtime.model_store import load_registered_onnx

from .config import InferenceConfig

logger = logging.getLogger(__name__)


class InputFile(Protocol):
    """An image of ``inference_images`` (``fer_pipeline.datasets.inputs.InputFile``): its
    ``path``, and its bytes or ``error``, why it was not read."""

    path: str
    data: bytes | None
    error: str | None


FACE_COLUMNS = ("path", "face_index", "x", "y", "w", "h", "label")
"""The columns before the probabilities (``p_<class>``) of ``inference_faces``."""
VIDEO_FACE_COLUMNS = ("path", "time_s", "frame", "face_index", "x", "y", "w", "h", "label")
"""The columns before the probabilities (``p_<class>``) of ``video_faces``."""
NO_VIDEO_PLOT = "no_video.png"
"""The one plot of ``video_timelines`` when no video could be read (a versioned dataset
must write something: Kedro looks its version up right after saving it)."""
SKIPPED = (ValueError, cv2.error)
"""What a bad image or video raises while decoded or searched (``ValueError``: corrupt,
truncated, too thin; ``cv2.error``: an OpenCV assertion): it is skipped and reported."""


def _reason(exc: Exception) -> str:
    """One line saying why a file was skipped."""
    text = " ".join(str(exc).split())
    return f"OpenCV failed: {text}" if isinstance(exc, cv2.error) else text


def _skip(unreadable: list[dict[str, str]], kind: str, path: str, reason: str) -> None:
    logger.warning("Skipping %s %s: %s", kind, path, reason)
    unreadable.append({"path": path, "error": reason})


def _classifier(model_onnx: bytes, inference: InferenceConfig) -> OnnxClassifier:
    """The ONNX export, or with ``inference.model_uri`` (e.g.
    ``models:/fer_pipeline@champion``) that MLflow model's ONNX artifact."""
    if inference.model_uri:
        model_onnx = load_registered_onnx(inference.model_uri)
    model = OnnxClassifier(model_onnx)
    logger.info("Model %s from %s", model.spec["name"], inference.model_uri or "model_onnx")
    return model


def _model_facts(model: OnnxClassifier, inference: InferenceConfig) -> dict[str, Any]:
    return {k: model.spec.get(k) for k in ("name", "image_size", "val_accuracy")} | {
        "uri": inference.model_uri
    }


def _pixels(data: bytes, max_pixels: int) -> np.ndarray:
    """The decoded image; ``ValueError`` when it cannot be decoded or its header claims
    more than ``max_pixels`` (read by Pillow before decoding)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError as exc:
        raise ValueError(str(exc)) from None
    except Exception:  # what Pillow raises for a broken header varies: the decoder judges
        width = height = 0
    if width * height > max_pixels:
        raise ValueError(
            f"the image is {width} x {height} pixels: over max_pixels ({max_pixels:,})"
        )
    return decode_image(data)


def _faces(recogniser: FaceRecogniser, image: InputFile, max_pixels: int) -> list[dict]:
    """The faces of one image; ``ValueError`` or ``cv2.error`` when it is skipped."""
    if image.data is None:
        raise ValueError(image.error)
    return recogniser.recognise(_pixels(image.data, max_pixels))


def predicted_faces(
    images: Iterable[InputFile], model_onnx: bytes, inference: InferenceConfig
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per face found (``path``, ``face_index``, box ``x, y, w, h``, ``label``,
    ``p_<class>``), and a report listing the images with no face and the unreadable
    files (skipped, with the reason: not read, not decoded, or failed in the detector).
    The model is the ONNX export, run by ONNX Runtime (``inference.model_uri``: an MLflow
    model's ONNX artifact instead). ``images`` are read one at a time. ``inference``:
    Kedro builds and checks it from the parameters before the run (a dict is checked
    here)."""
    inference = InferenceConfig.model_validate(inference)
    model = _classifier(model_onnx, inference)
    recogniser = recogniser_from_params(model, inference.recognition())
    rows, no_face, unreadable, count = [], [], [], 0
    total = len(images) if hasattr(images, "__len__") else None
    for image in tqdm(images, total=total, desc="inference", unit="img", mininterval=1.0):
        count += 1
        try:
            faces = _faces(recogniser, image, inference.max_pixels)
        except SKIPPED as exc:
            _skip(unreadable, "image", image.path, _reason(exc))
            continue
        if not faces:
            no_face.append(image.path)
        for index, face in enumerate(faces):
            probs = face["probabilities"].values()
            rows.append((image.path, index, *face["box"], face["label"], *probs))
    columns = [*FACE_COLUMNS, *(f"p_{c}" for c in model.classes)]
    report = {
        "images": count,
        "faces": len(rows),
        "images_with_faces": len({r[0] for r in rows}),
        "no_face": no_face,
        "unreadable": unreadable,
        "model": _model_facts(model, inference),
        "detector": inference.detector,
    }
    logger.info(
        "%d faces in %d images; %d without a face, %d unreadable",
        len(rows),
        count,
        len(no_face),
        len(unreadable),
    )
    return pd.DataFrame(rows, columns=columns), report


def member_name(path: str, taken: set[str]) -> str:
    """A safe, unique name in ``annotated_images.zip`` for the image at ``path``: relative
    (no leading ``/``, no drive letter), without ``..`` or ``.`` parts, and not in
    ``taken`` (compared case-insensitively; the name is added to it): ``a/b.png`` ->
    ``a/b.jpg``, or ``a/b.png.jpg`` when ``a/b.jpg`` is taken, then ``a/b.png-2.jpg``..."""
    parts = [p for p in re.split(r"[\\/]+", path) if p not in ("", ".", "..")]
    if parts:
        parts[0] = re.sub(r"^[A-Za-z]:", "", parts[0])  # C:/x.jpg, C:x.jpg
    parts = [re.sub(r"[\x00-\x1f:]", "_", p) for p in parts if p]
    name = "/".join(parts) or "image"
    stem = str(PurePosixPath(name).with_suffix("")) if PurePosixPath(name).suffix else name
    candidates = [f"{stem}.jpg", f"{name}.jpg"]
    candidates += (f"{name}-{n}.jpg" for n in range(2, len(taken) + 3))
    chosen = next(c for c in candidates if c.casefold() not in taken)
    taken.add(chosen.casefold())
    return chosen


def annotated_images(
    images: Iterable[InputFile], faces: pd.DataFrame, inference: InferenceConfig
) -> dict[str, bytes]:
    """JPEG copies of the images with a face, boxes and labels drawn (none when
    ``annotate`` is off), named by ``member_name``: relative, safe and unique."""
    inference = InferenceConfig.model_validate(inference)
    if not inference.annotate:
        return {}
    out: dict[str, bytes] = {}
    taken: set[str] = set()
    by_path = {str(path): group for path, group in faces.groupby("path", sort=False)}
    for image in images:
        group = by_path.get(image.path)
        if group is None or image.data is None:
            continue
        try:
            pixels = _pixels(image.data, inference.max_pixels)
        except SKIPPED as exc:  # it was read a moment ago: the file changed since
            logger.warning("Not annotating %s: %s", image.path, _reason(exc))
            continue
        canvas = np.ascontiguousarray(
            cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB) if pixels.ndim == 2 else pixels
        )
        thickness = max(1, round(max(canvas.shape[:2]) / 300))
        for face in group.itertuples():
            p = getattr(face, f"p_{face.label}")
            cv2.rectangle(
                canvas,
                (face.x, face.y),
                (face.x + face.w, face.y + face.h),
                (255, 200, 0),
                thickness,
            )
            cv2.putText(
                canvas,
                f"{face.label} {p:.0%}",
                (face.x, max(12, face.y - 4)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4 * thickness,
                (255, 200, 0),
                thickness,
            )
        out[member_name(image.path, taken)] = encode_jpeg(canvas, 90)
    return out


def sampled_frames(file: str, fps: float) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(frame number, time in s, RGB pixels)`` of the frames ``1 / fps`` s apart (all
    of them when the video has fewer), read with OpenCV. ``ValueError`` when the file
    cannot be read as a video."""
    capture = cv2.VideoCapture(file)
    try:
        native = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0
        if not native > 0:
            raise ValueError("OpenCV cannot read it as a video (unknown format or codec)")
        index, due, sampled = 0, 0.0, 0
        while capture.grab():  # grab() skips decoding the frames that are not sampled
            seconds = index / native
            if seconds + 0.5 / native >= due:
                ok, frame = capture.retrieve()
                if ok:
                    sampled += 1
                    yield index, seconds, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                # the first multiple of 1 / fps after this frame (no loop: any fps ends)
                due = (math.floor((seconds + 0.5 / native) * fps) + 1) / fps
            index += 1
        if not sampled:
            raise ValueError("no frame could be decoded")
    finally:
        capture.release()


def video_faces(
    videos: pd.DataFrame, model_onnx: bytes, inference: InferenceConfig
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Figure]]:
    """Every face in frames sampled ``inference.video_fps`` times a second: one row per
    frame and face (``path``, ``time_s``, ``frame``, ``face_index``, box, ``label``,
    ``p_<class>``); a report with a summary per video (frames sampled, frames with a
    face, the share of each emotion among its faces, the dominant one) and the
    unreadable files; and an emotion-over-time plot per video (``<path>.png``), or the
    one plot ``NO_VIDEO_PLOT`` saying so when no video was read (photos only)."""
    inference = InferenceConfig.model_validate(inference)
    model = _classifier(model_onnx, inference)
    recogniser = recogniser_from_params(model, inference.recognition())
    fps = inference.video_fps
    columns = [*VIDEO_FACE_COLUMNS, *(f"p_{c}" for c in model.classes)]
    tables, summaries, unreadable, plots = [], [], [], {}
    errors = videos["error"] if "error" in videos else [None] * len(videos)
    for path, file, error in zip(videos["path"], videos["file"], errors):
        if isinstance(error, str):  # refused by VideoFiles: a loop, a pipe, a device...
            _skip(unreadable, "video", path, error)
            continue
        rows, times = [], []
        try:
            bar = tqdm(sampled_frames(file, fps), desc=path, unit="frame", mininterval=1.0)
            for index, seconds, pixels in bar:
                times.append(round(seconds, 3))
                for n, face in enumerate(recogniser.recognise(pixels)):
                    box, probs = face["box"], face["probabilities"].values()
                    rows.append((path, times[-1], index, n, *box, face["label"], *probs))
        except SKIPPED as exc:
            _skip(unreadable, "video", path, _reason(exc))
            continue
        table = pd.DataFrame(rows, columns=columns)
        share = table["label"].value_counts(normalize=True)
        summary = {
            "path": path,
            "frames_sampled": len(times),
            "frames_with_face": int(table["time_s"].nunique()),
            "faces": len(table),
            "last_frame_s": times[-1],
            "emotion_share": {c: round(float(share.get(c, 0.0)), 4) for c in model.classes},
            "dominant": share.index[0] if len(share) else None,
        }
        tables.append(table)
        summaries.append(summary)
        plots[f"{path}.png"] = emotion_timeline(table, times, summary, model.classes)
    faces = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)
    report = {
        "videos": len(videos),
        "fps": fps,
        "summaries": summaries,
        "unreadable": unreadable,
        "model": _model_facts(model, inference),
        "detector": inference.detector,
    }
    logger.info("%d faces in %d videos; %d unreadable", len(faces), len(videos), len(unreadable))
    return faces, report, plots or {NO_VIDEO_PLOT: no_video_figure(len(videos))}


def no_video_figure(videos: int) -> Figure:
    """The plot ``video_timelines`` holds when no video was read: it says why."""
    figure = plt.figure(figsize=(6, 1.6))
    if not videos:
        text = "No video in the input folder (.mp4, .avi, .mov, .mkv): no timeline."
    else:
        text = f"None of the {videos} videos could be read: see video_report.json."
    figure.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return figure


def emotion_timeline(
    faces: pd.DataFrame, times: list[float], summary: dict[str, Any], classes: list[str]
) -> Figure:
    """The largest face's probability of each emotion at each sampled time; gaps where
    no face was found."""
    largest = faces[faces["face_index"] == 0].set_index("time_s").reindex(times)
    figure, axis = plt.subplots(figsize=(10, 3.6))
    for name in classes:
        axis.plot(largest.index, largest[f"p_{name}"], marker=".", label=name)
    ranked = sorted(summary["emotion_share"].items(), key=lambda kv: -kv[1])
    share = ", ".join(f"{c} {v:.0%}" for c, v in ranked if v > 0)
    axis.set(
        xlabel="time (s)",
        ylabel="probability (largest face)",
        ylim=(0, 1.05),
        title=f"{summary['path']}: {share or 'no face found'}",
    )
    axis.legend(loc="upper center", fontsize=8, ncol=len(classes), bbox_to_anchor=(0.5, -0.25))
    figure.tight_layout()
    return figure
