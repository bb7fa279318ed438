"""Classification and calibration metrics in NumPy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts; rows are true classes, columns predictions."""
    return np.bincount(
        np.asarray(y_true) * num_classes + np.asarray(y_pred), minlength=num_classes**2
    ).reshape(num_classes, num_classes)


def per_class(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class (0 where undefined)."""
    return confusion_scores(confusion_matrix(y_true, y_pred, num_classes))


def confusion_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class of a confusion matrix."""
    tp = np.diag(cm).astype(float)
    predicted, support = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean F1 over the classes present in ``y_true``."""
    return confusion_macro_f1(confusion_matrix(y_true, y_pred, num_classes))


def confusion_macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes with support in a confusion matrix; NaN when empty."""
    scores = confusion_scores(np.asarray(cm))
    present = scores["support"] > 0
    return float(scores["f1"][present].mean()) if present.any() else float("nan")


def nll(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-probability of the true class; NaN when empty."""
    if not len(y_true):
        return float("nan")
    return float(-np.log(np.maximum(probs[np.arange(len(y_true)), y_true], 1e-12)).mean())


def calibration(y_true: np.ndarray, probs: np.ndarray, bins: int = 15) -> dict[str, Any]:
    """Expected calibration error over ``bins`` equal-width confidence bins, and the
    per-bin confidence, accuracy and count of the reliability diagram."""
    confidence = probs.max(1)
    correct = (probs.argmax(1) == y_true).astype(float)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    conf = np.bincount(which, weights=confidence, minlength=bins)
    acc = np.bincount(which, weights=correct, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, mean_acc = conf / count, acc / count
    ece = float(np.abs(acc - conf).sum() / max(len(y_true), 1))
    return {"ece": ece, "confidence": mean_conf, "accuracy": mean_acc, "count": count}


def classification_report(
    y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], groups: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1, accuracy per group (source),
    NLL, ECE, and the confusion matrix (counts and row-normalised)."""
    y_true = np.asarray(y_true)
    y_pred = probs.argmax(1)
    k = len(classes)
    scores = per_class(y_true, y_pred, k)
    cm = confusion_matrix(y_true, y_pred, k)
    groups = np.asarray(groups)
    return {
        "images": len(y_true),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "macro_f1": macro_f1(y_true, y_pred, k),
        "nll": nll(y_true, probs),
        "ece": calibration(y_true, probs)["ece"],
        "per_class": {
            name: {m: float(scores[m][i]) for m in ("precision", "recall", "f1")}
            | {"support": int(scores["support"][i])}
            for i, name in enumerate(classes)
        },
        "accuracy_per_source": {
            str(g): float((y_pred[groups == g] == y_true[groups == g]).mean())
            for g in sorted(set(groups))
        },
        "confusion_matrix": cm.tolist(),
    }
