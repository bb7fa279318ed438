"""Thin wrappers of ``fer_pipeline.modelling`` for the evaluation pipeline."""

from __future__ import annotations

import logging
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from fer_pipeline.data.schema import CLASSES
from fer_pipeline.data.shards import Shards
from fer_pipeline.modelling.calibration import fit_temperature
from fer_pipeline.modelling.evaluate import confusion_figure, predict_shards, reliability_figure
from fer_pipeline.modelling.metrics import calibration, classification_report, nll
from fer_pipeline.modelling.models import ModelBundle
from fer_pipeline.tracking.registry import promote
from fer_pipeline.tracking.runs import split_digest

from .config import EvaluationConfig

logger = logging.getLogger(__name__)

SUMMARY = ("accuracy", "macro_f1", "nll", "ece", "ece_uncalibrated")


def evaluate_model(
    model: ModelBundle, val: Shards, test: Shards, evaluation: EvaluationConfig
) -> tuple[dict[str, Any], dict[str, Any], plt.Figure, plt.Figure, pd.DataFrame]:
    """Accuracy, macro-F1, per-class precision/recall/F1, NLL, ECE, and figures per
    source (``per_source``: in-domain or cross-domain) on val and test, plain and (when
    ``tta`` is on) with test-time augmentation, read and decoded a row group at a time
    (at the model's ``image_size``); returns
    the report, its headline figures for MLflow, the confusion matrices, the
    reliability diagrams and the per-image test predictions. ``evaluation``: Kedro
    builds and checks it from the parameters before the run (a dict is checked here).

    The probabilities are calibrated: plain ones by the model's temperature (fitted on
    val by the training), averaged TTA ones by a second temperature fitted here on val's
    (``tta_temperature``); each block also gives ``nll_uncalibrated`` and
    ``ece_uncalibrated``, the figures without them, and the reliability plot shows
    test before and after."""
    evaluation = EvaluationConfig.model_validate(evaluation)
    tta_views = evaluation.tta_views if evaluation.tta else None
    report: dict[str, Any] = {"model": model.spec.to_dict()}
    diagrams, matrices = {}, {}
    tta_temperature = 1.0
    for name, shards in (("val", val), ("test", test)):
        frame, views = predict_shards(
            model,
            shards,
            device=evaluation.device,
            precision=evaluation.precision,
            batch_size=evaluation.batch_size,
            tta_views=tta_views,
            tta_augment=evaluation.tta_augment.model_dump(),
            seed=evaluation.seed,
        )
        labels = frame["label"].to_numpy()
        scored = {"plain": (views[0].softmax(-1), views[0] / model.spec.temperature)}
        if tta_views is not None:
            # Each view calibrated by the model's temperature, then their average by its own.
            averaged = (views / model.spec.temperature).softmax(-1).mean(0).log()
            if name == "val":
                tta_temperature = fit_temperature(averaged, torch.from_numpy(labels))
                report["tta_temperature"] = tta_temperature
            scored["tta"] = (views.softmax(-1).mean(0), averaged / tta_temperature)
        report[name] = {}
        for kind, (uncalibrated, logits) in scored.items():
            probs = logits.softmax(-1).numpy()
            before = calibration(labels, uncalibrated.numpy())
            report[name][kind] = classification_report(labels, probs, CLASSES, frame["source"])
            report[name][kind] |= {
                "nll_uncalibrated": nll(labels, uncalibrated.numpy()),
                "ece_uncalibrated": before["ece"],
                "per_source": _per_source(labels, probs, frame["source"], model.spec.sources),
            }
            if name == "test":
                label = "test" if kind == "plain" else "test, TTA"
                diagrams[f"{label}, uncalibrated"] = before
                diagrams[f"{label}, calibrated"] = calibration(labels, probs)
        matrices[name] = report[name]["plain"]["confusion_matrix"]
    best = (scored["tta"] if "tta" in scored else scored["plain"])[1].softmax(-1).numpy()
    predictions = frame[["source", "source_id", "label"]].assign(  # test's, the last split
        predicted=best.argmax(1), **{f"p_{c}": best[:, i] for i, c in enumerate(CLASSES)}
    )
    return (
        report,
        _headline_metrics(report),
        confusion_figure(matrices, CLASSES),
        reliability_figure(diagrams),
        predictions,
    )


def _per_source(
    labels: np.ndarray, probs: np.ndarray, sources: pd.Series, trained_on: list[str] | None
) -> dict[str, dict[str, Any]]:
    """Accuracy, macro-F1, ECE and recall per class of each source, and its domain:
    ``in`` when the model trained on it (all do without ``training.sources``), else
    ``cross``: the cross-dataset figure."""
    figures = {}
    for source in sorted(set(sources)):
        rows = (sources == source).to_numpy()
        scores = classification_report(labels[rows], probs[rows], CLASSES, sources[rows])
        figures[source] = {
            "domain": "in" if trained_on is None or source in trained_on else "cross",
            **{key: scores[key] for key in ("images", "accuracy", "macro_f1", "ece")},
            "recall": {c: scores["per_class"][c]["recall"] for c in CLASSES},
        }
    return figures


def promote_model(
    scores: dict[str, Any],
    model: ModelBundle,
    registration: dict[str, Any],
    test: Shards,
) -> dict[str, Any]:
    """The evaluation report with the registry's decision: the registered version of
    ``model`` becomes ``champion`` when its plain test accuracy beats the champion's on
    the same test set (same content digest), ``challenger`` otherwise."""
    if registration.get("weights_digest") != model.digest():
        logger.warning("The latest registered model is not the evaluated one: no alias set")
        return scores | {"registry": {"alias": None, "reason": "model not registered"}}
    accuracy = scores["test"]["plain"]["accuracy"]
    digest = split_digest(test.read(["pixel_hash", "label"]))
    return scores | {"registry": promote(registration, accuracy, digest)}


def _headline_metrics(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{split[_tta]_metric: {value, step}}`` and accuracy per source, for MLflow."""
    metrics = {}
    for split in ("val", "test"):
        for kind, scores in report[split].items():
            prefix = split if kind == "plain" else f"{split}_tta"
            for metric in SUMMARY:
                if not np.isnan(scores[metric]):
                    metrics[f"{prefix}_{metric}"] = {"value": scores[metric], "step": 0}
            for source, accuracy in scores["accuracy_per_source"].items():
                metrics[f"{prefix}_accuracy_{source}"] = {"value": accuracy, "step": 0}
    return metrics
