"""The Python API (``fer_pipeline.runtime``): docs/python-api.md's example run as it is,
what ``Recogniser.load`` finds, what ``predict`` takes and returns, on real faces."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import PROJECT, catalog_of, make_project
from fastapi.testclient import TestClient
from pydantic import ValidationError
from serving_fixtures import photo

from fer_pipeline.data.images import NotAnImage, decode_image, encode_jpeg
from fer_pipeline.data.schema import CLASSES
from fer_pipeline.modelling.export import to_onnx
from fer_pipeline.pipelines.inference.config import InferenceConfig
from fer_pipeline.runtime import Face, Recogniser, RecognitionConfig
from fer_pipeline.runtime.classifier import OnnxClassifier
from fer_pipeline.runtime.faces import recogniser_from_params
from fer_pipeline.serving.app import create_app

DOC = PROJECT / "docs" / "python-api.md"
HEAVY = ("torch", "timm", "kedro", "mlflow")
"""What the runtime never imports."""
LINE = re.compile(r"(\w+) (\d+)% at x=(\d+) y=(\d+), (\d+) x (\d+) px")
"""A line the documented example prints."""


def documented_example() -> str:
    """The first Python block of docs/python-api.md, as it is."""
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)[0]


@pytest.fixture(scope="module")
def onnx_bytes(bundle) -> bytes:
    """A real, quickly trained model's ONNX export, metadata included."""
    return to_onnx(bundle)


@pytest.fixture(scope="module")
def exported(onnx_bytes, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    path.write_bytes(onnx_bytes)
    return path


def run_python(code: str, cwd: Path) -> list[str]:
    """The lines ``code`` prints in a fresh interpreter, then the heavy modules it has
    imported."""
    check = f"\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    result = subprocess.run(
        [sys.executable, "-c", code + check], cwd=cwd, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()


def test_the_documented_example_runs_without_torch_kedro_or_mlflow(
    onnx_bytes, faces, tmp_path, monkeypatch
):
    """The page's example, as it is, in a project whose export Kedro wrote: it prints
    each face of a photo and imports neither torch, timm, Kedro nor MLflow."""
    example = documented_example()
    assert len(example.strip().splitlines()) <= 10
    project = make_project(tmp_path / "project", tmp_path / "raw")
    monkeypatch.chdir(project)
    catalog_of(project).save("model_onnx", onnx_bytes)  # where the export pipeline writes
    (project / "photo.jpg").write_bytes(photo(faces))

    *printed, heavy = run_python(example, project)

    assert heavy == "[]"
    expected = Recogniser.load(project=project).predict(project / "photo.jpg")
    assert len(printed) == len(expected) == 2
    for line, face in zip(printed, expected):
        label, percent, *box = LINE.fullmatch(line).groups()
        assert label == face.label and label in CLASSES
        assert int(percent) == round(face.probability * 100)
        assert tuple(map(int, box)) == face.box


def test_predict_takes_paths_bytes_and_pixels_and_answers_as_the_api(exported, faces, tmp_path):
    recogniser = Recogniser.load(exported, detector="haar")
    data = photo(faces)
    (tmp_path / "photo.jpg").write_bytes(data)
    pixels = decode_image(data)

    found = recogniser.predict(data)
    assert len(found) == 2 and all(isinstance(face, Face) for face in found)
    for same in (str(tmp_path / "photo.jpg"), tmp_path / "photo.jpg", pixels, list(pixels)):
        assert recogniser.predict(same) == found
    areas = [w * h for _, _, w, h in (face.box for face in found)]
    assert areas == sorted(areas, reverse=True)  # largest first
    for face in found:
        assert face.label in CLASSES and face.label == max(
            face.probabilities, key=face.probabilities.get
        )
        assert face.probability == face.probabilities[face.label]
        assert sum(face.probabilities.values()) == pytest.approx(1, abs=1e-4)
    gray = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    assert [f.box for f in recogniser.predict(gray)] == [f.box for f in found]
    assert [f.box for f in recogniser.predict(gray[..., None])] == [f.box for f in found]
    (whole,) = recogniser.predict(faces[0], detect=False)
    assert whole.box == (0, 0, 100, 100)
    assert recogniser.predict(np.full((220, 400, 3), 120, np.uint8)) == []

    # The same faces, in the same shape, as the HTTP API answers for this image.
    served = recogniser_from_params(OnnxClassifier(exported), recogniser.recognition.model_dump())
    app = create_app(recogniser=served, version="v")
    with TestClient(app, base_url="http://localhost") as client:
        answer = client.post("/predict", files={"file": ("p.jpg", data, "image/jpeg")})
    assert answer.status_code == 200
    assert [face.to_dict() for face in found] == answer.json()["faces"]

    assert recogniser.classes == list(CLASSES) and recogniser.version == str(exported)
    assert recogniser.spec["image_size"] == 32 and "haar" in repr(recogniser)


def test_what_predict_refuses_is_named(exported, tmp_path):
    recogniser = Recogniser.load(exported)
    with pytest.raises(ValueError, match=r"uint8 pixels .* float64 array of shape \(64, 64, 3\)"):
        recogniser.predict(np.zeros((64, 64, 3)))
    with pytest.raises(ValueError, match=r"shape \(64, 64, 4\)"):
        recogniser.predict(np.zeros((64, 64, 4), np.uint8))
    with pytest.raises(ValueError, match="each side must be at least 8"):
        recogniser.predict(np.zeros((4, 64), np.uint8))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent.jpg"))):
        recogniser.predict(tmp_path / "absent.jpg")
    with pytest.raises(NotAnImage):
        recogniser.predict(b"not an image")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(encode_jpeg(np.zeros((64, 64), np.uint8))[:200])
    with pytest.raises(ValueError, match=rf"{re.escape(str(cut))}: truncated JPEG"):
        recogniser.predict(cut)


def test_settings_are_recognition_configs_checked_by_name(exported, faces):
    small = cv2.resize(decode_image(photo(faces)), None, fx=0.35, fy=0.35)  # faces ~40 px
    assert Recogniser.load(exported, detector="haar").predict(small) == []  # min_face 48
    for recogniser in (
        Recogniser.load(exported, detector="haar", min_face=24),
        Recogniser.load(exported, recognition=RecognitionConfig(detector="haar", min_face=24)),
        Recogniser.load(exported, recognition={"detector": "haar"}, min_face=24),
        # batch inference's parameters, whose own keys are left out
        Recogniser.load(exported, recognition=InferenceConfig(detector="haar", min_face=24)),
    ):
        assert recogniser.recognition == RecognitionConfig(detector="haar", min_face=24)
        assert len(recogniser.predict(small)) == 1
    with pytest.raises(ValidationError, match="did you mean 'min_face'"):
        Recogniser.load(exported, min_fase=24)
    with pytest.raises(ValidationError, match="detector"):
        Recogniser.load(exported, detector="dlib")


def test_load_finds_the_newest_complete_export_and_names_what_it_looked_for(
    onnx_bytes, tmp_path, caplog
):
    project = make_project(tmp_path / "project", tmp_path / "raw")
    folder = project / "data/06_models/model.onnx"  # the catalog's versioned model_onnx
    with pytest.raises(FileNotFoundError, match="no exported model") as caught:
        Recogniser.load(project=project)
    for named in (str(folder), "conf/base/catalog.yml", "kedro run --pipelines export"):
        assert named in str(caught.value)

    complete = folder / "2026-01-01T00.00.00.000Z" / "model.onnx"
    newest = folder / "2026-01-02T00.00.00.000Z" / "model.onnx"
    for path, data in ((complete, onnx_bytes), (newest, onnx_bytes[:1000])):
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
    (newest.parent / ".incomplete").touch()  # an export killed half-way
    with caplog.at_level("WARNING"):
        assert Recogniser.load(project=project).version == complete.parent.name
    assert f"Skipping {newest}" in caplog.text
    assert Recogniser.load(folder).version == complete.parent.name  # the versioned folder

    with pytest.raises(FileNotFoundError, match=r"model_onnx_int8 \(.*model\.int8\.onnx"):
        Recogniser.load(project=project, int8=True)
    with pytest.raises(ValueError, match="int8 picks the project's int8 export"):
        Recogniser.load(complete, int8=True)
    other = project / "conf" / "other"  # an environment's entry replaces base's
    other.mkdir()
    entry = {"type": "fer_pipeline.datasets.BytesDataset", "filepath": "elsewhere/m.onnx"}
    (other / "catalog.yml").write_text(yaml.safe_dump({"model_onnx": {**entry, "versioned": True}}))
    with pytest.raises(FileNotFoundError, match=r"elsewhere/m\.onnx.*conf/other/catalog\.yml"):
        Recogniser.load(project=project, env="other")
    with pytest.raises(FileNotFoundError, match="no 'model_onnx' entry in the catalog"):
        Recogniser.load(project=tmp_path / "not-a-project")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent.onnx"))):
        Recogniser.load(tmp_path / "absent.onnx")


def test_mlflow_uris_are_read_by_mlflow_alone(onnx_bytes, monkeypatch):
    from fer_pipeline.runtime import recogniser

    asked = []
    monkeypatch.setattr(
        recogniser, "load_registered_onnx", lambda uri: asked.append(uri) or onnx_bytes
    )
    champion = "models:/fer_pipeline@champion"
    assert Recogniser.load(champion).version == champion
    assert Recogniser.load("runs:/abc/model").classes == list(CLASSES)
    assert asked == [champion, "runs:/abc/model"]
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if MLflow were absent
    with pytest.raises(ImportError, match="reading models:/fer@champion needs MLflow"):
        Recogniser.load("models:/fer@champion")


def test_the_settings_class_is_the_pipelines_own(tmp_path):
    """The runtime imports no Kedro; imported later, the pipeline shares its class."""
    code = (
        "import sys\n"
        "from fer_pipeline.runtime import RecognitionConfig\n"
        "assert 'kedro' not in sys.modules\n"
        "from fer_pipeline.pipelines.inference import create_pipeline, nodes\n"
        "import fer_pipeline.pipelines.inference.config as config\n"
        "assert 'kedro' in sys.modules and create_pipeline().nodes\n"
        "assert config.RecognitionConfig is RecognitionConfig\n"
        "assert nodes.InferenceConfig is config.InferenceConfig\n"
        "assert issubclass(config.InferenceConfig, RecognitionConfig)\n"
        "print('shared')\n"
    )
    assert run_python(code, tmp_path)[0] == "shared"
