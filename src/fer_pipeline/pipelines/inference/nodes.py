"""Batch inference: every face in a folder or zip of images."""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from fer_pipeline.images import decode_image, encode_jpeg
from fer_pipeline.serving.classifier import OnnxClassifier
from fer_pipeline.serving.recognise import recogniser_from_params

logger = logging.getLogger(__name__)
FACE_COLUMNS = ("path", "face_index", "x", "y", "w", "h", "label")
"""The columns before the probabilities (``p_<class>``) of ``inference_faces``."""


def predicted_faces(
    images: pd.DataFrame, model_onnx: bytes, inference: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per face found (``path``, ``face_index``, box ``x, y, w, h``, ``label``,
    ``p_<class>``), and a report listing the images with no face and the unreadable
    files (skipped, with the reason). The model is the ONNX export, run by ONNX Runtime;
    with ``inference.model_uri`` (e.g. ``models:/fer_pipeline@champion``) that MLflow
    model's ONNX artifact replaces ``model_onnx``."""
    if inference.get("model_uri"):
        from fer_pipeline.tracking import load_registered_onnx

        model_onnx = load_registered_onnx(inference["model_uri"])
    model = OnnxClassifier(model_onnx)
    logger.info("Model %s from %s", model.spec["name"], inference.get("model_uri") or "model_onnx")
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
        "model": {k: model.spec.get(k) for k in ("name", "image_size", "val_accuracy")}
        | {"uri": inference.get("model_uri")},
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
