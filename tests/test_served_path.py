"""The served-path benchmark's core on a real RAF-DB face: placing it in a picture,
matching a detection to it, and the served crop of its box."""

from __future__ import annotations

import sys
import zipfile

import cv2
import numpy as np
import pytest
from conftest import PROJECT

sys.path.insert(0, str(PROJECT / "benchmarks"))
import served_path  # noqa: E402

from fer_pipeline.data.schema import CLASSES  # noqa: E402
from fer_pipeline.runtime.config import RecognitionConfig  # noqa: E402
from fer_pipeline.runtime.faces import (  # noqa: E402
    FaceDetector,
    FaceRecogniser,  # noqa: E402
    crop,
)

SIDE = 128


@pytest.fixture(scope="module")
def face(shared_data):
    """RAF-DB's first aligned training face, 100 x 100 RGB."""
    with zipfile.ZipFile(shared_data / "rafdb/basic/Image/aligned.zip") as archive:
        data = archive.read("aligned/train_00001_aligned.jpg")
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), 1), cv2.COLOR_BGR2RGB)


def sized(face, side=SIDE):
    return cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC).astype(float)


@pytest.mark.parametrize("where", list(served_path.OFFSETS))
def test_the_placed_face_sits_where_it_was_asked(face, where):
    picture, box = served_path.place(face, SIDE, at=served_path.OFFSETS[where])
    assert picture.shape == (480, 640, 3) and picture.dtype == np.uint8
    x, y, w, h = box
    assert (w, h) == (SIDE, SIDE) and 0 <= x <= 640 - SIDE and 0 <= y <= 480 - SIDE
    if where == "corner":
        assert (x, y) == (640 - SIDE, 0)
    inset = SIDE // 16  # past the feathered edge: the face itself, plus noise
    inner = picture[y + inset : y + h - inset, x + inset : x + w - inset].astype(float)
    assert np.abs(inner - sized(face)[inset:-inset, inset:-inset]).mean() < 4
    # Around it, the face's own edges blurred outwards: its colours, not its features.
    if where == "centre":
        left = picture[y : y + h, x - SIDE // 4 : x - SIDE // 8].astype(float)
        assert np.abs(left.mean((0, 1)) - sized(face)[:, :8].mean((0, 1))).max() < 30
        assert left.std(1).mean() < sized(face).std(1).mean() / 2


def test_match_takes_the_detection_that_overlaps_the_placed_face_best():
    placed = (100, 100, 128, 128)
    assert served_path.iou(placed, placed) == 1.0
    assert served_path.iou(placed, (300, 300, 50, 50)) == 0.0
    inside, shifted, far = (110, 100, 110, 140), (160, 160, 128, 128), (400, 20, 90, 90)
    assert served_path.match([far, shifted, inside], placed) == inside
    assert served_path.match([far, shifted], placed) is None  # IoU 0.14: another face
    assert served_path.match([], placed) is None


def test_yunet_finds_the_placed_face_at_128_px(face):
    for at in served_path.OFFSETS.values():
        picture, box = served_path.place(face, SIDE, at=at)
        boxes = FaceDetector("yunet").detect(served_path.upload(picture))
        found = served_path.match(boxes, box)
        assert len(boxes) == 1 and found is not None, (at, box, boxes)
        assert served_path.iou(found, box) > 0.5


@pytest.mark.parametrize("margin", [RecognitionConfig().margin, 0.2])  # the API's, and wider
def test_the_served_crop_of_a_perfect_box_covers_the_face(face, margin):
    for where, at in served_path.OFFSETS.items():
        picture, box = served_path.place(face, SIDE, at=at)
        x, y, w, h = box
        cut = crop(picture, box, margin)
        grown = round(SIDE * margin)
        left, top = min(x, grown), min(y, grown)  # the margin clipped at the picture's edge
        assert cut.shape[:2] == (
            min(y + h + grown, 480) - y + top,
            min(x + w + grown, 640) - x + left,
        )
        if where == "centre":
            assert cut.shape[:2] == (SIDE + 2 * grown,) * 2
        covered = cut[top : top + h, left : left + w]
        assert covered.shape[:2] == (SIDE, SIDE)
        assert np.array_equal(covered, picture[y : y + h, x : x + w])  # all of the face


class Fixed:
    """A classifier that calls every crop its class ``label``, and records the crops."""

    classes = list(CLASSES)

    def __init__(self, label):
        self.label, self.crops = label, []

    def probabilities(self, crops):
        self.crops += list(crops)
        return np.eye(7)[[self.label] * len(crops)]


def test_serve_classifies_the_matched_box_with_the_api_margin(face):
    classifier = Fixed(3)
    faces = FaceRecogniser(classifier, FaceDetector("yunet"), RecognitionConfig().margin)
    picture, box = served_path.place(face, SIDE)
    served = served_path.serve(faces, served_path.upload(picture), box, whole=True)
    assert served.box is not None and served.extra == 0
    assert (served.label, served.placed, served.whole) == (3, 3, 3)
    detected, placed, whole = classifier.crops
    bx, by, bw, bh = served.box
    side = bw * (1 + 2 * RecognitionConfig().margin)  # the square as wide as the grown box
    assert detected.shape[0] == detected.shape[1] and abs(detected.shape[0] - side) <= 1
    assert placed.shape[:2] == (SIDE, SIDE) and whole.shape == picture.shape


def test_the_crop_of_a_tall_box_is_a_square_as_wide_as_the_box():
    """A detector's box is taller than the datasets' square crops: the crop is the
    square as wide as the box (grown by the margin), centred on it."""
    picture = np.arange(480 * 640, dtype=np.int64).reshape(480, 640)
    assert np.array_equal(crop(picture, (100, 100, 80, 100), 0.0), picture[110:190, 100:180])
    assert np.array_equal(crop(picture, (100, 100, 80, 100), 0.25), picture[90:210, 80:200])
