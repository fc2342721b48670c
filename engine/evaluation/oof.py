"""Out-of-fold predictions of a cross-validation, and how they are scored: each fold
at a threshold and temperature fitted on the other folds (cross-fitting), the error
count and image-by-image predictions that compare several models on the same folds,
and the ``oof_predictions.csv`` file that carries them. Pure NumPy and scikit-learn:
the audit, the benchmarks and the cross-validation all score folds through here.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from engine import layout
from engine.data.sources import relocate
from engine.evaluation.intervals import metric_intervals
from engine.files import atomic_open

FOLD_METRICS = ("accuracy", "roc_auc", "sensitivity", "specificity", "loss")


def fit_calibration(labels, logits) -> tuple[float, float]:
    from engine.serving.calibration import calibrated, choose_threshold, fit_temperature
    temperature = fit_temperature(labels, logits)
    threshold = choose_threshold(labels, calibrated(logits, temperature), "youden")
    return temperature, threshold


def fold_summary(labels, logits, fold_of, folds: int, groups=None) -> dict:
    """Each fold's figures at a threshold and temperature fitted on the other folds'
    out-of-fold predictions, and their mean and sample standard deviation (ddof=1)
    over folds. ``loss`` is the binary cross-entropy of the uncalibrated model.
    ``pooled``: every out-of-fold image at once, each at its fold's cross-fitted
    threshold (the error count of ``out_of_fold_errors``), with 95% intervals that
    resample ``groups`` (duplicate groups; None = images). The standard deviation over
    five folds is not an interval on the pooled figure; this is."""
    from engine.evaluation.evaluate import classification_report
    from engine.evaluation.metrics import binary_cross_entropy_from_logits
    from engine.serving.calibration import calibrated
    labels, logits, fold_of = np.asarray(labels), np.asarray(logits, np.float64), np.asarray(fold_of)
    per_fold = []
    for fold in range(folds):
        held, others = fold_of == fold, fold_of != fold
        temperature, threshold = fit_calibration(labels[others], logits[others])
        probabilities = calibrated(logits[held], temperature)
        report = classification_report(labels[held], probabilities, threshold)
        loss = binary_cross_entropy_from_logits(labels[held], logits[held])
        per_fold.append({"fold": fold, "images": int(held.sum()), "threshold": threshold,
                         "temperature": temperature, "loss": loss,
                         **{k: report[k] for k in FOLD_METRICS if k != "loss"}})
    mean, std = {}, {}
    for key in FOLD_METRICS:
        values = np.array([f[key] for f in per_fold if f[key] is not None], np.float64)
        mean[key] = float(values.mean()) if len(values) else None
        std[key] = float(values.std(ddof=1)) if len(values) > 1 else None
    from sklearn.metrics import roc_auc_score
    pooled_auc = float(roc_auc_score(labels, logits)) if len(np.unique(labels)) == 2 else None
    summary = {"folds": per_fold, "mean": mean, "std": std, "pooled_oof_roc_auc": pooled_auc}
    summary["pooled"] = pooled_figures(summary, labels, logits, fold_of, groups)
    return summary


def pooled_figures(summary: dict, labels, logits, fold_of, groups=None) -> dict:
    """Pooled out-of-fold accuracy, sensitivity, specificity (each image at its fold's
    cross-fitted threshold) and ROC AUC (of the cross-fitted probabilities), with
    their group-bootstrap intervals under ``ci``."""
    labels = np.asarray(labels).astype(int)
    probabilities = cross_fitted_probabilities(summary, logits, fold_of)
    thresholds = np.vectorize({f["fold"]: f["threshold"] for f in summary["folds"]}.get)(np.asarray(fold_of))
    predicted = probabilities >= thresholds
    tp, tn = int((predicted & (labels == 1)).sum()), int((~predicted & (labels == 0)).sum())
    positives, negatives = int((labels == 1).sum()), int((labels == 0).sum())
    from sklearn.metrics import roc_auc_score
    both = positives and negatives
    return {"images": int(len(labels)), "errors": int(len(labels) - tp - tn),
            "accuracy": (tp + tn) / len(labels) if len(labels) else None,
            "sensitivity": tp / positives if positives else None,
            "specificity": tn / negatives if negatives else None,
            "roc_auc": float(roc_auc_score(labels, probabilities)) if both else None,
            "threshold_rule": "each fold at its own threshold, fitted on the other folds",
            "ci": metric_intervals(labels, probabilities, thresholds, groups)}


def out_of_fold_errors(summary: dict) -> int:
    """Misclassified out-of-fold images of a ``fold_summary``, each fold at its own
    cross-fitted threshold: the count the Keras comparison ranks by."""
    return sum(round((1 - f["accuracy"]) * f["images"]) for f in summary["folds"])


def cross_fitted_probabilities(summary: dict, logits, fold_of) -> np.ndarray:
    """Each out-of-fold image's probability calibrated with its fold's temperature from
    ``fold_summary`` (fitted on the other folds)."""
    from engine.serving.calibration import calibrated
    logits, fold_of = np.asarray(logits, np.float64), np.asarray(fold_of)
    probabilities = np.zeros(len(logits))
    for fold in summary["folds"]:
        held = fold_of == fold["fold"]
        probabilities[held] = calibrated(logits[held], fold["temperature"])
    return probabilities


def cross_fitted_predictions(summary: dict, logits, fold_of) -> np.ndarray:
    """Each out-of-fold image's predicted label (0/1) at its fold's threshold, as
    ``fold_summary`` scored it: the per-image view of ``out_of_fold_errors``, so that
    several models' errors can be compared image by image."""
    probabilities = cross_fitted_probabilities(summary, logits, fold_of)
    thresholds = {f["fold"]: f["threshold"] for f in summary["folds"]}
    return (probabilities >= np.vectorize(thresholds.get)(np.asarray(fold_of))).astype(int)


def write_oof(path: Path, pool, logits, temperature: float) -> None:
    from engine.serving.calibration import calibrated
    probabilities = calibrated(logits, temperature)
    with atomic_open(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "probability", "fold", "logit", "group", "modality"])
        for row, probability, logit in zip(pool, probabilities, logits):
            writer.writerow([row.path, row.original_label, f"{probability:.6f}", row.fold, f"{logit:.6f}",
                             row.group, row.modality])


def read_oof(path: str | os.PathLike) -> list[dict]:
    """Rows of oof_predictions.csv, with Br35H paths mapped onto this machine's copy."""
    with open(path, newline="") as handle:
        return [{**r, "path": relocate(r["path"])} for r in csv.DictReader(handle)]
