"""Batch inference (the ``inference`` pipeline) on real faces: photos and videos."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from conftest import catalog_of, make_project
from serving_fixtures import GREY, photo, raf_faces, small_model, video

from fer_pipeline.images import decode_image, encode_jpeg
from fer_pipeline.modelling.export import to_onnx
from fer_pipeline.schema import CLASSES


@pytest.fixture(scope="module")
def faces(shared_data):
    return raf_faces(shared_data, 2)


@pytest.fixture(scope="module")
def bundle(shared_data):
    return small_model(shared_data)


def test_inference_pipeline(faces, bundle, small_raw, tmp_path, kedro_run):
    folder = tmp_path / "photos"
    (folder / "group").mkdir(parents=True)
    (folder / "group/two.jpg").write_bytes(photo(faces))
    (folder / "one.png").write_bytes(photo(faces[:1]))
    (folder / "empty.jpg").write_bytes(encode_jpeg(np.full((120, 160, 3), 200, np.uint8)))
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    (folder / "notes.txt").write_text("ignored")
    blank = encode_jpeg(np.full((220, 400, 3), GREY, np.uint8))
    scenes = [(photo(faces[:1]), 1.5), (blank, 1.0), (photo(faces), 1.5)]
    video(folder / "group/clip.mov", scenes)  # 4 s at 10 frames/s
    video(folder / "clip.avi", scenes[:1])
    (folder / "broken.mp4").write_bytes(b"not a video")
    catalog = {
        "inference_images": {"type": "fer_pipeline.datasets.ImageFiles", "path": str(folder)},
        "inference_videos": {"type": "fer_pipeline.datasets.VideoFiles", "path": str(folder)},
    }
    project = make_project(tmp_path / "project", small_raw, catalog=catalog)
    kedro_run(project, "data_processing")  # an empty catalog until a model exists
    catalog_of(project).save("model_onnx", to_onnx(bundle))
    kedro_run(project, "inference")
    data = catalog_of(project)
    found = data.load("inference_faces")
    assert found.groupby("path").size().to_dict() == {"group/two.jpg": 2, "one.png": 1}
    assert set(found["label"]) <= set(CLASSES)
    np.testing.assert_allclose(found[[f"p_{c}" for c in CLASSES]].sum(axis=1), 1, atol=1e-4)
    report = data.load("inference_report")
    assert report["no_face"] == ["empty.jpg"]
    assert [u["path"] for u in report["unreadable"]] == ["broken.jpg"]
    assert report["images"] == 4 and report["faces"] == 3
    annotated = data.load("annotated_images")
    assert sorted(annotated) == ["group/two.jpg", "one.jpg"]
    assert decode_image(annotated["one.jpg"]).shape == (220, 400, 3)

    # Videos: 2 frames a second (video_fps), one row per frame and face
    timeline = data.load("video_faces")
    clip = timeline[timeline["path"] == "group/clip.mov"]
    assert clip.groupby("time_s").size().to_dict() == {
        0.0: 1, 0.5: 1, 1.0: 1, 2.5: 2, 3.0: 2, 3.5: 2  # the blank second has no face
    }  # fmt: skip
    assert clip["frame"].tolist() == [0, 5, 10, 25, 25, 30, 30, 35, 35]
    probs = [f"p_{c}" for c in CLASSES]
    for _, face in found[found["path"] == "group/two.jpg"].iterrows():  # as in the photo
        rows = clip[(clip["time_s"] >= 2.5) & ((clip["x"] - face["x"]).abs() < 50)]
        centre = rows[["x", "y"]].to_numpy() + rows[["w", "h"]].to_numpy() / 2
        still = face[["x", "y"]].to_numpy() + face[["w", "h"]].to_numpy() / 2
        assert len(rows) == 3 and np.abs(centre - still.astype(float)).max() < 10  # mp4v: lossy
        assert (rows[probs] - face[probs]).abs().max().max() < 0.05
    report = data.load("video_report")
    assert report["videos"] == 3 and report["fps"] == 2
    assert [u["path"] for u in report["unreadable"]] == ["broken.mp4"]
    summary = {s["path"]: s for s in report["summaries"]}["group/clip.mov"]
    assert (summary["frames_sampled"], summary["frames_with_face"], summary["faces"]) == (8, 6, 9)
    assert sum(summary["emotion_share"].values()) == pytest.approx(1, abs=1e-3)
    assert summary["dominant"] in CLASSES
    (version,) = (project / "data/08_reporting/video_timelines").iterdir()
    plots = sorted(version.rglob("*.png"))
    assert [p.relative_to(version).as_posix() for p in plots] == [
        "video_timelines/clip.avi.png",
        "video_timelines/group/clip.mov.png",
    ]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in plots)


def test_image_files_reads_zips(faces, tmp_path):
    from fer_pipeline.datasets import ImageFiles

    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a/one.jpg", photo(faces[:1]))
        z.writestr("readme.md", "x")
    assert ImageFiles(str(archive)).load()["path"].tolist() == ["a/one.jpg"]
