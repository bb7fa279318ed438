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
from serving_fixtures import SLOTS, YUNET, photo, raf_faces, small_model

from fer_pipeline.faces import FaceDetector
from fer_pipeline.images import decode_image, encode_jpeg
from fer_pipeline.modelling.export import onnx_logits
from fer_pipeline.pipelines.export.nodes import exported_models
from fer_pipeline.schema import CLASSES
from fer_pipeline.serving.app import Settings, create_app, load_model
from fer_pipeline.serving.recognise import FaceRecogniser, recogniser_from_params

DETECTOR = {
    "detector": "haar",
    "min_face": 48,
    "score_threshold": 0.6,
    "margin": 0.2,
    "device": "cpu",
    "backend": "onnx",
}


@pytest.fixture(scope="module")
def faces(shared_data):
    return raf_faces(shared_data, 2)


@pytest.fixture(scope="module")
def bundle(shared_data):
    return small_model(shared_data)


@pytest.fixture(scope="module")
def client(bundle):
    settings = Settings(max_upload_bytes=2_000_000, max_pixels=4_000_000)
    app = create_app(recogniser_from_params(bundle, DETECTOR), "test-version", settings)
    with TestClient(app) as test_client:
        yield test_client


@pytest.mark.parametrize("method", ["haar", "yunet"])
def test_detectors_find_both_faces(faces, method):
    detector = FaceDetector(method, str(YUNET)) if method == "yunet" else FaceDetector()
    boxes = sorted(detector.detect(decode_image(photo(faces))))
    assert len(boxes) == 2
    for (x, y, w, h), (sx, sy) in zip(boxes, SLOTS):
        assert abs(x + w / 2 - (sx + 50)) < 20 and abs(y + h / 2 - (sy + 50)) < 25


def test_faces_below_min_face_are_skipped(faces, monkeypatch):
    small = cv2.resize(decode_image(photo(faces)), None, fx=0.35, fy=0.35)  # faces ~40 px
    assert len(FaceDetector(min_face=24).detect(small)) == 1
    assert FaceDetector().detect(small) == []  # default: 48 px
    monkeypatch.setenv("FER_MIN_FACE", "24")
    assert Settings.from_env().min_face == 24


def test_unknown_detector_and_missing_yunet_file(tmp_path):
    with pytest.raises(ValueError, match="haar or yunet"):
        FaceDetector("dlib")
    with pytest.raises(FileNotFoundError, match="YuNet model file not found"):
        FaceDetector("yunet", str(tmp_path / "absent.onnx"))


def test_inference_pipeline(faces, bundle, small_raw, tmp_path, kedro_run):
    folder = tmp_path / "photos"
    (folder / "group").mkdir(parents=True)
    (folder / "group/two.jpg").write_bytes(photo(faces))
    (folder / "one.png").write_bytes(photo(faces[:1]))
    (folder / "empty.jpg").write_bytes(encode_jpeg(np.full((120, 160, 3), 200, np.uint8)))
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    (folder / "notes.txt").write_text("ignored")
    catalog = {
        "inference_images": {"type": "fer_pipeline.datasets.ImageFiles", "path": str(folder)}
    }
    project = make_project(tmp_path / "project", small_raw, catalog=catalog)
    kedro_run(project, "data_processing")  # an empty catalog until a model exists
    catalog_of(project).save("model", bundle)
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


def test_image_files_reads_zips(faces, tmp_path):
    from fer_pipeline.datasets import ImageFiles

    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a/one.jpg", photo(faces[:1]))
        z.writestr("readme.md", "x")
    assert ImageFiles(str(archive)).load()["path"].tolist() == ["a/one.jpg"]


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


def test_the_model_loads_from_the_catalog(bundle, small_raw, tmp_path, monkeypatch):
    """The latest versioned model by default (MLflow models: test_tracking.py)."""
    project = make_project(tmp_path / "project", small_raw)
    monkeypatch.chdir(project)
    catalog_of(project).save("model", bundle)
    monkeypatch.setenv("FER_PROJECT_PATH", str(project))
    monkeypatch.delenv("FER_MODEL_URI", raising=False)
    loaded, version = load_model()
    assert loaded.spec == bundle.spec and len(version) > 10


def test_export_parity_on_real_images(bundle, faces, shared_data):
    with zipfile.ZipFile(shared_data / "rafdb/basic/Image/aligned.zip") as archive:
        images = [archive.read(f"aligned/test_{i:04d}_aligned.jpg") for i in range(1, 17)]
    test = pd.DataFrame({"image": images})
    params = {"parity_images": 16, "tolerance": 1e-4, "seed": 0}
    onnx_model, script_model, report = exported_models(bundle, test, params)
    assert report["images"] == 16
    assert max(report["max_abs_logit_difference"].values()) <= 1e-4
    assert onnx_logits(onnx_model, np.zeros((3, 3, 32, 32), np.float32)).shape == (3, 7)
    assert script_model[:2] == b"PK"  # a TorchScript archive


def test_recogniser_classifies_crops_like_the_model(bundle, faces):
    recogniser = FaceRecogniser(recogniser_from_params(bundle, DETECTOR).predictor, FaceDetector())
    whole = recogniser.recognise(faces[0], detect=False)[0]
    probs = recogniser.predictor.probabilities([faces[0]])[0]
    assert whole["probabilities"] == {c: round(float(p), 6) for c, p in zip(CLASSES, probs)}


def test_onnx_and_torch_backends_agree(bundle, faces):
    from fer_pipeline.modelling.predictor import Predictor

    onnx, torch_ = Predictor(bundle, backend="onnx"), Predictor(bundle, backend="torch")
    np.testing.assert_allclose(onnx.probabilities(faces), torch_.probabilities(faces), atol=1e-5)
