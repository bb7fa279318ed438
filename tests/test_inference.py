"""Batch inference (the ``inference`` pipeline) on real faces: photos and videos, and
hostile input, which is skipped and reported, never a crash of the whole run."""

from __future__ import annotations

import os
import re
import struct
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import PROJECT, catalog_of, make_project, raises_in_chain
from kedro.validation import ParameterValidationError
from serving_fixtures import GREY, photo, video

from fer_pipeline.data.images import decode_image, encode_jpeg
from fer_pipeline.data.schema import CLASSES
from fer_pipeline.modelling.export import to_onnx

DEFAULTS = {  # every inference parameter, spelled out (a dict is accepted by the nodes)
    "model_uri": None,
    "detector": "yunet",
    "yunet_model": None,
    "min_face": 48,
    "score_threshold": 0.6,
    "margin": 0.0,
    "annotate": True,
    "video_fps": 2,
}


@pytest.fixture(scope="module")
def model_onnx(bundle) -> bytes:
    return to_onnx(bundle)


def inference_project(
    tmp_path: Path,
    source: Path,
    model_onnx: bytes | None = None,
    parameters: dict | None = None,
) -> Path:
    """A project whose inference reads the folder or zip ``source``, with ``model_onnx``
    saved as its latest export and ``parameters`` in conf/local."""
    catalog = {
        "inference_images": {"type": "fer_pipeline.datasets.ImageFiles", "path": str(source)},
        "inference_videos": {"type": "fer_pipeline.datasets.VideoFiles", "path": str(source)},
    }
    project = make_project(tmp_path / "project", tmp_path / "raw", parameters, catalog)
    if model_onnx is not None:
        catalog_of(project).save("model_onnx", model_onnx)
    return project


def test_inference_pipeline(faces, model_onnx, tmp_path, kedro_run):
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
    project = inference_project(tmp_path, folder, model_onnx)
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
    images = list(ImageFiles(str(archive)).load())
    assert [(i.path, i.data, i.error) for i in images] == [("a/one.jpg", photo(faces[:1]), None)]


def _thin_png(width: int, height: int) -> bytes:
    return cv2.imencode(".png", np.zeros((height, width, 3), np.uint8))[1].tobytes()


def _photos(faces) -> dict[str, bytes]:
    """Photos only: two faces in a subfolder, one face as a .png, and no face."""
    blank = encode_jpeg(np.full((120, 160, 3), 200, np.uint8))
    return {"group/two.jpg": photo(faces), "one.png": photo(faces[:1]), "empty.jpg": blank}


@pytest.mark.parametrize("layout", ["folder", "zip"])
def test_photos_only(layout, faces, model_onnx, tmp_path, kedro_run):
    """Issue 1: a folder or zip without videos ran to the end, then stopped on
    ``video_timelines: Did not find any versions``: Kedro looks a versioned dataset's
    version up right after saving it, and an empty dict of plots wrote no file."""
    if layout == "folder":
        source = tmp_path / "photos"
        for name, data in _photos(faces).items():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes(data)
    else:
        source = tmp_path / "photos.zip"
        with zipfile.ZipFile(source, "w") as archive:
            for name, data in _photos(faces).items():
                archive.writestr(name, data)
    project = inference_project(tmp_path, source, model_onnx)
    kedro_run(project, "inference")
    data = catalog_of(project)
    found = data.load("inference_faces")
    assert found.groupby("path").size().to_dict() == {"group/two.jpg": 2, "one.png": 1}
    report = data.load("inference_report")
    assert (report["images"], report["faces"], report["images_with_faces"]) == (3, 3, 2)
    assert (report["no_face"], report["unreadable"]) == (["empty.jpg"], [])
    assert sorted(data.load("annotated_images")) == ["group/two.jpg", "one.jpg"]
    videos = data.load("video_report")
    assert (videos["videos"], videos["summaries"], videos["unreadable"]) == (0, [], [])
    assert data.load("video_faces").empty
    (version,) = (project / "data/08_reporting/video_timelines").iterdir()
    assert [p.relative_to(version).as_posix() for p in version.rglob("*.png")] == [
        "video_timelines/no_video.png"
    ]


BAD_PARAMETERS = [
    # (inference parameters, what the message must say)
    (
        {"video_fsp": 5},
        [r"video_fsp", r"did you mean 'video_fps'", r"the keys are detector, .*video_fps"],
    ),
    ({"video_fps": -1}, [r"video_fps\n.*greater than 0"]),  # hung forever
    ({"video_fps": 0}, [r"video_fps\n.*greater than 0"]),  # ZeroDivisionError
    ({"video_fps": float("inf")}, [r"video_fps\n.*finite number"]),
    ({"detector": "dlib"}, [r"detector\n.*'yunet' or 'haar'"]),
    ({"margin": "x"}, [r"margin\n.*valid number"]),
    ({"min_face": 0}, [r"min_face\n.*greater than 0"]),
    ({"annotate": "maybe"}, [r"annotate\n.*valid boolean"]),
    ({"yunet_model": "no/such/file.onnx"}, [r"yunet_model\n.*no such file"]),
]


@pytest.mark.parametrize(("params", "expected"), BAD_PARAMETERS)
def test_bad_parameters_stop_the_run_before_any_node(params, expected, tmp_path, kedro_run):
    """Issues 2 and 14: a typo, a wrong type, a bad choice or a value out of range stops
    ``kedro run --pipelines inference`` before its first node, naming the key and what it
    may be (a typo was silently ignored; ``video_fps: -1`` hung, 0 divided by zero)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    project = inference_project(tmp_path, folder, parameters={"inference": params})
    with raises_in_chain(ParameterValidationError) as error:
        kedro_run(project, "inference")
    message = str(error.error)
    assert "Parameter 'inference'" in message
    for pattern in expected:
        assert re.search(pattern, message), (pattern, message)
    assert not [p for p in (project / "data").rglob("*") if p.is_file()]


def test_inference_parameters_have_one_set_of_defaults():
    """The defaults live in ``InferenceConfig``; conf/base states none of them again, and
    the recognition settings (what the API can share) are a model of their own."""
    from fer_pipeline.pipelines.inference.config import InferenceConfig, RecognitionConfig
    from fer_pipeline.runtime.faces import DETECT_MAX_SIDE, MIN_FACE, recogniser_from_params

    base = yaml.safe_load((PROJECT / "conf/base/parameters_inference.yml").read_text())
    assert base == {"inference": {}}
    config = InferenceConfig.model_validate(base["inference"])
    assert config == InferenceConfig.model_validate(DEFAULTS) and config.video_fps == 2
    assert (config.min_face, config.detect_max_side) == (MIN_FACE, DETECT_MAX_SIDE)
    assert isinstance(config, RecognitionConfig)
    recognition = config.recognition()
    assert (
        sorted(recognition)
        == sorted(RecognitionConfig.model_fields)
        == sorted(
            ["detector", "yunet_model", "min_face", "score_threshold", "margin", "detect_max_side"]
        )
    )
    assert RecognitionConfig.model_validate(recognition) == RecognitionConfig()

    class Stub:
        classes = list(CLASSES)

    recogniser = recogniser_from_params(Stub(), recognition)
    assert (recogniser.margin, recogniser.detector.max_side) == (0.0, DETECT_MAX_SIDE)


def test_video_sampling_ends_at_any_rate(tmp_path, faces):
    """A rate above the video's own samples every frame (it looped once per 1 / fps)."""
    from fer_pipeline.pipelines.inference.nodes import sampled_frames

    clip = video(tmp_path / "clip.avi", [(photo(faces[:1]), 1.0)])  # 10 frames
    assert [f for f, _, _ in sampled_frames(str(clip), 1e9)] == list(range(10))
    assert [f for f, _, _ in sampled_frames(str(clip), 0.5)] == [0]


def _make_hostile_folder(folder: Path, faces) -> None:
    (folder / "x.jpg").mkdir(parents=True)  # a folder with an image suffix: searched
    (folder / "x.jpg/inner.jpg").write_bytes(photo(faces[:1]))
    (folder / "one.jpg").write_bytes(photo(faces[:1]))
    (folder / "alias.jpg").symlink_to("one.jpg")  # a link within the folder: read
    (folder / "loop.jpg").symlink_to("loop.jpg")
    (folder / "gone.jpg").symlink_to("missing.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(folder / "pipe.png")
    (folder / "back").symlink_to("..")  # a folder loop
    (folder.parent / "elsewhere.jpg").write_bytes(photo(faces[:1]))
    (folder / "outside.jpg").symlink_to(folder.parent / "elsewhere.jpg")
    with open(folder / "huge.jpg", "wb") as big:  # sparse: 60 MB, no disk
        big.truncate(60_000_000)
    (folder / "thin.png").write_bytes(_thin_png(20000, 1))
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    (folder / "loop.mp4").symlink_to("loop.mp4")
    os.mkfifo(folder / "pipe.mp4")  # OpenCV would wait for a writer forever


def test_hostile_folder_entries_are_skipped_and_reported(faces, model_onnx, tmp_path, kedro_run):
    """Issues 7, 3 and 4: a symlink loop, a dangling link, a folder loop, a link to
    /dev/zero or out of the folder, a named pipe, a file over ``max_file_bytes``, a
    20000 x 1 image: each is skipped and reported with its path and reason, the run goes
    on. A folder named ``x.jpg`` is a folder: searched."""
    folder = tmp_path / "photos"
    _make_hostile_folder(folder, faces)
    project = inference_project(tmp_path, folder, model_onnx)
    kedro_run(project, "inference")
    data = catalog_of(project)
    found = data.load("inference_faces")
    assert sorted(set(found["path"])) == ["alias.jpg", "one.jpg", "x.jpg/inner.jpg"]
    report = data.load("inference_report")
    reasons = {u["path"]: u["error"] for u in report["unreadable"]}
    expected = {
        "back": r"a link to a folder: not followed",
        "broken.jpg": r"not (an|a decodable) image",
        "gone.jpg": r"a dangling link \(to missing.jpg\)",
        "huge.jpg": r"60,000,000 bytes: over max_file_bytes \(50,000,000\)",
        "loop.jpg": r"a symbolic link loop",
        "outside.jpg": r"a link out of the input folder",
        "pipe.png": r"not a regular file: a named pipe",
        "thin.png": r"20000 x 1 pixels|Assertion failed",  # images.py's check, or OpenCV's
        "zero.jpg": r"not a regular file: a character device \(a link to /dev/zero\)",
    }
    assert sorted(reasons) == sorted(expected)
    for path, pattern in expected.items():
        assert re.search(pattern, reasons[path]), (path, reasons[path])
    assert report["images"] == 12 and report["faces"] == 3
    assert sorted(data.load("annotated_images")) == ["alias.jpg", "one.jpg", "x.jpg/inner.jpg"]
    videos = data.load("video_report")
    assert {u["path"]: u["error"] for u in videos["unreadable"]} == {
        "back": "a link to a folder: not followed",
        "loop.mp4": "a symbolic link loop (to loop.mp4)",
        "pipe.mp4": "not a regular file: a named pipe",
    }


def _bomb(archive: zipfile.ZipFile, name: str, size: int) -> None:
    """A member of ``size`` zero bytes: deflated to about 1/1000 of that."""
    with archive.open(name, "w") as member:
        for _ in range(size // 1_000_000):
            member.write(bytes(1_000_000))


def _lying_zip(path: Path, name: str, size: int, claimed: int) -> None:
    """A zip whose member ``name`` inflates to ``size`` zero bytes while its headers (local
    and central) claim ``claimed``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        _bomb(archive, name, size)
    data = bytearray(path.read_bytes())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, claimed)
    struct.pack_into("<I", data, central + 24, claimed)
    path.write_bytes(bytes(data))


def test_image_files_bound_what_they_read(faces, tmp_path):
    """Issue 3: a link to /dev/zero read 4 GB, a zip member inflating to gigabytes drove
    memory to 7-9 GB: only regular files are read, sizes are checked first (from the file
    system or the zip header) and reads are bounded (headers can lie); each member is
    capped by ``max_file_bytes`` and one archive by ``max_archive_bytes``."""
    from fer_pipeline.datasets import ImageFiles

    folder = tmp_path / "photos"
    folder.mkdir()
    face = photo(faces[:1])
    (folder / "one.jpg").write_bytes(face)
    (folder / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "big.jpg").write_bytes(bytes(len(face) + 1))
    (folder / "edge.jpg").write_bytes(bytes(len(face)))
    images = ImageFiles(str(folder), max_file_bytes=len(face)).load()
    assert len(images) == 5
    got = {i.path: (i.data and len(i.data), i.error) for i in images}
    assert got["edge.jpg"] == got["one.jpg"] == (len(face), None)
    assert got["big.jpg"][1] == f"{len(face) + 1:,} bytes: over max_file_bytes ({len(face):,})"
    assert "character device (a link to /dev/zero)" in got["zero.jpg"][1]
    assert got["pipe.jpg"][1] == "not a regular file: a named pipe"

    bomb = tmp_path / "bomb.zip"  # 60 MB of zeros in ~60 KB: over the default 50 MB
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        _bomb(archive, "bomb.jpg", 60_000_000)
        archive.writestr("one.jpg", photo(faces[:1]))
    assert bomb.stat().st_size < 1_000_000
    got = {i.path: (i.data, i.error) for i in ImageFiles(str(bomb)).load()}
    assert got["one.jpg"] == (photo(faces[:1]), None)
    assert got["bomb.jpg"] == (
        None,
        "60,000,000 bytes once inflated: over max_file_bytes (50,000,000)",
    )

    liar = tmp_path / "liar.zip"  # says 1,000 bytes, inflates to 60 MB: read no further
    _lying_zip(liar, "liar.jpg", 60_000_000, 1000)
    ((path, data, error),) = [(i.path, i.data, i.error) for i in ImageFiles(str(liar)).load()]
    assert (path, data) == ("liar.jpg", None) and "corrupt archive member" in error

    many = tmp_path / "many.zip"  # 1 KB each, 2.5 KB for the archive: the third is refused
    with zipfile.ZipFile(many, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in ("a.jpg", "b.jpg", "c.jpg"):
            archive.writestr(name, bytes(1000))
    images = ImageFiles(str(many), max_archive_bytes=2500).load()
    assert [(i.path, i.data is None, i.error) for i in images] == [
        ("a.jpg", False, None),
        ("b.jpg", False, None),
        ("c.jpg", True, "past max_archive_bytes (2,500)"),
    ]
    with pytest.raises(Exception, match="max_file_bytes must be a positive number"):
        ImageFiles(str(folder), max_file_bytes=0)


def test_hostile_zip_is_skipped_and_reported(faces, model_onnx, tmp_path, kedro_run):
    """Issues 3 and 17 as a user runs them: a zip bomb member, a member whose header lies,
    a link, a second member of the same name and a 20000 x 1 image are skipped and
    reported; annotated_images.zip names are relative, safe and unique (``../``,
    absolute and drive-letter names were kept; dup.jpg and dup.png both became dup.jpg)."""
    source = tmp_path / "photos.zip"
    face = photo(faces[:1])
    _lying_zip(source, "liar.jpg", 60_000_000, 1000)
    with zipfile.ZipFile(source, "a", zipfile.ZIP_DEFLATED) as archive:
        for name in ("../evil.jpg", "/abs/face.jpg", "C:/drive.jpg", "dup.jpg", "dup.png"):
            archive.writestr(name, face)
        archive.writestr("same.jpg", face)
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("same.jpg", b"another")
        _bomb(archive, "bomb.jpg", 60_000_000)
        link = zipfile.ZipInfo("link.jpg")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("thin.png", _thin_png(20000, 1))
        archive.writestr("folder.jpg/", b"")
    project = inference_project(tmp_path, source, model_onnx)
    kedro_run(project, "inference")
    data = catalog_of(project)
    report = data.load("inference_report")
    reasons = {u["path"]: u["error"] for u in report["unreadable"]}
    assert reasons.keys() == {"bomb.jpg", "liar.jpg", "link.jpg", "same.jpg", "thin.png"}
    assert "over max_file_bytes (50,000,000)" in reasons["bomb.jpg"]
    assert "corrupt archive member" in reasons["liar.jpg"]
    assert reasons["link.jpg"] == "a symbolic link stored in the archive"
    assert reasons["same.jpg"] == "a second member with the same name"
    assert re.search(r"20000 x 1 pixels|Assertion failed", reasons["thin.png"])
    assert (report["images"], report["faces"]) == (11, 6)
    annotated = data.load("annotated_images")
    assert sorted(annotated) == [
        "abs/face.jpg",
        "drive.jpg",
        "dup.jpg",
        "dup.png.jpg",
        "evil.jpg",
        "same.jpg",
    ]
    assert all(decode_image(image).shape == (220, 400, 3) for image in annotated.values())


def test_annotated_member_names_are_safe_and_unique():
    from fer_pipeline.pipelines.inference.nodes import member_name

    taken: set[str] = set()
    names = [
        "dup.jpg",
        "dup.png",
        "dup.png.jpg",
        "DUP.JPEG",
        "../../etc/x.jpg",
        "/etc/x.png",
        "C:\\Users\\me\\a.jpg",
        "D:b.tif",
        "a/./b/../c.webp",
        "..",
    ]
    assert [member_name(n, taken) for n in names] == [
        "dup.jpg",
        "dup.png.jpg",
        "dup.png.jpg.jpg",
        "DUP.JPEG.jpg",
        "etc/x.jpg",
        "etc/x.png.jpg",
        "Users/me/a.jpg",
        "b.jpg",
        "a/b/c.jpg",
        "image.jpg",
    ]


@pytest.mark.parametrize("error", [cv2.error, ValueError], ids=["cv2.error", "ValueError"])
def test_an_image_failing_in_the_detector_is_skipped(
    error, faces, model_onnx, tmp_path, monkeypatch
):
    """Issue 4: an error of OpenCV's (an assertion on a very thin image) or a
    ``ValueError`` while searching one image stopped the whole run without naming it."""
    from fer_pipeline.datasets import ImageFiles
    from fer_pipeline.pipelines.inference.nodes import predicted_faces
    from fer_pipeline.runtime.faces import FaceDetector

    detect = FaceDetector.detect

    def fragile(self, pixels):
        if pixels.shape[0] < 16:
            raise error("(-215:Assertion failed) !ssize.empty() in function 'resize'\n")
        return detect(self, pixels)

    monkeypatch.setattr(FaceDetector, "detect", fragile)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "one.jpg").write_bytes(photo(faces[:1]))
    (folder / "thin.png").write_bytes(_thin_png(20000, 12))
    found, report = predicted_faces(ImageFiles(str(folder)).load(), model_onnx, dict(DEFAULTS))
    assert found["path"].tolist() == ["one.jpg"]
    ((skipped),) = report["unreadable"]
    assert skipped["path"] == "thin.png" and "Assertion failed" in skipped["error"]
    assert "\n" not in skipped["error"] and report["images"] == 2


def test_images_over_max_pixels_are_skipped_undecoded(faces, model_onnx, tmp_path, monkeypatch):
    """A pixel bomb (a small file whose header claims a huge image) is refused from its
    header, before decoding: ``max_pixels``."""
    from fer_pipeline.datasets import ImageFiles
    from fer_pipeline.pipelines.inference import nodes

    decoded = []
    monkeypatch.setattr(nodes, "decode_image", lambda data: decoded.append(data) or 1 / 0)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "big.jpg").write_bytes(photo(faces))  # 400 x 220
    parameters = DEFAULTS | {"max_pixels": 400 * 220 - 1}
    found, report = nodes.predicted_faces(ImageFiles(str(folder)).load(), model_onnx, parameters)
    assert found.empty and not decoded
    assert report["unreadable"] == [
        {"path": "big.jpg", "error": "the image is 400 x 220 pixels: over max_pixels (87,999)"}
    ]
