"""Binary classification metrics computed after the forward pass, in NumPy and
scikit-learn (never hand-rolled AUC). Used each epoch by training and by evaluation.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score


def _safe_ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


def binary_cross_entropy_from_logits(labels, logits) -> float:
    """Mean binary cross-entropy of stored logits, in the stable form
    max(z, 0) - z*y + log(1 + exp(-|z|)) that tf.nn.sigmoid_cross_entropy_with_logits
    (the training loss, engine.training.steps.per_example_loss) uses, so a fold's loss means
    the same as the loss logged during training."""
    labels = np.asarray(labels, np.float64).ravel()
    logits = np.asarray(logits, np.float64).ravel()
    losses = np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))
    return float(np.mean(losses))


def binary_metrics(labels, probabilities, threshold: float = 0.5) -> dict:
    """accuracy, auc, sensitivity (tumor recall), specificity at ``threshold``.
    AUC is None when only one class is present (it is undefined then)."""
    labels = np.asarray(labels).astype(int).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    predicted = (probabilities >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    auc = roc_auc_score(labels, probabilities) if len(np.unique(labels)) == 2 else None
    return {**confusion_metrics(tp, fp, tn, fn), "auc": None if auc is None else float(auc)}


def confusion_metrics(tp: int, fp: int, tn: int, fn: int) -> dict:
    """accuracy, sensitivity (tumor recall) and specificity from confusion counts (None
    where a denominator is 0). Also what the train step's device-side counts become."""
    return {"accuracy": _safe_ratio(tp + tn, tp + fp + tn + fn),
            "sensitivity": _safe_ratio(tp, tp + fn),
            "specificity": _safe_ratio(tn, tn + fp)}
