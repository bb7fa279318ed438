"""The detector benchmark's realistic set, built from real faces, and its scoring."""

from __future__ import annotations

import sys

import pytest
from conftest import PROJECT

sys.path.insert(0, str(PROJECT / "benchmarks"))
import detectors  # noqa: E402

from fer_pipeline.runtime.faces import FaceDetector  # noqa: E402


@pytest.fixture(scope="module")
def realistic(shared_data):
    return detectors.realistic_set(shared_data, pictures=8, empty=3, seed=1)


def test_the_set_has_several_faces_of_many_sizes_some_rotated(realistic):
    pictures, empty = realistic
    faces = [face for picture in pictures for face in picture.faces]
    assert len(faces) > len(pictures) and max(len(p.faces) for p in pictures) >= 3
    sides = [side for _, _, side, _ in faces]
    assert min(sides) >= 56 and max(sides) <= 200 and max(sides) - min(sides) > 60
    angles = [abs(angle) for *_, angle in faces]
    assert 0 < sum(a > 0 for a in angles) < len(faces) and max(angles) <= 30
    assert all(p.pixels.shape == (480, 640, 3) for p in pictures) and len(empty) == 3
    sources = {s for p in pictures for s in p.sources}
    assert sources == {"rafdb", "fer2013"}


class Oracle:
    """Returns the true faces' boxes, and one box more on every picture."""

    def __init__(self, pictures):
        self.truth = {id(p.pixels): p.faces for p in pictures}

    def detect(self, pixels):
        faces = self.truth.get(id(pixels), [])
        boxes = [(int(x - s / 2), int(y - s / 2), int(s), int(s)) for x, y, s, _ in faces]
        return boxes + [(0, 0, 60, 60)]


def test_scoring_counts_found_and_false_detections(realistic):
    pictures, empty = realistic
    figures = detectors.score(Oracle(pictures), pictures, empty)
    assert figures["found"] == figures["faces"] == sum(len(p.faces) for p in pictures)
    assert figures["false_on_faces"] == len(pictures) and figures["false_on_empty"] == len(empty)
    assert set(figures["recall_of"].values()) == {1.0}


def test_yunet_finds_most_faces_and_nothing_in_clutter(realistic):
    pictures, empty = realistic
    yunet = detectors.score(FaceDetector("yunet"), pictures, empty)
    haar = detectors.score(FaceDetector("haar"), pictures, empty)
    assert yunet["recall"] >= 0.8 and yunet["false_on_empty"] == 0
    assert yunet["recall_of"]["rotated"] > haar["recall_of"]["rotated"]  # a frontal cascade
