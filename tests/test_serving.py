"""Face detection, batch inference, the HTTP API and exports, on real faces."""

from __future__ import annotations

import io
import os
import re
import socket
import struct
import threading
import zipfile
import zlib

import cv2
import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import catalog_of, make_project
from fastapi.testclient import TestClient
from PIL import Image
from pydantic_settings import SettingsError
from serving_fixtures import GREY, SLOTS, photo

from fer_pipeline.data.images import decode_image, encode_jpeg, read_header, resized_rgb
from fer_pipeline.data.schema import CLASSES
from fer_pipeline.data.shards import Shards, write_shards
from fer_pipeline.modelling.export import onnx_logits, to_onnx
from fer_pipeline.pipelines.export.nodes import exported_models
from fer_pipeline.runtime.classifier import OnnxClassifier
from fer_pipeline.runtime.config import RecognitionConfig
from fer_pipeline.runtime.faces import FaceDetector, FaceRecogniser, recogniser_from_params
from fer_pipeline.serving.app import create_app, load_model
from fer_pipeline.serving.local import local_server
from fer_pipeline.serving.settings import ServingSettings

DETECTOR = {
    "detector": "haar",
    "min_face": 48,
    "score_threshold": 0.6,
    "margin": 0.0,
}


@pytest.fixture(scope="module")
def classifier(bundle) -> OnnxClassifier:
    """The bundle as serving runs it: its ONNX export, metadata included."""
    return OnnxClassifier(to_onnx(bundle))


@pytest.fixture(scope="module")
def client(classifier):
    settings = ServingSettings(max_upload_bytes=2_000_000, max_pixels=4_000_000)
    recogniser = recogniser_from_params(classifier, DETECTOR)
    app = create_app(settings, recogniser=recogniser, version="test-version")
    with TestClient(app, base_url="http://localhost") as test_client:
        yield test_client


@pytest.mark.parametrize("method", ["haar", "yunet"])
def test_detectors_find_both_faces(faces, method):
    detector = FaceDetector(method)  # YuNet: the file shipped in the package
    boxes = sorted(detector.detect(decode_image(photo(faces))))
    assert len(boxes) == 2
    for (x, y, w, h), (sx, sy) in zip(boxes, SLOTS):
        assert abs(x + w / 2 - (sx + 50)) < 20 and abs(y + h / 2 - (sy + 50)) < 25


def test_faces_below_min_face_are_skipped(faces, monkeypatch):
    small = cv2.resize(decode_image(photo(faces)), None, fx=0.35, fy=0.35)  # faces ~40 px
    assert len(FaceDetector("haar", min_face=24).detect(small)) == 1
    assert FaceDetector("haar").detect(small) == []  # default: 48 px
    assert FaceDetector().detect(small) == []  # YuNet, the default detector, too
    monkeypatch.setenv("FER_MIN_FACE", "24")
    assert ServingSettings().recognition.min_face == 24


def test_large_images_are_searched_downscaled(faces, monkeypatch):
    canvas = np.full((3000, 4000, 3), GREY, np.uint8)
    canvas[800:1200, 1000:1400] = cv2.resize(faces[0], (400, 400))
    searched = []
    original = FaceDetector._detect

    def spy(self, pixels, min_face):
        searched.append((pixels.shape[:2], min_face))
        return original(self, pixels, min_face)

    monkeypatch.setattr(FaceDetector, "_detect", spy)
    (small,) = FaceDetector(max_side=1000).detect(canvas)
    (full,) = FaceDetector(max_side=4000).detect(canvas)
    assert searched == [((750, 1000), 12), ((3000, 4000), 48)]  # min_face scaled too
    for x, y, w, h in (small, full):  # boxes in the image's own pixels either way
        assert abs(x + w / 2 - 1200) < 30 and abs(y + h / 2 - 1000) < 40 and 300 < w < 500


def test_unknown_detector_and_missing_yunet_file(tmp_path):
    with pytest.raises(ValueError, match="haar or yunet"):
        FaceDetector("dlib")
    with pytest.raises(FileNotFoundError, match="YuNet model file not found"):
        FaceDetector("yunet", str(tmp_path / "absent.onnx"))


def test_health_and_docs(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "vit_tiny_patch16_224"
    assert health["version"] == "test-version" and health["classes"] == list(CLASSES)
    assert health["temperature"] > 0 and health["temperature"] != 1.0  # fitted on val
    assert client.get("/docs").status_code == 200
    assert "/predict" in client.get("/openapi.json").json()["paths"]


def test_predict_faces(client, faces):
    response = client.post("/predict", files={"file": ("two.jpg", photo(faces), "image/jpeg")})
    assert response.status_code == 200
    timings = dict(part.split(";dur=") for part in response.headers["server-timing"].split(", "))
    assert set(timings) == {"decode", "detect", "classify"}
    assert all(float(ms) > 0 for ms in timings.values())
    body = response.json()
    assert (body["width"], body["height"]) == (400, 220) and len(body["faces"]) == 2
    for face in body["faces"]:
        assert len(face["box"]) == 4 and face["label"] in CLASSES
        assert face["probabilities"][face["label"]] == max(face["probabilities"].values())
        assert sum(face["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    cropped = encode_jpeg(faces[0])
    one = client.post("/predict?detect=false", files={"file": ("f.jpg", cropped, "image/jpeg")})
    assert one.json()["faces"][0]["box"] == [0, 0, 100, 100]


def test_bad_input_is_refused_and_the_server_keeps_serving(client, faces):
    def post(data: bytes, name: str = "x.jpg"):
        return client.post("/predict", files={"file": (name, data, "application/octet-stream")})

    assert post(b"%PDF-1.4 not an image", "x.pdf").status_code == 415
    assert post(b"\0" * 2_000_001).status_code == 413
    bomb = io.BytesIO()
    Image.new("L", (3000, 3000)).save(bomb, format="PNG")  # 9 megapixels in a few kB
    response = post(bomb.getvalue(), "bomb.png")
    assert response.status_code == 413 and "pixels" in response.json()["detail"]
    truncated = photo(faces)[:3000]
    assert post(truncated).status_code in (415, 422)
    blank = post(encode_jpeg(np.full((200, 200, 3), 255, np.uint8)))
    assert blank.status_code == 200 and blank.json()["faces"] == []
    assert post(photo(faces)).status_code == 200


def test_the_model_loads_from_the_latest_export_or_a_file(bundle, small_raw, tmp_path, monkeypatch):
    """The project's latest versioned ONNX export by default, or FER_ONNX_MODEL (MLflow
    models: test_tracking.py)."""
    project = make_project(tmp_path / "project", small_raw)
    monkeypatch.chdir(project)
    monkeypatch.setenv("FER_PROJECT_PATH", str(project))
    for name in ("FER_MODEL_URI", "FER_ONNX_MODEL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="kedro run --pipelines export"):
        load_model()
    catalog_of(project).save("model_onnx", to_onnx(bundle))
    loaded, version = load_model()
    assert loaded.spec == bundle.spec.to_dict() and len(version) > 10
    exported = tmp_path / "model.onnx"
    exported.write_bytes(to_onnx(bundle))
    monkeypatch.setenv("FER_ONNX_MODEL", str(exported))
    loaded, version = load_model()
    assert loaded.classes == list(CLASSES) and version == str(exported)


def test_export_parity_and_int8_on_real_images(
    bundle, shared_data, small_raw, tmp_path, monkeypatch
):
    with zipfile.ZipFile(shared_data / "rafdb/basic/Image/aligned.zip") as archive:
        images = [archive.read(f"aligned/test_{i:04d}_aligned.jpg") for i in range(1, 41)]
        calibration = [archive.read(f"aligned/train_{i:05d}_aligned.jpg") for i in range(1, 33)]
    test = pd.DataFrame(
        {"image": images, "label": np.arange(40) % 7, "source": ["rafdb", "ferplus"] * 20}
    )
    params = {
        "parity_images": 16,
        "tolerance": 1e-4,
        "calibration_images": 32,
        "timing_faces": 3,
        "seed": 0,
    }
    write_shards([pd.DataFrame({"image": calibration})], tmp_path / "val", row_group_rows=16)
    write_shards([test], tmp_path / "test", row_group_rows=16)
    onnx_model, int8_model, script_model, report = exported_models(
        bundle, Shards(tmp_path / "val"), Shards(tmp_path / "test"), params
    )
    assert report["images"] == 16
    assert max(report["max_abs_logit_difference"].values()) <= 1e-4
    assert onnx_logits(onnx_model, np.zeros((3, 3, 32, 32), np.float32)).shape == (3, 7)
    assert script_model[:2] == b"PK"  # a TorchScript archive

    import onnx

    graph = onnx.load_from_string(int8_model).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    int8 = OnnxClassifier(int8_model)  # the spec travels with it
    assert int8.spec == bundle.spec.to_dict()
    crops = [decode_image(image) for image in images]
    fp32_probs = OnnxClassifier(onnx_model).probabilities(crops)
    assert np.abs(int8.probabilities(crops) - fp32_probs).max() < 0.05
    figures = report["int8"]
    assert figures["calibration_images"] == 32 and figures["test_images"] == 40
    assert figures["megabytes"]["int8"] < figures["megabytes"]["fp32"] / 2
    for kind in ("fp32", "int8"):
        expected = (fp32_probs.argmax(1) == test["label"]).mean() if kind == "fp32" else None
        assert expected is None or figures[kind]["accuracy"] == pytest.approx(expected)
        assert {"accuracy_rafdb", "accuracy_ferplus", "ms_per_face"} <= set(figures[kind])
    assert 0.8 <= figures["top1_agreement_with_fp32"] <= 1

    project = make_project(tmp_path / "project", small_raw)  # the API serves int8 if asked
    monkeypatch.chdir(project)
    monkeypatch.setenv("FER_PROJECT_PATH", str(project))
    for name in ("FER_MODEL_URI", "FER_ONNX_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FER_INT8", "1")
    catalog_of(project).save("model_onnx", onnx_model)
    with pytest.raises(RuntimeError, match="no exported model"):
        load_model()  # the int8 twin is asked for, and there is none yet
    catalog_of(project).save("model_onnx_int8", int8_model)
    served, version = load_model()
    assert served.spec == int8.spec
    assert (project / "data/06_models/model.int8.onnx" / version / "model.int8.onnx").exists()
    monkeypatch.setenv("FER_MODEL_URI", "models:/fer_pipeline@champion")
    with pytest.raises(ValueError, match="FER_INT8"):
        load_model()


def test_recogniser_classifies_crops_like_the_model(classifier, faces):
    recogniser = FaceRecogniser(classifier, FaceDetector())
    whole = recogniser.recognise(faces[0], detect=False)[0]
    probs = recogniser.predictor.probabilities([faces[0]])[0]
    assert whole["probabilities"] == {c: round(float(p), 6) for c, p in zip(CLASSES, probs)}


def test_the_onnx_runtime_agrees_with_pytorch_and_reads_its_metadata(bundle, classifier, faces):
    from fer_pipeline.modelling.predictor import Predictor

    torch_ = Predictor(bundle)
    np.testing.assert_allclose(
        classifier.probabilities(faces), torch_.probabilities(faces), atol=1e-5
    )
    assert classifier.spec == bundle.spec.to_dict()  # classes, size, mean, std, facts
    assert classifier.classes == list(CLASSES) and classifier.image_size == 32
    with pytest.raises(ValueError, match="no 'fer_pipeline' metadata"):
        OnnxClassifier(onnx_without_metadata(bundle))


def onnx_without_metadata(bundle) -> bytes:
    import onnx

    model = onnx.load_from_string(to_onnx(bundle))
    del model.metadata_props[:]
    return model.SerializeToString()


def test_serving_imports_neither_torch_nor_timm():
    """The API, the runtime and batch inference run on ONNX Runtime and NumPy only."""
    import subprocess
    import sys

    code = (
        "import sys; import fer_pipeline.serving.app, fer_pipeline.runtime.classifier, "
        "fer_pipeline.pipelines.inference.nodes; "
        "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def _chunk(kind: bytes, body: bytes) -> bytes:
    """A PNG chunk: length, type, body and CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels, with next to no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def _app_client(classifier, **settings) -> TestClient:
    recogniser = recogniser_from_params(classifier, DETECTOR)
    app = create_app(ServingSettings(**settings), recogniser=recogniser, version="v")
    return TestClient(app, base_url="http://localhost")


def test_hostile_images_get_4xx_with_their_reason(client, faces, caplog):
    def post(data: bytes, name: str = "x.png"):
        return client.post("/predict", files={"file": (name, data, "application/octet-stream")})

    for side in (50_000, 12_000):  # beyond Pillow's own bomb ceiling, and beyond ours
        response = post(_png_header(side, side))
        assert response.status_code == 413, response.text
    good = bytearray(encode_jpeg(faces[0]))
    start = good.find(b"\xff\xda") + 200
    good[start : start + 600] = bytes(range(1, 201)) * 3  # corrupt scan, end marker intact
    with caplog.at_level("WARNING", logger="fer_pipeline.serving"):
        response = post(bytes(good), "noise.jpg")
    assert response.status_code == 422 and "corrupt JPEG" in response.json()["detail"]
    assert "422 POST /predict: the image cannot be decoded: corrupt JPEG" in caplog.text


def test_exif_orientation_sets_the_frame(client, faces):
    """A photo as a camera held upright stores it: pixels turned 90 degrees, EXIF
    orientation 6. Faces are found upright, and width, height and boxes are those of
    the image as shown (400 x 220), not of the stored pixels (220 x 400)."""
    shown = decode_image(photo(faces))  # 400 x 220, faces upright
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to show"
    buffer = io.BytesIO()
    Image.fromarray(np.rot90(shown, 1)).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    body = client.post("/predict", files={"file": ("r.jpg", buffer.getvalue(), "image/jpeg")})
    body = body.json()
    assert (body["width"], body["height"]) == (400, 220) and len(body["faces"]) == 2
    for x, y, w, h in (face["box"] for face in body["faces"]):
        assert x + w <= 400 and y + h <= 220


def test_upload_limits_refuse_before_reading_the_body():
    import asyncio

    from fer_pipeline.serving.middleware import BodyLimit

    async def never_called(scope, receive, send):
        raise AssertionError("the app ran")

    async def no_receive():
        raise AssertionError("the body was read")

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "headers": [(b"content-length", b"200000000")],
    }
    asyncio.run(BodyLimit(never_called, limit=1000)(scope, no_receive, send))
    assert sent[0]["status"] == 413

    # no Content-Length: the streamed size is counted, the rest is never read
    chunks = iter([b"x" * 600] * 100)
    read = []

    async def stream():
        read.append(1)
        return {"type": "http.request", "body": next(chunks), "more_body": True}

    async def reader(scope, receive, send):
        while True:
            await receive()

    sent.clear()
    scope["headers"] = []
    asyncio.run(BodyLimit(reader, limit=1000)(scope, stream, send))
    assert sent[0]["status"] == 413 and len(read) == 2


def test_faces_are_capped_and_access_is_guarded(classifier, faces):
    two = photo(faces)
    with _app_client(
        classifier, max_faces=1, api_key="s3cret", cors_origins=["https://app.example"]
    ) as guarded:
        files = {"file": ("two.jpg", two, "image/jpeg")}
        assert guarded.post("/predict", files=files).status_code == 401
        response = guarded.post("/predict", files=files, headers={"X-API-Key": "s3cret"})
        body = response.json()
        assert len(body["faces"]) == 1 and body["faces_capped"] and body["faces_found"] == 2
        preflight = guarded.options(
            "/predict",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert guarded.get("/health", headers={"Host": "evil.example"}).status_code == 400
    with _app_client(classifier) as plain:
        response = plain.get("/health", headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in response.headers  # CORS off by default
        docs = plain.get("/docs").text
        assert "/docs-static/swagger-ui-bundle.js" in docs and "cdn" not in docs
        assert plain.get("/docs-static/swagger-ui-bundle.js").status_code == 200


def test_a_heavy_request_does_not_hold_up_a_light_one(classifier, faces, monkeypatch):
    """Detection on a big image is held (as a slow one would be) until the test lets it
    go: a one-face request sent meanwhile is answered while it is still held, also when
    every worker for large images is taken (light images have their own), and a large
    image that finds the workers and queue of its lane taken gets 503 with Retry-After."""
    import time

    recogniser = recogniser_from_params(classifier, DETECTOR)
    detect, release, held = recogniser.detector.detect, threading.Event(), []

    def held_on_big_images(pixels):
        if pixels.shape[1] > 1000:
            held.append(1)
            release.wait(timeout=60)
        return detect(pixels)

    def wait_until_held(count: int) -> None:
        for _ in range(3000):
            if len(held) >= count:
                return
            time.sleep(0.01)
        raise AssertionError(f"{count} heavy requests never reached detection")

    monkeypatch.setattr(recogniser.detector, "detect", held_on_big_images)
    big = encode_jpeg(cv2.resize(decode_image(photo(faces)), (2000, 1100)))
    settings = ServingSettings(workers=2, queue=0, light_pixels=100_000)  # photo(): 88,000 px
    app = create_app(settings, recogniser=recogniser, version="v")
    answers: list = []
    with TestClient(app, base_url="http://localhost") as client:

        def heavy():
            answers.append(client.post("/predict", files={"file": ("b.jpg", big)}))

        threads = [threading.Thread(target=heavy) for _ in range(2)]
        try:
            threads[0].start()
            wait_until_held(1)
            light = client.post("/predict", files={"file": ("l.jpg", photo(faces))})
            assert light.status_code == 200 and len(light.json()["faces"]) == 2
            assert not answers  # answered while the heavy one is still held
            threads[1].start()
            wait_until_held(2)  # both workers for large images taken, no queue
            full = client.post("/predict", files={"file": ("b.jpg", big)})
            assert full.status_code == 503 and full.headers["retry-after"] == "1"
            light = client.post("/predict", files={"file": ("l.jpg", photo(faces))})
            assert light.status_code == 200 and len(light.json()["faces"]) == 2
        finally:
            release.set()
            for thread in threads:
                if thread.is_alive() or thread.ident:
                    thread.join()
    assert [a.status_code for a in answers] == [200, 200]


def _post(client: TestClient, data: bytes, name: str = "x.png", query: str = ""):
    return client.post(f"/predict{query}", files={"file": (name, data, "application/octet-stream")})


def _encoded(image: np.ndarray | Image.Image, fmt: str, **options) -> bytes:
    """``image`` (pixels or a Pillow image) encoded by Pillow as ``fmt``."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_thin_images_get_422_and_are_never_searched(client, faces):
    """A 20000 x 1 strip downscaled for detection had no rows left (OpenCV asserted:
    500); the shared decoder refuses it with a ValueError, and detection skips a strip
    too thin to hold a face (YuNet returns infinite boxes on those)."""
    face = faces[0]
    for size in ((20000, 1), (1, 20000)):
        strip = _encoded(cv2.resize(face, size), "PNG")
        for query in ("", "?detect=false"):
            response = _post(client, strip, query=query)
            assert response.status_code == 422, response.text
            assert "each side must be at least" in response.json()["detail"]
        with pytest.raises(ValueError, match=r"is \d+ x \d+ pixels: each side must be at least"):
            decode_image(strip)
    for shape in ((10, 20000), (48, 20000), (160, 20000), (20000, 160)):
        strip = np.ascontiguousarray(cv2.resize(face, shape[::-1]))
        assert FaceDetector(max_side=640).detect(strip) == []
        assert FaceDetector().detect(strip) == []
        assert _post(client, _encoded(strip, "PNG")).json()["faces"] == []
    with pytest.raises(ValueError, match="empty image"):
        resized_rgb(face[:0], 32)


def test_a_slow_header_parse_does_not_hold_up_health(classifier, faces, monkeypatch):
    """Pillow walks a PNG's chunks in Python (800,000 of them take seconds): the parse of
    an upload is held here until the test lets it go, and /health answers meanwhile."""
    open_image, parsing, release = Image.open, threading.Event(), threading.Event()

    def held(fp, *args, **kwargs):
        if isinstance(fp, io.BytesIO) and b"slOw" in fp.getvalue():
            parsing.set()
            release.wait(timeout=120)
        return open_image(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", held)
    png = _encoded(decode_image(photo(faces)), "PNG")
    slow = png[:33] + _chunk(b"slOw", b"") * 1000 + png[33:]  # ancillary, after IHDR
    answers, health = [], []
    with _app_client(classifier) as client:
        upload = threading.Thread(target=lambda: answers.append(_post(client, slow)))
        probe = threading.Thread(target=lambda: health.append(client.get("/health")))
        upload.start()
        try:
            assert parsing.wait(timeout=60)
            probe.start()
            probe.join(timeout=30)
            assert [r.status_code for r in health] == [200]  # while the parse is held
        finally:
            release.set()
            upload.join()
            probe.join()
    assert answers[0].status_code == 200 and len(answers[0].json()["faces"]) == 2


def test_truncated_jpegs_are_refused_in_every_colour_space(client, faces):
    """Truncated, then given an end marker again: grayscale and YCbCr were refused, but
    CMYK went to OpenCV, which decodes what is missing as grey."""
    face = faces[0]
    for mode in ("L", "RGB", "CMYK"):
        whole = _encoded(Image.fromarray(face).convert(mode), "JPEG", quality=95)
        assert _post(client, whole, "face.jpg").status_code == 200
        for broken in (whole[: len(whole) // 2], whole[: len(whole) // 2] + b"\xff\xd9"):
            response = _post(client, broken, "face.jpg")
            assert response.status_code == 422, (mode, response.text)
            with pytest.raises(ValueError, match="truncated JPEG|corrupt JPEG"):
                decode_image(broken)
    cmyk = _encoded(Image.fromarray(face).convert("CMYK"), "JPEG", quality=95)
    assert np.abs(decode_image(cmyk).astype(int) - face).mean() < 2  # its colours, upright


def _with_segments(jpeg: bytes, *segments: tuple[bytes, bytes]) -> bytes:
    """``jpeg`` with ``(marker, body)`` segments inserted right after its SOI."""
    packed = b"".join(b"\xff" + m + struct.pack(">H", len(b) + 2) + b for m, b in segments)
    return jpeg[:2] + packed + jpeg[2:]


def test_exif_orientation_is_found_past_the_first_64_kb(client, faces, monkeypatch):
    """An ICC profile of 70 KB (two APP2 segments) comes before the EXIF block; a PNG's
    header is read without its pixels (Pillow's PNG getexif decodes them)."""
    from PIL import ImageFile

    shown = decode_image(photo(faces))  # 400 x 220, faces upright
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = np.ascontiguousarray(np.rot90(shown, 1))
    app1 = _encoded(stored, "JPEG", quality=95, exif=exif.tobytes())
    start = app1.index(b"\xff\xe1")
    end = start + 2 + struct.unpack(">H", app1[start + 2 : start + 4])[0]
    icc = [(b"\xe2", b"ICC_PROFILE\0" + bytes([i, 2]) + b"\0" * 35_000) for i in (1, 2)]
    late = _with_segments(app1[:start] + app1[end:], *icc, (b"\xe1", app1[start + 4 : end]))
    assert late.index(b"Exif") > 65536
    body = _post(client, late, "r.jpg").json()
    assert (body["width"], body["height"]) == (400, 220) and len(body["faces"]) == 2
    assert decode_image(late).shape == (220, 400, 3)

    def no_pixels(image):
        raise AssertionError("the pixels were decoded for the header")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_pixels)
    assert read_header(late).orientation == 6
    assert read_header(_encoded(stored, "PNG")).orientation == 1
    assert read_header(_encoded(stored, "PNG", exif=exif.tobytes())).orientation == 6


def test_a_chunked_upload_over_the_limit_gets_413(client, faces):
    """Without a Content-Length the size is counted as the body streams in; FastAPI
    turned the refusal raised inside its form parsing into 400."""
    boundary = "b0undary"

    def body():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        yield photo(faces)
        for _ in range(40):
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/predict",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413, response.text
    assert "larger than" in response.json()["detail"]
    assert response.headers["connection"] == "close"
    assert _post(client, photo(faces), "two.jpg").status_code == 200


def _partial_upload(url: str, declared: int = 100_000) -> socket.socket:
    """A socket that sent a POST's headers, announcing ``declared`` bytes of body."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(
        (
            f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {declared}\r\n"
            "Content-Type: multipart/form-data; boundary=b0undary\r\n"
            "Expect: 100-continue\r\n\r\n"
        ).encode()
    )
    return sock


def _read_until(sock: socket.socket, end: bytes | None = None) -> bytes:
    """What ``sock`` receives until ``end``, or until the server closes it."""
    data = b""
    while end is None or end not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_unfinished_and_excess_uploads_are_dropped(bundle, faces, tmp_path):
    """A real server (uvicorn) on loopback, 5 uploads at most and 5 s for each body
    chunk: 20 uploads that never finish their body hold 5 connections (kept alive by a
    byte each while the others come), the other 15 get 503 at once, the 5 get 408 once
    they stop, and every one is closed."""
    model = tmp_path / "model.onnx"
    model.write_bytes(to_onnx(bundle))
    env = {"FER_ONNX_MODEL": str(model), "FER_MAX_UPLOADS": "5", "FER_BODY_TIMEOUT_S": "5"}
    part = b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
    with local_server(tmp_path, env=env, log=tmp_path / "uvicorn.log") as url:
        held = []
        try:
            for _ in range(5):  # "100 Continue": the server has started reading this body
                held.append(_partial_upload(url))
                assert _read_until(held[-1], b"\r\n\r\n").startswith(b"HTTP/1.1 100")
                held[-1].sendall(part)
            for _ in range(15):
                with _partial_upload(url) as refused:
                    answer = _read_until(refused)
                assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
                assert b"retry-after: 1" in answer.lower() and b"too many uploads at once" in answer
                for sock in held:
                    sock.sendall(b"\0")
            for sock in held:
                answer = _read_until(sock)
                assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
                assert b"no more of the body came for 5 s" in answer
        finally:
            for sock in held:
                sock.close()
        response = httpx.post(f"{url}/predict", files={"file": ("two.jpg", photo(faces))})
        assert response.status_code == 200 and len(response.json()["faces"]) == 2


def test_large_icc_profiles_are_accepted_and_truncated_webp_is_corrupt(client, faces):
    """Pillow refused a PNG chunk decompressing past 1 MB, a 2 MB ICC profile too (415);
    a WebP cut short is an image, broken (422), not another media type."""
    from PIL import ImageCms

    shown = decode_image(photo(faces))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    icc = srgb + b"\0" * (2_000_000 - len(srgb))
    response = _post(client, _encoded(shown, "PNG", icc_profile=icc), "icc.png")
    assert response.status_code == 200 and len(response.json()["faces"]) == 2
    webp = _encoded(shown, "WEBP", quality=90)
    assert _post(client, webp, "two.webp").status_code == 200
    for cut in (len(webp) // 2, len(webp) - 100):
        response = _post(client, webp[:cut], "two.webp")
        assert response.status_code == 422, response.text
        assert "corrupt or truncated WEBP" in response.json()["detail"]
        with pytest.raises(ValueError, match="corrupt or truncated WEBP"):
            decode_image(webp[:cut])
    png = _encoded(shown, "PNG")
    response = _post(client, png[: len(png) // 2], "cut.png")
    assert response.status_code == 422 and "corrupt or truncated PNG" in response.text


def test_a_broken_onnx_file_is_named(bundle, tmp_path):
    """ONNX Runtime's INVALID_PROTOBUF named no file when given bytes; the error names
    the file (or where the bytes came from) and says what to do."""
    exported = to_onnx(bundle)
    broken = tmp_path / "model.onnx"
    broken.write_bytes(exported[: len(exported) // 2])
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(broken))} is not a valid ONNX.*re-export"
    ):
        OnnxClassifier(broken)
    with pytest.raises(ValueError, match=r"models:/fer@champion is not a valid ONNX model"):
        OnnxClassifier(exported[:1000], source="models:/fer@champion")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent.onnx"))):
        OnnxClassifier(tmp_path / "absent.onnx")


def test_head_answers_on_the_get_routes(classifier):
    """Load balancers and uptime checks ask with HEAD: answered as GET, without a body."""
    with _app_client(classifier, api_key="s3cret") as client:
        for path in ("/", "/docs", "/docs-static/swagger-ui.css"):
            response = client.head(path)
            assert response.status_code == 200 and response.content == b"", path
        assert client.head("/health").status_code == 401  # guarded like GET
        response = client.head("/health", headers={"X-API-Key": "s3cret"})
        assert response.status_code == 200 and response.content == b""
        assert response.headers["content-type"] == "application/json"
        paths = client.get("/openapi.json").json()["paths"]
        assert set(paths["/health"]) == {"get"}  # HEAD is not a second operation


def test_an_unfinished_export_is_skipped(bundle, tmp_path, monkeypatch, caplog):
    """A version an export left half-written (its ``.incomplete`` mark and truncated
    bytes) is skipped with a warning and the newest complete one served; a broken file
    that is not marked is named in the error."""
    project = make_project(tmp_path / "project", tmp_path / "raw")
    monkeypatch.chdir(project)
    monkeypatch.setenv("FER_PROJECT_PATH", str(project))
    for name in ("FER_MODEL_URI", "FER_ONNX_MODEL", "FER_INT8"):
        monkeypatch.delenv(name, raising=False)
    exported = to_onnx(bundle)
    folder = project / "data/06_models/model.onnx"  # the catalog's versioned model_onnx
    complete = folder / "2026-01-01T00.00.00.000Z" / "model.onnx"
    newest = folder / "2026-01-02T00.00.00.000Z" / "model.onnx"
    for path, data in ((complete, exported), (newest, exported[: len(exported) // 3])):
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
    (newest.parent / ".incomplete").touch()
    with caplog.at_level("WARNING"):
        loaded, version = load_model()
    assert version == complete.parent.name and loaded.spec == bundle.spec.to_dict()
    assert f"Skipping {newest}" in caplog.text
    (newest.parent / ".incomplete").unlink()
    with pytest.raises(ValueError, match=rf"{re.escape(str(newest))} is not a valid ONNX model"):
        load_model()


def _project_parameters(project) -> dict:
    """The parameters a ``kedro run`` in ``project`` gets."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project) as session:
        return session.load_context().params


def _served_recogniser() -> FaceRecogniser:
    """The recogniser of ``create_app()`` as ``uvicorn --factory`` builds it, settings
    from the environment and the project."""
    app = create_app()
    with TestClient(app, base_url="http://localhost") as client:
        assert client.get("/health").status_code == 200
        return app.state.service.recogniser


def test_a_threshold_set_once_reaches_batch_inference_and_the_api(bundle, tmp_path, monkeypatch):
    """``score_threshold``, ``margin`` and ``detect_max_side`` written once in the
    project's ``inference`` parameters are those of batch inference's recogniser and of
    the API's; ``FER_<KEY>`` overrides one key for the API alone, the others still from
    the project; a bad value, from the environment or the parameters, stops the API's
    start-up naming the variable or the parameter."""
    import fer_pipeline.pipelines.inference.nodes as inference_nodes

    inference = {"score_threshold": 0.77, "margin": 0.35, "detect_max_side": 1000}
    project = make_project(tmp_path / "project", tmp_path / "raw", {"inference": inference})
    model = tmp_path / "model.onnx"
    model.write_bytes(to_onnx(bundle))

    built = []  # batch inference: the recogniser its node builds from the run's parameters

    def spy(classifier, params):
        built.append(recogniser_from_params(classifier, params))
        return built[-1]

    monkeypatch.setattr(inference_nodes, "recogniser_from_params", spy)
    parameters = _project_parameters(project)["inference"]
    inference_nodes.predicted_faces([], model.read_bytes(), parameters)

    monkeypatch.chdir(tmp_path)  # not the project: FER_PROJECT_PATH names it
    for name in ("FER_MODEL_URI", "FER_INT8", "FER_KEDRO_ENV", "FER_DETECTOR", "FER_MIN_FACE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("FER_SCORE_THRESHOLD", "FER_MARGIN", "FER_DETECT_MAX_SIDE", "FER_YUNET_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FER_PROJECT_PATH", str(project))
    monkeypatch.setenv("FER_ONNX_MODEL", str(model))
    served = _served_recogniser()

    for recogniser in (built[0], served):
        assert recogniser.margin == 0.35 and recogniser.detector.method == "yunet"
        assert recogniser.detector._score_threshold == 0.77
        assert recogniser.detector.max_side == 1000

    monkeypatch.setenv("FER_SCORE_THRESHOLD", "0.9")
    overridden = _served_recogniser()
    assert overridden.detector._score_threshold == 0.9
    assert overridden.margin == 0.35 and overridden.detector.max_side == 1000

    monkeypatch.setenv("FER_SCORE_THRESHOLD", "high")
    monkeypatch.setenv("FER_DETECT_MAX_SIDE", "0")
    with pytest.raises(SettingsError) as error:
        create_app()
    message = str(error.value)
    assert "FER_SCORE_THRESHOLD='high': Input should be a valid number" in message
    assert "FER_DETECT_MAX_SIDE='0': Input should be greater than 0" in message
    monkeypatch.delenv("FER_SCORE_THRESHOLD")
    monkeypatch.delenv("FER_DETECT_MAX_SIDE")
    (project / "conf/local/parameters.yml").write_text("inference:\n  margin: -1\n")
    with pytest.raises(
        SettingsError,
        match=r"inference\.margin: -1 in the parameters of .*"
        r"\(or set FER_MARGIN\): Input should be greater than or equal to 0",
    ):
        create_app()


def test_settings_from_the_environment(monkeypatch, tmp_path):
    """Lists are comma-separated, the API key stays out of logs, and a bad or
    contradictory value names its variable."""
    monkeypatch.chdir(tmp_path)  # no project here: recognition keeps its defaults
    monkeypatch.delenv("FER_PROJECT_PATH", raising=False)
    monkeypatch.setenv("FER_ALLOWED_HOSTS", "api.example, localhost")
    monkeypatch.setenv("FER_API_KEY", "s3cret")
    monkeypatch.setenv("FER_CORS_ORIGINS", "")  # empty: unset
    monkeypatch.setenv("fer_max_faces", "4")  # names are case-insensitive
    settings = ServingSettings()
    assert settings.allowed_hosts == ["api.example", "localhost"] and settings.cors_origins == []
    assert settings.max_faces == 4 and settings.project_path == tmp_path.resolve()
    assert "s3cret" not in repr(settings) and settings.api_key.get_secret_value() == "s3cret"
    assert settings.recognition == RecognitionConfig()
    monkeypatch.setenv("FER_WORKERS", "two")
    with pytest.raises(SettingsError, match=r"FER_WORKERS='two': Input should be a valid int"):
        ServingSettings()
    monkeypatch.delenv("FER_WORKERS")
    monkeypatch.setenv("FER_INT8", "1")
    monkeypatch.setenv("FER_MODEL_URI", "models:/fer_pipeline@champion")
    monkeypatch.delenv("FER_ONNX_MODEL", raising=False)
    with pytest.raises(SettingsError, match="unset FER_INT8 or set FER_ONNX_MODEL"):
        ServingSettings()


def test_the_settings_tables_in_the_docs_are_the_class():
    """The settings tables of the docs are the settings classes' defaults and
    descriptions (``python -m fer_pipeline.docs_tables`` rewrites them), a changed default
    is seen, and every ``FER_`` variable named in the serving code is a setting."""
    from conftest import PROJECT

    from fer_pipeline.docs_tables import page_tables, stale_pages, with_tables
    from fer_pipeline.serving.settings import env_name

    assert stale_pages(PROJECT / "docs") == [], "run python -m fer_pipeline.docs_tables"
    assert (
        "| `min_face` | 48 | the smallest face side, in pixels |"
        in (PROJECT / "docs/python-api.md").read_text()
    )
    page = (PROJECT / "docs/batch-inference.md").read_text()
    edited = page.replace("| `min_face` | 48 |", "| `min_face` | 24 |")
    assert edited != page
    assert with_tables(edited, page_tables()["batch-inference.md"]) == page
    names = {env_name(n) for n in ServingSettings.model_fields} | {
        env_name(n) for n in RecognitionConfig.model_fields
    }
    code = "".join(p.read_text() for p in (PROJECT / "src/fer_pipeline/serving").glob("*.py"))
    assert set(re.findall(r"\bFER_[A-Z0-9_]*[A-Z0-9]\b", code)) - {"FER_<FIELD>"} <= names


def test_the_api_reads_the_project_configuration_as_kedro_does():
    """``project_config`` (the API's and the benchmarks' reader, without a session) gives
    the parameters a Kedro session gives, in an environment and in the base alone."""
    from conftest import PROJECT
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from fer_pipeline.config.loader import project_config

    bootstrap_project(PROJECT)
    for env in ("quick", "base"):
        with KedroSession.create(project_path=PROJECT, env=env) as session:
            theirs = session.load_context().config_loader["parameters"]
        ours = project_config(PROJECT, env)["parameters"]
        assert ours == theirs and ours["training"]["seed"] == 42
    assert project_config(PROJECT, "quick")["parameters"]["training"]["epochs"] == 4


def test_importing_the_api_builds_nothing():
    """The API is a factory (``uvicorn --factory fer_pipeline.serving.app:create_app``):
    importing it builds no app, reads no setting, and imports neither the inference
    pipeline's package (its nodes: pandas, matplotlib) nor Kedro."""
    import subprocess
    import sys

    code = (
        "import sys; import fer_pipeline.serving.app as api; "
        "print(hasattr(api, 'app'), sorted(m for m in ('pandas', 'matplotlib', 'kedro', "
        "'fer_pipeline.pipelines.inference') if m in sys.modules))"
    )
    environ = {**os.environ, "FER_WORKERS": "not read at import"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False []"
