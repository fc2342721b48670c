"""95% confidence intervals that resample duplicate groups (patients where known), not
images: the one helper behind every interval the project prints.

Why groups: Br35H is mostly copies of about a thousand slices, so its 444 test images
are 113 distinct slices. A bootstrap over images treats 40 copies of one slice as 40
independent observations and gives an interval far too narrow; resampling whole groups
(a cluster bootstrap) keeps copies together, as they were drawn together. Resampling
duplicating every image leaves this interval unchanged (tests/test_intervals.py).

Method: ``n_resamples`` draws of as many groups as there are, with replacement; each
draw is a vector of per-image weights (how often the image's group was drawn), and every
metric is computed as a weighted metric of those weights. Intervals are percentile
intervals (2.5th and 97.5th percentile of the resampled values), seeded. All of it is
vectorised: the weights of all resamples form one matrix, counts are a matrix product
and the ROC AUC a weighted rank sum over one sort, so 2,000 resamples of 3,000 images
take well under a second (time and memory grow as resamples x images).
Pure NumPy, no TensorFlow: the UI imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
METHOD = "group bootstrap (duplicate groups resampled), percentile interval"


def _group_codes(groups, count: int) -> np.ndarray:
    """Dense codes 0..G-1 for ``groups`` (any hashable values); None = one group per image."""
    if groups is None:
        return np.arange(count)
    values = np.asarray([str(g) for g in groups])
    if len(values) != count:
        raise ValueError(f"{len(values)} groups for {count} images")
    return np.unique(values, return_inverse=True)[1].ravel()


@dataclass(frozen=True)
class Resamples:
    """The per-image weights of every resample: ``weights[r, i]`` is how often image i's
    group was drawn in resample r. Shared by every metric of one data set and by both
    models of a paired comparison, so all intervals of a report come from the same draws."""
    weights: np.ndarray  # [resamples, images] float64
    groups: int

    @classmethod
    def draw(cls, count: int, groups=None, n_resamples: int = DEFAULT_RESAMPLES,
             seed: int = 0) -> "Resamples":
        codes = _group_codes(groups, count)
        group_count = int(codes.max()) + 1 if count else 0
        rng = np.random.default_rng(seed)
        if group_count == 0:
            return cls(np.zeros((n_resamples, 0)), 0)
        # How often each group is drawn: G groups drawn with replacement per resample,
        # counted with one bincount over all resamples (a multinomial per row is slower).
        picks = rng.integers(0, group_count, size=(n_resamples, group_count))
        picks += (np.arange(n_resamples) * group_count)[:, None]
        drawn = np.bincount(picks.ravel(), minlength=n_resamples * group_count).reshape(n_resamples, group_count)
        return cls(drawn[:, codes].astype(np.float64), group_count)


def _weighted_confusion(weights, labels, predicted):
    labels, predicted = np.asarray(labels, bool), np.asarray(predicted, bool)
    tp = weights @ (labels & predicted)
    tn = weights @ (~labels & ~predicted)
    fp = weights @ (~labels & predicted)
    fn = weights @ (labels & ~predicted)
    return tp, tn, fp, fn


def _ratio(numerator, denominator):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def weighted_auc(weights: np.ndarray, labels, scores) -> np.ndarray:
    """ROC AUC of every row of ``weights`` (ties count a half), NaN where a resample holds
    one class only. One sort for all rows: the AUC is the weighted share of
    (positive, negative) pairs ranked right."""
    weights = np.atleast_2d(weights)
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    order = np.argsort(scores, kind="mergesort")
    scores, labels, weights = scores[order], labels[order], weights[:, order]
    # Images with equal scores form one tie block; each positive beats the negatives of
    # earlier blocks and ties with half of its own block's negatives.
    _, block, block_counts = np.unique(scores, return_inverse=True, return_counts=True)
    negative = weights * ~labels
    block_negative = np.zeros((weights.shape[0], len(block_counts)))
    np.add.at(block_negative.T, block, negative.T)
    below = np.cumsum(block_negative, axis=1) - block_negative  # negatives in earlier blocks
    credit = below[:, block] + 0.5 * block_negative[:, block]
    positive_weights = weights * labels
    pairs = positive_weights.sum(axis=1) * negative.sum(axis=1)
    return _ratio((positive_weights * credit).sum(axis=1), pairs)


def resampled_metrics(resamples: Resamples, labels, probabilities, threshold: float) -> dict[str, np.ndarray]:
    """accuracy, sensitivity, specificity, balanced accuracy and ROC AUC of every resample."""
    labels = np.asarray(labels).astype(int).ravel()
    probabilities = np.asarray(probabilities, np.float64).ravel()
    weights = resamples.weights
    tp, tn, fp, fn = _weighted_confusion(weights, labels, probabilities >= threshold)
    sensitivity, specificity = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    return {"accuracy": _ratio(tp + tn, tp + tn + fp + fn), "sensitivity": sensitivity,
            "specificity": specificity, "balanced_accuracy": (sensitivity + specificity) / 2,
            "roc_auc": weighted_auc(weights, labels, probabilities)}


def percentile_interval(values, level: float = DEFAULT_LEVEL) -> list[float] | None:
    """[low, high] of the finite values, None when fewer than half the resamples are
    defined (for example a class missing from most draws)."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    if finite.size < max(1, values.size // 2):
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return [float(low), float(high)]


def metric_intervals(labels, probabilities, threshold: float, groups=None, *,
                     n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                     level: float = DEFAULT_LEVEL) -> dict:
    """95% intervals of accuracy, sensitivity, specificity, balanced accuracy and ROC AUC
    at ``threshold``, resampling ``groups`` (None = images). The ``ci`` entry of every
    evaluation file: ``{"accuracy": [low, high], ..., "method", "resamples", "groups",
    "level", "seed"}``."""
    labels = np.asarray(labels).astype(int).ravel()
    resamples = Resamples.draw(len(labels), groups, n_resamples, seed)
    values = resampled_metrics(resamples, labels, probabilities, threshold)
    result = {name: percentile_interval(v, level) for name, v in values.items()}
    result.update({"method": METHOD if groups is not None else "bootstrap over images, percentile interval",
                   "resamples": int(n_resamples), "groups": int(resamples.groups),
                   "level": float(level), "seed": int(seed)})
    return result


def paired_difference(labels, probabilities_a, probabilities_b, threshold_a: float,
                      threshold_b: float, groups=None, *, n_resamples: int = DEFAULT_RESAMPLES,
                      seed: int = 0, level: float = DEFAULT_LEVEL) -> dict:
    """Model B minus model A on the same images, each metric's difference with a paired
    group-bootstrap interval (both models scored on the same draws, so what the images
    share cancels): ``{"accuracy": {"difference", "ci"}, "roc_auc": ...}``."""
    labels = np.asarray(labels).astype(int).ravel()
    resamples = Resamples.draw(len(labels), groups, n_resamples, seed)
    a = resampled_metrics(resamples, labels, probabilities_a, threshold_a)
    b = resampled_metrics(resamples, labels, probabilities_b, threshold_b)
    everyone = Resamples(np.ones((1, len(labels))), resamples.groups)
    point_a = resampled_metrics(everyone, labels, probabilities_a, threshold_a)
    point_b = resampled_metrics(everyone, labels, probabilities_b, threshold_b)
    return {name: {"difference": float(point_b[name][0] - point_a[name][0]),
                   "ci": percentile_interval(b[name] - a[name], level)}
            for name in ("accuracy", "roc_auc", "sensitivity", "specificity")}


def format_with_ci(value, ci, *, percent: bool = True, digits: int | None = None) -> str:
    """"87.6% (84.4–90.5)" for a share, "0.964 (0.941–0.980)" for an AUC; "–" when the
    value is missing, the point alone when the interval is."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if percent:
        digits = 1 if digits is None else digits
        text = f"{100 * value:.{digits}f}%"
        return text if not ci else f"{text} ({100 * ci[0]:.{digits}f}–{100 * ci[1]:.{digits}f})"
    digits = 3 if digits is None else digits
    text = f"{value:.{digits}f}"
    return text if not ci else f"{text} ({ci[0]:.{digits}f}–{ci[1]:.{digits}f})"


def delong(labels, scores_a, scores_b) -> dict:
    """DeLong's test for two correlated ROC AUCs on the same images (DeLong et al. 1988,
    in the fast form of Sun and Xu 2014): each AUC, their difference (B minus A), its
    standard error and the two-sided p-value. Ties count a half. Images are taken as
    independent here; the paired group bootstrap (``paired_difference``) is the
    duplicate-aware companion."""
    from scipy.stats import norm, rankdata
    labels = np.asarray(labels).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        raise ValueError("DeLong's test needs both classes")
    components = []
    for scores in (np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)):
        pos, neg = scores[labels], scores[~labels]
        # Placement values through ranks: V10[i] = share of negatives below positive i
        # (ties a half), V01[j] = share of positives above negative j.
        all_ranks = rankdata(np.concatenate([pos, neg]))
        v10 = (all_ranks[:positives] - rankdata(pos)) / negatives
        v01 = 1.0 - (all_ranks[positives:] - rankdata(neg)) / positives
        components.append((v10.mean(), v10, v01))
    auc = np.array([c[0] for c in components])
    s10 = np.cov(np.stack([c[1] for c in components]))
    s01 = np.cov(np.stack([c[2] for c in components]))
    covariance = s10 / positives + s01 / negatives
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    difference = float(auc[1] - auc[0])
    se = float(np.sqrt(max(variance, 0.0)))
    z = difference / se if se > 0 else (0.0 if difference == 0 else np.inf)
    return {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "difference": difference, "se": se,
            "z": float(z), "p_value": float(2 * norm.sf(abs(z)))}


def calibration_bands(labels, probabilities, groups=None, *, bins: int = 10,
                      n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = DEFAULT_LEVEL) -> dict:
    """The reliability diagram with group-bootstrap bands: per equal-width bin of the
    predicted probability, its mean prediction, the observed tumor fraction and that
    fraction's interval; the ECE (as engine.serving.calibration computes it) and the Brier
    score, each with its interval. Vectorised like every interval here."""
    labels = np.asarray(labels, np.float64).ravel()
    probabilities = np.asarray(probabilities, np.float64).ravel()
    draws = Resamples.draw(len(labels), groups, n_resamples, seed)
    # Row 0: every image once (the point figures); rows 1..: the resamples.
    weights = np.vstack([np.ones((1, len(labels))), draws.weights])
    index = np.clip(np.digitize(probabilities, np.linspace(0, 1, bins + 1)[1:-1]), 0, bins - 1)
    one_hot = np.eye(bins)[index]  # [N, bins]
    counts = weights @ one_hot  # [R, bins]
    observed = weights @ (one_hot * labels[:, None])
    predicted = weights @ (one_hot * probabilities[:, None])
    totals = weights.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = observed / counts
        ece = np.nansum(counts / totals * np.abs(fraction - predicted / counts), axis=1)
        brier = (weights @ (probabilities - labels) ** 2) / totals[:, 0]
    rows = []
    for b in range(bins):
        members = index == b
        if members.any():
            rows.append({"bin": b, "count": int(members.sum()), "mean_predicted": float(probabilities[members].mean()),
                         "observed": float(labels[members].mean()),
                         "observed_ci": percentile_interval(fraction[1:, b], level)})
    return {"bins": rows, "ece": float(ece[0]), "ece_ci": percentile_interval(ece[1:], level),
            "brier": float(brier[0]), "brier_ci": percentile_interval(brier[1:], level)}
