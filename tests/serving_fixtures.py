"""Real faces for the serving tests: RAF-DB test faces placed on larger canvases."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from conftest import VIT_RECIPE

from fer_pipeline.data.images import decode_image, encode_jpeg
from fer_pipeline.modelling.config import TrainConfig
from fer_pipeline.modelling.engine import fit
from fer_pipeline.modelling.models import ModelBundle
from fer_pipeline.modelling.tensors import images_to_tensor
from fer_pipeline.runtime.faces import FaceDetector

SLOTS = [(40, 50), (250, 60)]  # where faces go on a 400 x 220 canvas
GREY = 120


def raf_faces(shared: Path, count: int) -> list[np.ndarray]:
    """``count`` RAF-DB test faces that OpenCV's Haar cascade finds in their slot of
    ``photo`` (it misses some faces; this picks the test's faces, it asserts nothing)."""
    detector, found = FaceDetector("haar"), []
    with zipfile.ZipFile(shared / "rafdb/basic/Image/aligned.zip") as archive:
        for i in range(1, 200):
            face = decode_image(archive.read(f"aligned/test_{i:04d}_aligned.jpg"))
            slot = len(found)
            alone = [None] * slot + [face]
            if len(detector.detect(decode_image(photo(alone)))) == 1:
                found.append(face)
            if len(found) == count:
                return found
    raise AssertionError("not enough detectable faces")


def photo(faces: list[np.ndarray | None]) -> bytes:
    """A JPEG 'photo' with the faces at ``SLOTS`` (``None`` leaves a slot empty)."""
    canvas = np.full((220, 400, 3), GREY, np.uint8)
    for face, (x, y) in zip(faces, SLOTS):
        if face is not None:
            canvas[y : y + 100, x : x + 100] = face
    return encode_jpeg(canvas, 95)


def video(path: Path, scenes: list[tuple[bytes, float]], fps: int = 10) -> Path:
    """A video (codec from the suffix: MJPG for .avi, mp4v otherwise) showing each
    JPEG of ``scenes`` for its seconds."""
    import cv2

    frames = [(decode_image(image), seconds) for image, seconds in scenes]
    height, width = frames[0][0].shape[:2]
    codec = "MJPG" if path.suffix == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (width, height))
    for pixels, seconds in frames:
        for _ in range(round(seconds * fps)):
            writer.write(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def small_model(shared: Path) -> ModelBundle:
    """A real, quickly trained model: ViT-Tiny at 32 px, one epoch on 64 RAF-DB faces."""
    with zipfile.ZipFile(shared / "rafdb/basic/Image/aligned.zip") as archive:
        data = [archive.read(f"aligned/train_{i:05d}_aligned.jpg") for i in range(1, 65)]
    images = images_to_tensor(data, 32)
    labels = torch.arange(64) % 7
    shrunk = {"image_size": 32, "epochs": 1, "batch_size": 16, "warmup_epochs": 0, "device": "cpu"}
    config = TrainConfig(**{**VIT_RECIPE, **shrunk})
    bundle, _ = fit(images, torch.eye(7)[labels], images[:8], labels[:8], config)
    return bundle
