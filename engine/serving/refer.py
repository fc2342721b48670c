"""The refer band and per-class coverage sets: a model that says when it should not
answer, and what it can guarantee when it does.

Refer band (selective prediction; Geifman and El-Yaniv 2017). An image whose calibrated
logit lies within ``margin`` of the threshold's logit gets "refer" instead of a verdict:
too close to call. The margin is chosen on calibration data only (a CV's out-of-fold
predictions, a run's validation split) by a stated rule: the widest answered share whose
accuracy (or sensitivity) on the calibration images reaches a target, or the narrowest
band that still answers a given share. The risk-coverage curve and its area (AURC)
describe every possible band at once.

Per-class coverage sets (Mondrian split-conformal prediction; Angelopoulos and Bates
2021). For each class y, the nonconformity of a calibration image of class y is
1 - P(y); q_y is its ceil((n_y + 1)(1 - alpha)) / n_y quantile. An image's set holds
every class y with 1 - P(y) <= q_y: "tumor", "no tumor", both (unsure) or neither
(unlike anything calibrated). For exchangeable data, a tumor image's set holds "tumor"
with probability at least 1 - alpha, and the same for no-tumor images.

Pure NumPy; no TensorFlow (the dashboard reads it).
"""

from __future__ import annotations

import math

import numpy as np

CLASS_NAMES = ("no tumor", "tumor")
TUMOR, NO_TUMOR, REFER, NOT_ASSESSED = "tumor", "no tumor", "refer", "not assessed"


def _logit(p):
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def margins(probabilities, threshold: float) -> np.ndarray:
    """Distance of each calibrated logit from the threshold's logit: how far from a
    coin flip at this operating point."""
    return np.abs(_logit(probabilities) - _logit(threshold))


def answered(probabilities, threshold: float, margin: float) -> np.ndarray:
    """True where the model answers (outside the band)."""
    return margins(probabilities, threshold) >= margin


def _figures(labels, predicted, mask) -> dict:
    labels, predicted = np.asarray(labels)[mask], np.asarray(predicted)[mask]
    positives, negatives = labels == 1, labels == 0
    return {"accuracy": float((predicted == labels).mean()) if len(labels) else None,
            "sensitivity": float(predicted[positives].mean()) if positives.any() else None,
            "specificity": float(1 - predicted[negatives].mean()) if negatives.any() else None}


def risk_coverage(labels, probabilities, threshold: float, points: int = 50) -> dict:
    """Accuracy, sensitivity and specificity of the most confident share of images, for
    shares from 1/points to 1, and AURC: the mean error rate over all coverages (lower is
    better; the area under the risk-coverage curve)."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, np.float64)
    predicted = (probabilities >= threshold).astype(int)
    order = np.argsort(-margins(probabilities, threshold), kind="stable")
    errors = (predicted != labels)[order]
    count = len(labels)
    curve = []
    for k in sorted({max(1, int(round(count * c))) for c in np.linspace(1 / points, 1, points)}):
        mask = np.zeros(count, bool)
        mask[order[:k]] = True
        curve.append({"coverage": k / count, **_figures(labels, predicted, mask)})
    aurc = float(np.mean(np.cumsum(errors) / np.arange(1, count + 1))) if count else None
    return {"curve": curve, "aurc": aurc}


def choose_margin(labels, probabilities, threshold: float, *, min_accuracy: float | None = None,
                  min_sensitivity: float | None = None, min_coverage: float | None = None) -> dict:
    """The refer band from calibration data by one stated rule:

    - ``min_accuracy``: the narrowest band (most images answered) whose answered images
      are at least this accurate;
    - ``min_sensitivity``: likewise for sensitivity on the answered images;
    - ``min_coverage``: the widest band that still answers at least this share.

    Returns ``{"margin", "rule", "coverage", "accuracy", "sensitivity", "specificity"}``
    on the calibration images. No band (margin 0) when the rule holds with everything
    answered; the widest band when nothing narrower meets it."""
    rules = [r for r in (min_accuracy, min_sensitivity, min_coverage) if r is not None]
    if len(rules) != 1:
        raise ValueError("give exactly one of min_accuracy, min_sensitivity, min_coverage")
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, np.float64)
    predicted = (probabilities >= threshold).astype(int)
    distance = margins(probabilities, threshold)
    candidates = np.concatenate([[0.0], np.unique(distance)])
    chosen = candidates[-1]
    if min_coverage is not None:
        rule = f"answer at least {100 * min_coverage:.0f}% of the calibration images"
        for margin in candidates[::-1]:  # widest first
            if (distance >= margin).mean() >= min_coverage:
                chosen = margin
                break
    else:
        key, target = ("accuracy", min_accuracy) if min_accuracy is not None else ("sensitivity", min_sensitivity)
        rule = f"answered {key} at least {100 * target:.1f}% on the calibration images"
        for margin in candidates:  # narrowest first
            figure = _figures(labels, predicted, distance >= margin)[key]
            if figure is not None and figure >= target:
                chosen = margin
                break
    mask = distance >= chosen
    return {"margin": float(chosen), "rule": rule, "coverage": float(mask.mean()),
            **_figures(labels, predicted, mask)}


def sensitivity_threshold(labels, probabilities, target: float = 0.95, delta: float = 0.05) -> dict:
    """A threshold whose sensitivity is at least ``target`` with probability 1 - ``delta``
    over the draw of the calibration images (learn-then-test, Angelopoulos et al. 2021,
    with fixed-sequence testing): thresholds are tried from the highest down, and the
    first whose one-sided Clopper-Pearson upper bound on the miss rate of the
    calibration tumors is at most 1 - ``target`` is returned. Each test is at level
    ``delta`` and the sequence stops at the first rejection, so the family-wise error is
    at most ``delta``. The guarantee assumes exchangeable images; duplicate copies of a
    slice make the calibration set smaller than it looks, so compute it on one image per
    duplicate group where groups are known (engine.evaluation.selective does)."""
    from scipy.stats import beta
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, np.float64)
    tumors = np.sort(probabilities[labels == 1])[::-1]
    count = len(tumors)
    if count == 0:
        raise ValueError("no tumor images to calibrate a sensitivity threshold on")
    for caught in range(1, count + 1):  # threshold at the caught-th highest tumor probability
        missed = count - caught
        upper = 1.0 if missed == count else float(beta.ppf(1 - delta, missed + 1, count - missed))
        if upper <= 1 - target:
            threshold = float(tumors[caught - 1])
            return {"threshold": threshold, "target_sensitivity": target, "delta": delta,
                    "calibration_tumors": int(count), "calibration_sensitivity": caught / count,
                    "miss_rate_upper_bound": upper,
                    "rule": f"sensitivity at least {100 * target:.0f}% with probability {100 * (1 - delta):.0f}% "
                            "(learn-then-test, Clopper-Pearson)"}
    return {"threshold": float(tumors[-1]) if count else 0.0, "target_sensitivity": target, "delta": delta,
            "calibration_tumors": int(count), "calibration_sensitivity": 1.0, "miss_rate_upper_bound": None,
            "rule": f"not certifiable: {count} calibration tumors are too few for {100 * target:.0f}% "
                    f"at {100 * (1 - delta):.0f}%"}


def decisions(probabilities, threshold: float, margin: float = 0.0, out_of_distribution=None) -> list[str]:
    """"tumor", "no tumor", "refer" (inside the band) or "not assessed" (out of
    distribution) per image."""
    probabilities = np.asarray(probabilities, np.float64)
    inside = ~answered(probabilities, threshold, margin) if margin > 0 else np.zeros(len(probabilities), bool)
    ood = np.zeros(len(probabilities), bool) if out_of_distribution is None else np.asarray(out_of_distribution, bool)
    return [NOT_ASSESSED if o else REFER if r else (TUMOR if p >= threshold else NO_TUMOR)
            for p, r, o in zip(probabilities, inside, ood)]


def refer_reason(probability: float, threshold: float, margin: float, member_probabilities=None) -> str:
    """Why an image was referred, in words: how close it is to the threshold, and whether
    the ensemble's members disagree."""
    text = (f"too close to the threshold to call: probability {probability:.3f} against the threshold "
            f"{threshold:.3f} (logit distance {margins([probability], threshold)[0]:.2f} < band {margin:.2f})")
    if member_probabilities is not None and len(member_probabilities) > 1:
        votes = int(sum(p >= threshold for p in member_probabilities))
        if 0 < votes < len(member_probabilities):
            text += f"; the members disagree ({votes} of {len(member_probabilities)} say tumor)"
    return text


def fit_conformal(labels, probabilities, alpha: float = 0.05) -> dict:
    """Class-conditional (Mondrian) split-conformal quantiles from calibration images:
    ``{"alpha", "q": [q_no_tumor, q_tumor], "counts": [n0, n1]}``."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, np.float64)
    quantiles, counts = [], []
    for y in (0, 1):
        scores = np.sort(1 - (probabilities[labels == y] if y else 1 - probabilities[labels == y]))
        n = len(scores)
        counts.append(int(n))
        rank = math.ceil((n + 1) * (1 - alpha))
        # Too few images for the level: the set always holds the class (q = 1).
        quantiles.append(float(scores[rank - 1]) if 0 < rank <= n else 1.0)
    return {"alpha": float(alpha), "q": quantiles, "counts": counts}


def prediction_sets(probabilities, conformal: dict) -> list[list[str]]:
    """Each image's set of classes at the stored level (tumor first when both)."""
    q_no, q_yes = conformal["q"]
    out = []
    for p in np.asarray(probabilities, np.float64):
        members = ([TUMOR] if 1 - p <= q_yes else []) + ([NO_TUMOR] if p <= q_no else [])
        out.append(members)
    return out


def set_coverage(labels, sets: list[list[str]]) -> dict:
    """Per class, the share of its images whose set holds their true class, and the
    share of sets with exactly one class."""
    labels = np.asarray(labels).astype(int)
    hits = np.array([CLASS_NAMES[y] in s for y, s in zip(labels, sets)])
    return {"tumor": float(hits[labels == 1].mean()) if (labels == 1).any() else None,
            "no_tumor": float(hits[labels == 0].mean()) if (labels == 0).any() else None,
            "singletons": float(np.mean([len(s) == 1 for s in sets])) if sets else None}
