"""Face detection, batch inference, the HTTP API and exports, on real faces."""

from __future__ import annotations

import io
import zipfile

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import catalog_of, make_project
from fastapi.testclient import TestClient
from PIL import Image
from serving_fixtures import GREY, SLOTS, photo, raf_faces, small_model

from fer_pipeline.faces import FaceDetector
from fer_pipeline.images import decode_image, encode_jpeg
from fer_pipeline.modelling.export import onnx_logits, to_onnx
from fer_pipeline.pipelines.export.nodes import exported_models
from fer_pipeline.schema import CLASSES
from fer_pipeline.serving.app import Settings, create_app, load_model
from fer_pipeline.serving.classifier import OnnxClassifier
from fer_pipeline.serving.recognise import FaceRecogniser, recogniser_from_params

DETECTOR = {
    "detector": "haar",
    "min_face": 48,
    "score_threshold": 0.6,
    "margin": 0.2,
}


@pytest.fixture(scope="module")
def faces(shared_data):
    return raf_faces(shared_data, 2)


@pytest.fixture(scope="module")
def bundle(shared_data):
    return small_model(shared_data)


@pytest.fixture(scope="module")
def classifier(bundle) -> OnnxClassifier:
    """The bundle as serving runs it: its ONNX export, metadata included."""
    return OnnxClassifier(to_onnx(bundle))


@pytest.fixture(scope="module")
def client(classifier):
    settings = Settings(max_upload_bytes=2_000_000, max_pixels=4_000_000)
    app = create_app(recogniser_from_params(classifier, DETECTOR), "test-version", settings)
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
    assert Settings.from_env().min_face == 24


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
    onnx_model, int8_model, script_model, report = exported_models(
        bundle, pd.DataFrame({"image": calibration}), test, params
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
        "import sys; import fer_pipeline.serving.app, fer_pipeline.serving.classifier, "
        "fer_pipeline.pipelines.inference.nodes; "
        "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels, with next to no data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _app_client(classifier, **settings) -> TestClient:
    app = create_app(recogniser_from_params(classifier, DETECTOR), "v", Settings(**settings))
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

    from fer_pipeline.serving.app import BodyLimit

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
    import threading
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
    settings = Settings(workers=2, queue=0, light_pixels=100_000)  # photo(): 88,000 pixels
    app = create_app(recogniser, "v", settings)
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
