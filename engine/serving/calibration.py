"""Choosing the decision threshold and the temperature on validation data, and
measuring calibration. Pure NumPy/SciPy/scikit-learn.

Why a threshold other than 0.5: a missed tumor costs more than a false alarm, so a
user may ask for the lowest threshold that reaches a target sensitivity. Why
temperature scaling: a network trained to near-zero loss is over-confident; one scalar
fitted on validation makes the probabilities mean what they say without changing any
decision order (AUC is unchanged).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import roc_curve


def calibrated(logits, temperature: float = 1.0) -> np.ndarray:
    """Tumor probability sigmoid(logit / T): the one place temperature is applied."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64) / float(temperature)))


def choose_threshold(labels, probabilities, method: str = "youden",
                     target_sensitivity: float = 0.98) -> float:
    """``youden``: the threshold maximising sensitivity + specificity - 1.
    ``sensitivity``: the highest threshold whose sensitivity is >= the target (the
    fewest false alarms that still miss no more tumors than allowed)."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, np.float64)
    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, probabilities)
    thresholds = np.clip(thresholds, 0.0, 1.0)
    if method == "youden":
        best = int(np.argmax(tpr - fpr))
        return float(thresholds[best])
    if method == "sensitivity":
        reaching = np.nonzero(tpr >= target_sensitivity)[0]
        return float(thresholds[reaching[0]])
    raise ValueError(f"unknown threshold method {method!r}")


def _nll(labels, logits, temperature):
    z = logits / temperature
    return float(np.mean(np.logaddexp(0.0, z) - labels * z))


def fit_temperature(labels, logits) -> float:
    """Temperature T > 0 minimising the validation negative log-likelihood of
    sigmoid(logit / T)."""
    labels = np.asarray(labels, np.float64)
    logits = np.asarray(logits, np.float64)
    result = minimize_scalar(lambda log_t: _nll(labels, logits, np.exp(log_t)),
                             bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def expected_calibration_error(labels, probabilities, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width probability bins, weighted by
    bin size, for the tumor probability (reliability of P(tumor))."""
    labels = np.asarray(labels, np.float64)
    probabilities = np.asarray(probabilities, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            error += mask.mean() * abs(labels[mask].mean() - probabilities[mask].mean())
    return float(error)
