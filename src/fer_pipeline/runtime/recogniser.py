"""``Recogniser``: an exported model and a face detector, for Python programs that do not
run Kedro (docs/python-api.md).

It runs the ONNX export with ONNX Runtime, NumPy and OpenCV, as the HTTP API does, and
imports neither torch, timm, Kedro nor MLflow (MLflow only to read a ``models:/`` or
``runs:/`` URI): the project's newest export is found from ``conf/*/catalog*.yml``
read as YAML, not through a Kedro session.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fer_pipeline.data.images import MIN_SIDE, decode_image
from fer_pipeline.data.versions import latest_complete
from fer_pipeline.runtime.classifier import OnnxClassifier
from fer_pipeline.runtime.config import RecognitionConfig
from fer_pipeline.runtime.faces import recogniser_from_params
from fer_pipeline.runtime.model_store import MLFLOW_SCHEMES, load_registered_onnx

"""URIs read from MLflow (the model's ONNX artifact); any other string is a path."""
CATALOG_PATTERNS = ("catalog*", "catalog*/**", "**/catalog*")
"""Where Kedro's config loader finds the catalog in an environment's folder."""
BASE_ENV, DEFAULT_ENV = "base", "local"
"""Kedro's base environment and the one a run uses when none is named."""


@dataclass
class Face:
    """A face found in an image: its ``box`` ``(x, y, width, height)`` in the image's
    pixels, its ``label`` (the most probable class) and the ``probabilities`` of every
    class."""

    box: tuple[int, int, int, int]
    label: str
    probabilities: dict[str, float]

    @property
    def probability(self) -> float:
        """The probability of ``label``."""
        return self.probabilities[self.label]

    def to_dict(self) -> dict[str, Any]:
        """The face as the HTTP API's ``/predict`` answers it (JSON-ready)."""
        return {
            "box": list(self.box),
            "label": self.label,
            "probabilities": dict(self.probabilities),
        }


class Recogniser:
    """Finds the faces in an image and classifies their expression.

    Make one with ``Recogniser.load()``; ``predict(image)`` returns the faces. It may be
    shared by threads.
    """

    def __init__(
        self,
        classifier: OnnxClassifier,
        recognition: RecognitionConfig | None = None,
        version: str = "",
    ):
        self.classifier = classifier
        self.recognition = recognition or RecognitionConfig()
        self.version = version
        """Where the model came from: the export's version, the file or the URI."""
        self._faces = recogniser_from_params(classifier, self.recognition.model_dump())

    @classmethod
    def load(
        cls,
        path_or_models_uri: str | os.PathLike[str] | None = None,
        *,
        recognition: RecognitionConfig | Mapping[str, Any] | None = None,
        project: str | os.PathLike[str] | None = None,
        env: str | None = None,
        int8: bool = False,
        threads: int | None = None,
        **settings: Any,
    ) -> Recogniser:
        """A recogniser running the model at ``path_or_models_uri``.

        Args:
            path_or_models_uri: ``None``, the newest complete export of the project
                (``kedro run --pipelines export``); the path of an ``.onnx`` file, or
                of a versioned folder (``data/06_models/model.onnx``: its newest
                complete version); or an MLflow ``models:/...`` or ``runs:/...`` URI
                (needs MLflow).
            recognition: the face-finding settings (``RecognitionConfig``, or a dict of
                them, such as ``inference`` in ``parameters_inference.yml``).
            project: with no model named, the Kedro project to look in (default: the
                working directory); ``env`` its environment (default: ``local``) and
                ``int8`` its int8 export instead.
            threads: ONNX Runtime's threads (default: one per core).
            **settings: settings of ``RecognitionConfig`` (``detector="haar"``,
                ``min_face=24``...), over those of ``recognition``.
        """
        config = recognition_config(recognition, **settings)
        classifier, version = load_classifier(
            path_or_models_uri, project=project, env=env, int8=int8, threads=threads
        )
        return cls(classifier, config, version)

    @property
    def classes(self) -> list[str]:
        """The classes the model tells apart, in the order of its outputs."""
        return list(self.classifier.classes)

    @property
    def spec(self) -> dict[str, Any]:
        """The model's metadata: name, classes, input size, normalisation, training
        facts."""
        return self.classifier.spec

    def predict(
        self, image: str | os.PathLike[str] | bytes | np.ndarray, detect: bool = True
    ) -> list[Face]:
        """The faces in ``image``, largest first (an empty list when there is none).

        ``image``: the path of an image file, its encoded bytes (JPEG, PNG, WebP...: the
        EXIF orientation is applied, as the HTTP API does), or pixels, a uint8 array
        ``(H, W, 3)`` in RGB order (OpenCV's ``imread`` gives BGR: convert it) or
        ``(H, W)`` grayscale. ``detect=False``: the image is one cropped face.
        """
        pixels = _pixels(image)
        return [
            Face(tuple(face["box"]), face["label"], face["probabilities"])
            for face in self._faces.recognise(pixels, detect)
        ]

    def __repr__(self) -> str:
        return (
            f"Recogniser(model={self.spec.get('name')!r}, version={self.version!r}, "
            f"detector={self.recognition.detector!r})"
        )


def recognition_config(
    recognition: RecognitionConfig | Mapping[str, Any] | None = None, **settings: Any
) -> RecognitionConfig:
    """``RecognitionConfig`` from ``recognition`` (a config, batch inference's
    ``InferenceConfig`` too, or a dict of its settings) and ``settings`` over it; an
    unknown key is an error that names the keys there are."""
    if isinstance(recognition, RecognitionConfig):
        base = recognition.model_dump(include=set(RecognitionConfig.model_fields))
    else:
        base = dict(recognition or {})
    return RecognitionConfig.model_validate({**base, **settings})


def load_classifier(
    path_or_models_uri: str | os.PathLike[str] | None = None,
    *,
    project: str | os.PathLike[str] | None = None,
    env: str | None = None,
    int8: bool = False,
    threads: int | None = None,
) -> tuple[OnnxClassifier, str]:
    """The ONNX model that ``Recogniser.load`` runs, and where it came from (the
    export's version, the file or the URI)."""
    if path_or_models_uri is None:
        found = latest_export(project, env, int8)
        return OnnxClassifier(found, threads), found.parent.name
    if int8:
        raise ValueError(
            "int8 picks the project's int8 export: name that file instead "
            "(data/06_models/model.int8.onnx)"
        )
    target = os.fspath(path_or_models_uri)
    if target.startswith(MLFLOW_SCHEMES):
        try:
            onnx = load_registered_onnx(target)
        except ImportError as exc:
            raise ImportError(
                f"reading {target} needs MLflow, which cannot be imported ({exc}): install "
                "mlflow, or pass the path of an exported .onnx file"
            ) from exc
        return OnnxClassifier(onnx, threads, f"the ONNX model of {target}"), target
    path = Path(target).expanduser()
    if path.is_dir():  # a versioned output: <path>/<version>/<path.name>
        found = latest_complete(path)
        if found is None:
            raise FileNotFoundError(
                f"no complete version in {path} (looked for {path}/*/{path.name}): "
                "pass the path of an .onnx file"
            )
        return OnnxClassifier(found, threads), found.parent.name
    return OnnxClassifier(path, threads), str(path)


def latest_export(
    project: str | os.PathLike[str] | None = None, env: str | None = None, int8: bool = False
) -> Path:
    """The newest complete version of the catalog's ``model_onnx`` (``int8``:
    ``model_onnx_int8``) in ``project`` (default: the working directory), with the
    Kedro environment ``env`` over ``base`` (default: ``local``); incomplete versions
    are skipped with a warning."""
    root = Path(project if project is not None else Path.cwd()).expanduser().resolve()
    name = "model_onnx_int8" if int8 else "model_onnx"
    entry, source = catalog_entry(root / "conf", name, env)
    filepath = entry.get("filepath") if isinstance(entry, dict) else None
    if not isinstance(filepath, str) or "${" in filepath or "://" in filepath:
        raise ValueError(
            f"{name} in {source} has no local filepath this can read ({filepath!r}): "
            "pass the path of the exported .onnx file"
        )
    folder = root / filepath
    found = latest_complete(folder)
    if found is None:
        raise FileNotFoundError(
            f"no exported model in {root}: no complete version of {name} "
            f"({folder}/<version>/{folder.name}, from {source}); run "
            "`kedro run --pipelines export` there first, or pass the path of an .onnx "
            "file or an MLflow models:/ URI"
        )
    return found


def catalog_entry(conf: Path, name: str, env: str | None = None) -> tuple[Any, Path]:
    """Catalog entry ``name`` and the file it is in, as Kedro's config loader merges
    it: the entry of the run environment ``env`` (default ``local``) replaces that of
    ``base``. Read as plain YAML: an entry with ``${...}`` is not resolved."""
    found: tuple[Any, Path] | None = None
    for folder in dict.fromkeys((BASE_ENV, env or DEFAULT_ENV)):
        for path in _catalog_files(conf / folder):
            with open(path) as file:
                content = yaml.safe_load(file) or {}
            if isinstance(content, dict) and name in content:
                found = content[name], path
    if found is None:
        raise FileNotFoundError(
            f"no {name!r} entry in the catalog of {conf} ({'/'.join(CATALOG_PATTERNS)} "
            f"in {BASE_ENV} and {env or DEFAULT_ENV}): is {conf.parent} a Kedro project "
            "of fer_pipeline? Pass project=, or the path of an .onnx file"
        )
    return found


def _catalog_files(folder: Path) -> list[Path]:
    files = {
        path
        for pattern in CATALOG_PATTERNS
        for path in folder.glob(pattern)
        if path.is_file()
        and path.suffix in (".yml", ".yaml", ".json")
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    }
    return sorted(files)


def _pixels(image: str | os.PathLike[str] | bytes | np.ndarray) -> np.ndarray:
    """uint8 ``(H, W)`` or ``(H, W, 3)`` RGB pixels of what ``predict`` takes."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no image file at {path}")
        try:
            return decode_image(path.read_bytes())
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image))
    pixels = np.asarray(image)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.dtype != np.uint8 or not (
        pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)
    ):
        raise ValueError(
            "expected a path, encoded bytes, or uint8 pixels (H, W, 3) RGB or (H, W) "
            f"grayscale; got a {pixels.dtype} array of shape {pixels.shape}"
        )
    height, width = pixels.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ValueError(
            f"the image is {width} x {height} pixels: each side must be at least {MIN_SIDE}"
        )
    return np.ascontiguousarray(pixels)
