"""Batch inference: every face in a folder or zip of images, and in sampled frames of
the videos in a folder."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from fer_pipeline.images import decode_image, encode_jpeg
from fer_pipeline.serving.classifier import OnnxClassifier
from fer_pipeline.serving.recognise import recogniser_from_params

logger = logging.getLogger(__name__)
FACE_COLUMNS = ("path", "face_index", "x", "y", "w", "h", "label")
"""The columns before the probabilities (``p_<class>``) of ``inference_faces``."""
VIDEO_FACE_COLUMNS = ("path", "time_s", "frame", "face_index", "x", "y", "w", "h", "label")
"""The columns before the probabilities (``p_<class>``) of ``video_faces``."""


def _classifier(model_onnx: bytes, inference: dict[str, Any]) -> OnnxClassifier:
    """The ONNX export, or with ``inference.model_uri`` (e.g.
    ``models:/fer_pipeline@champion``) that MLflow model's ONNX artifact."""
    if inference.get("model_uri"):
        from fer_pipeline.tracking import load_registered_onnx

        model_onnx = load_registered_onnx(inference["model_uri"])
    model = OnnxClassifier(model_onnx)
    logger.info("Model %s from %s", model.spec["name"], inference.get("model_uri") or "model_onnx")
    return model


def _model_facts(model: OnnxClassifier, inference: dict[str, Any]) -> dict[str, Any]:
    return {k: model.spec.get(k) for k in ("name", "image_size", "val_accuracy")} | {
        "uri": inference.get("model_uri")
    }


def predicted_faces(
    images: pd.DataFrame, model_onnx: bytes, inference: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per face found (``path``, ``face_index``, box ``x, y, w, h``, ``label``,
    ``p_<class>``), and a report listing the images with no face and the unreadable
    files (skipped, with the reason). The model is the ONNX export, run by ONNX Runtime
    (``inference.model_uri``: an MLflow model's ONNX artifact instead)."""
    model = _classifier(model_onnx, inference)
    recogniser = recogniser_from_params(model, inference)
    rows, no_face, unreadable = [], [], []
    for path, data in tqdm(
        zip(images["path"], images["data"]),
        total=len(images),
        desc="inference",
        unit="img",
        mininterval=1.0,
    ):
        try:
            pixels = decode_image(data)
        except ValueError as exc:
            logger.warning("Skipping unreadable image %s: %s", path, exc)
            unreadable.append({"path": path, "error": str(exc)})
            continue
        faces = recogniser.recognise(pixels)
        if not faces:
            no_face.append(path)
        for index, face in enumerate(faces):
            rows.append((path, index, *face["box"], face["label"], *face["probabilities"].values()))
    columns = [*FACE_COLUMNS, *(f"p_{c}" for c in model.classes)]
    report = {
        "images": len(images),
        "faces": len(rows),
        "images_with_faces": len({r[0] for r in rows}),
        "no_face": no_face,
        "unreadable": unreadable,
        "model": _model_facts(model, inference),
        "detector": inference["detector"],
    }
    logger.info(
        "%d faces in %d images; %d without a face, %d unreadable",
        len(rows),
        len(images),
        len(no_face),
        len(unreadable),
    )
    return pd.DataFrame(rows, columns=columns), report


def annotated_images(
    images: pd.DataFrame, faces: pd.DataFrame, inference: dict[str, Any]
) -> dict[str, bytes]:
    """JPEG copies of the images with a face, boxes and labels drawn (none when
    ``annotate`` is off)."""
    if not inference["annotate"]:
        return {}
    out = {}
    by_path = dict(zip(images["path"], images["data"]))
    for path, group in faces.groupby("path", sort=True):
        pixels = decode_image(by_path[path])
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
        out[f"{path.rsplit('.', 1)[0]}.jpg"] = encode_jpeg(canvas, 90)
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
                while due <= seconds + 0.5 / native:
                    due += 1 / fps
            index += 1
        if not sampled:
            raise ValueError("no frame could be decoded")
    finally:
        capture.release()


def video_faces(
    videos: pd.DataFrame, model_onnx: bytes, inference: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Figure]]:
    """Every face in frames sampled ``inference.video_fps`` times a second: one row per
    frame and face (``path``, ``time_s``, ``frame``, ``face_index``, box, ``label``,
    ``p_<class>``); a report with a summary per video (frames sampled, frames with a
    face, the share of each emotion among its faces, the dominant one) and the
    unreadable files; and an emotion-over-time plot per video (``<path>.png``)."""
    model = _classifier(model_onnx, inference)
    recogniser = recogniser_from_params(model, inference)
    fps = float(inference["video_fps"])
    columns = [*VIDEO_FACE_COLUMNS, *(f"p_{c}" for c in model.classes)]
    tables, summaries, unreadable, plots = [], [], [], {}
    for path, file in zip(videos["path"], videos["file"]):
        rows, times = [], []
        try:
            bar = tqdm(sampled_frames(file, fps), desc=path, unit="frame", mininterval=1.0)
            for index, seconds, pixels in bar:
                times.append(round(seconds, 3))
                for n, face in enumerate(recogniser.recognise(pixels)):
                    box, probs = face["box"], face["probabilities"].values()
                    rows.append((path, times[-1], index, n, *box, face["label"], *probs))
        except ValueError as exc:
            logger.warning("Skipping unreadable video %s: %s", path, exc)
            unreadable.append({"path": path, "error": str(exc)})
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
        "detector": inference["detector"],
    }
    logger.info("%d faces in %d videos; %d unreadable", len(faces), len(videos), len(unreadable))
    return faces, report, plots


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
