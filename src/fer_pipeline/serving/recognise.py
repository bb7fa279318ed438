"""Find faces in an image and classify each: shared by batch inference and the API."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from fer_pipeline.faces import DETECT_MAX_SIDE, MARGIN, Box, FaceDetector, crop


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
        return self.classify(pixels, self.find(pixels, detect, timings), timings)

    def find(self, pixels: np.ndarray, detect: bool, timings: dict[str, float]) -> list[Box]:
        """The face boxes, largest first (the whole image when ``detect`` is off)."""
        started = time.perf_counter()
        height, width = pixels.shape[:2]
        boxes = self.detector.detect(pixels) if detect else [(0, 0, width, height)]
        timings["detect"] = time.perf_counter() - started
        return boxes

    def classify(
        self, pixels: np.ndarray, boxes: list[Box], timings: dict[str, float]
    ) -> list[dict[str, Any]]:
        """One dict per box: ``box``, ``label`` and ``probabilities``. A box that is the
        whole image (``detect`` off: the image is one cropped face) is classified as it
        is, not cut square."""
        started = time.perf_counter()
        whole = (0, 0, pixels.shape[1], pixels.shape[0])
        probs = self.predictor.probabilities(
            [pixels if tuple(b) == whole else crop(pixels, b, self.margin) for b in boxes]
        )
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
