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
    # Every distinct score is a threshold (no dropped points), so the next one down is
    # the highest score below the chosen threshold.
    fpr, tpr, thresholds = roc_curve(labels, probabilities, drop_intermediate=False)
    thresholds = np.clip(thresholds, 0.0, 1.0)
    if method == "youden":
        best = int(np.argmax(tpr - fpr))
    elif method == "sensitivity":
        best = int(np.nonzero(tpr >= target_sensitivity)[0][0])
    else:
        raise ValueError(f"unknown threshold method {method!r}")
    return _inside(thresholds, best)


THRESHOLD_RANGE = (0.02, 0.98)


def _inside(thresholds: np.ndarray, best: int) -> float:
    """The chosen ROC point's threshold is a validation score itself, the edge of the
    interval of thresholds that make the same decisions on validation. Take the middle
    of that interval (on the logit scale, down to the next lower score) instead: on a
    small, separated validation set the edge is the lowest tumor score, often 1.0 after
    rounding, and calls every new tumor "no tumor". Kept within THRESHOLD_RANGE, so no
    stored threshold is 0 or 1."""
    upper = float(thresholds[best])
    lower = float(thresholds[best + 1]) if best + 1 < len(thresholds) else 0.0
    eps = 1e-6
    logit = lambda p: np.log(np.clip(p, eps, 1 - eps) / (1 - np.clip(p, eps, 1 - eps)))  # noqa: E731
    middle = 1.0 / (1.0 + np.exp(-(logit(upper) + logit(lower)) / 2))
    return float(np.clip(middle, *THRESHOLD_RANGE))


def _nll(labels, logits, temperature):
    z = logits / temperature
    return float(np.mean(np.logaddexp(0.0, z) - labels * z))


TEMPERATURE_BOUNDS = (0.01, 100.0)
MIN_CALIBRATION_IMAGES = 30  # below this the page says the temperature is mostly the prior
_PRIOR_WEIGHT = 2.0  # log T ~ N(0, 1/2): as strong as two validation images


def fit_temperature(labels, logits) -> float:
    """Temperature T > 0 minimising the validation negative log-likelihood of
    sigmoid(logit / T), with a Gaussian prior on log T centred on T = 1.

    Why the prior: on a separated validation set the likelihood keeps rising as T goes
    to 0 (every probability to 0 or 1), so an unregularised fit ends on its lower bound;
    with 8 validation images it said "probability 1.000" for everything. The prior
    weighs as much as two images: negligible for a few hundred, decisive for a handful."""
    labels = np.asarray(labels, np.float64)
    logits = np.asarray(logits, np.float64)
    if not len(labels):
        return 1.0
    weight = _PRIOR_WEIGHT / len(labels)
    result = minimize_scalar(lambda log_t: _nll(labels, logits, np.exp(log_t)) + weight * log_t ** 2,
                             bounds=tuple(np.log(TEMPERATURE_BOUNDS)), method="bounded")
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
