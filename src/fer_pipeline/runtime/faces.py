"""Faces in an image: detection with OpenCV (YuNet, whose ONNX file ships in this
package, or the Haar cascade shipped with OpenCV), the square crop, and
``FaceRecogniser``, which finds the faces and classifies each (batch inference, the API
and the Python API)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from fer_pipeline.data.images import to_gray

Box = tuple[int, int, int, int]
"""x, y, width, height in pixels."""
HAAR_CASCADE = "haarcascade_frontalface_alt2.xml"
YUNET_MODEL = Path(__file__).with_name("detectors") / "face_detection_yunet_2023mar.onnx"
"""OpenCV Zoo's YuNet (MIT, ``detectors/LICENSE-yunet.txt``), the default detector."""
MIN_FACE = 48
"""Default smallest face side in pixels: FER2013's own resolution. Smaller faces hold
too little expression detail to classify, and skipping them makes detection ~2x faster."""
DETECT_MAX_SIDE = 1920
"""Default longest side at which faces are searched; larger images are searched on a
downscaled copy. YuNet on a full 40-megapixel image takes 6 s and 3.1 GB here; at
1920 px, 0.3 s and ~0.2 GB, and a face of 48 px in a 7000 px photo is still 13 px."""
SCORE_THRESHOLD = 0.6
"""Default YuNet confidence below which a detection is dropped."""
MARGIN = 0.0
"""Default crop margin: this fraction of the face's width added on each side. 0: the
square crop as wide as the box is what the datasets' crops look like; 0.2 cost a weak
model 18 points against the dataset crop, 0 costs 2 (docs/evaluation.md, "Served-path
accuracy")."""
SEARCH_MIN_SIDE = 33
"""Images whose shorter side (once downscaled) is under this are not searched: YuNet
returns boxes of infinite size on them, and no face of a useful size fits."""


class FaceDetector:
    """``detect(pixels)`` -> face boxes, largest first.

    Args:
        method: ``yunet`` (OpenCV's YuNet; ``yunet_model`` another ONNX file than the
            one shipped) or ``haar`` (OpenCV's frontal-face cascade).
        min_face: smallest face side in pixels.
        score_threshold: YuNet's confidence threshold.
        max_side: images with a longer side are searched on a copy downscaled to it;
            boxes are in the image's own pixels.
    """

    def __init__(
        self,
        method: str = "yunet",
        yunet_model: str | None = None,
        min_face: int = MIN_FACE,
        score_threshold: float = SCORE_THRESHOLD,
        max_side: int = DETECT_MAX_SIDE,
    ):
        self.method, self.min_face, self.max_side = method, min_face, max_side
        self._yunet_model, self._score_threshold = yunet_model or str(YUNET_MODEL), score_threshold
        if method not in ("haar", "yunet"):
            raise ValueError(f"detector must be haar or yunet, got {method!r}")
        if method == "yunet" and not Path(self._yunet_model).is_file():
            raise FileNotFoundError(f"YuNet model file not found: {self._yunet_model}")
        self._per_thread = threading.local()
        self._engine()  # fails here, not on the first image, when OpenCV cannot load it

    def _engine(self) -> Any:
        """This thread's OpenCV detector: they keep per-image state (YuNet's input size),
        so threads that detect at once (the API's workers) each get their own."""
        engine = getattr(self._per_thread, "engine", None)
        if engine is None:
            if self.method == "haar":
                cascade = Path(cv2.data.haarcascades) / HAAR_CASCADE
                engine = cv2.CascadeClassifier(str(cascade))
                if engine.empty():
                    raise FileNotFoundError(f"OpenCV's Haar cascade is missing: {cascade}")
            else:
                engine = cv2.FaceDetectorYN.create(
                    self._yunet_model, "", (320, 320), self._score_threshold
                )
            self._per_thread.engine = engine
        return engine

    def detect(self, pixels: np.ndarray) -> list[Box]:
        height, width = pixels.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        min_face = max(1, round(self.min_face * scale))
        if min(size) < max(min_face, SEARCH_MIN_SIDE):  # a thin strip: no face fits
            return []
        if scale < 1:
            small = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
            boxes = [tuple(round(v / scale) for v in box) for box in self._detect(small, min_face)]
        else:
            boxes = self._detect(pixels, self.min_face)
        return sorted(boxes, key=lambda b: -b[2] * b[3])

    def _detect(self, pixels: np.ndarray, min_face: int) -> list[Box]:
        if self.method == "haar":
            found = self._engine().detectMultiScale(
                to_gray(pixels),
                scaleFactor=1.1,
                minNeighbors=5,
                minSize=(min_face, min_face),
            )
            return [tuple(int(v) for v in box) for box in found]
        bgr = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR if pixels.ndim == 2 else cv2.COLOR_RGB2BGR)
        yunet = self._engine()
        yunet.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, found = yunet.detect(bgr)
        return [
            tuple(int(round(v)) for v in row[:4])
            for row in (found if found is not None else [])
            if np.isfinite(row[:4]).all() and min(row[2], row[3]) >= min_face
        ]


def crop(pixels: np.ndarray, box: Box, margin: float) -> np.ndarray:
    """A square around the face in ``box``, clipped to the image: as wide as the box
    grown by ``margin`` of its width on each side, centred on the box. Square and as
    wide as the face, as the training crops are (FER+, RAF-DB): a detector's box is
    taller than wide, and squashing its crop into the model's square input costs
    accuracy (``benchmarks/served_path.py``)."""
    x, y, w, h = box
    half = w * (1 + 2 * margin) / 2
    cx, cy = x + w / 2, y + h / 2
    height, width = pixels.shape[:2]
    top, bottom = max(0, round(cy - half)), min(height, round(cy + half))
    return pixels[top:bottom, max(0, round(cx - half)) : min(width, round(cx + half))]


class Classifier(Protocol):
    """What classifies crops: ``OnnxClassifier`` (serving) or ``Predictor`` (PyTorch)."""

    classes: list[str]

    def probabilities(self, crops: Sequence[np.ndarray]) -> np.ndarray: ...


class FaceRecogniser:
    """``recognise(pixels)`` -> one dict per face, largest first: ``box`` ([x, y, w, h]),
    ``label`` and ``probabilities`` (class -> probability)."""

    def __init__(self, predictor: Classifier, detector: FaceDetector, margin: float = MARGIN):
        self.predictor, self.detector, self.margin = predictor, detector, margin

    def recognise(
        self, pixels: np.ndarray, detect: bool = True, timings: dict[str, float] | None = None
    ) -> list[dict[str, Any]]:
        """``timings``, when given, receives the seconds spent in ``detect`` and
        ``classify``."""
        timings = {} if timings is None else timings
        return self.classify(pixels, self.find(pixels, detect, timings), timings, detect)

    def find(self, pixels: np.ndarray, detect: bool, timings: dict[str, float]) -> list[Box]:
        """The face boxes, largest first (the whole image when ``detect`` is off)."""
        started = time.perf_counter()
        height, width = pixels.shape[:2]
        boxes = self.detector.detect(pixels) if detect else [(0, 0, width, height)]
        timings["detect"] = time.perf_counter() - started
        return boxes

    def classify(
        self,
        pixels: np.ndarray,
        boxes: list[Box],
        timings: dict[str, float],
        detected: bool = True,
    ) -> list[dict[str, Any]]:
        """One dict per box: ``box``, ``label`` and ``probabilities``. Detected boxes
        are cropped (``crop``); without detection (``detected`` false) the image is one
        cropped face and is classified as it is, not cut square."""
        started = time.perf_counter()
        crops = [crop(pixels, b, self.margin) for b in boxes] if detected else [pixels]
        probs = self.predictor.probabilities(crops)
        timings["classify"] = time.perf_counter() - started
        classes = self.predictor.classes
        return [
            {
                "box": list(box),
                "label": classes[int(p.argmax())],
                "probabilities": {c: round(float(v), 6) for c, v in zip(classes, p)},
            }
            for box, p in zip(boxes, probs)
        ]


def recogniser_from_params(classifier: Classifier, params: dict[str, Any]) -> FaceRecogniser:
    """A recogniser configured by ``inference`` parameters (or the API's settings)."""
    detector = FaceDetector(
        params["detector"],
        params.get("yunet_model"),
        params["min_face"],
        params["score_threshold"],
        params.get("detect_max_side", DETECT_MAX_SIDE),
    )
    return FaceRecogniser(classifier, detector, params["margin"])
