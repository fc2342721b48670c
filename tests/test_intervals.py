"""engine.evaluation.intervals: the group bootstrap behind every interval."""

import time

import numpy as np
from sklearn.metrics import roc_auc_score

from engine.evaluation import intervals


def _data(images: int = 300, groups: int = 60, seed: int = 1):
    rng = np.random.default_rng(seed)
    group = rng.integers(0, groups, images)
    # Copies of one slice share label and (almost) score, as Br35H's groups do.
    label_of_group = rng.integers(0, 2, groups)
    labels = label_of_group[group]
    scores = np.clip(0.5 + (labels - 0.5) * 0.5 + rng.normal(0, 0.25, groups)[group]
                     + rng.normal(0, 0.02, images), 0, 1)
    return labels, scores, group


def _width(ci):
    return ci[1] - ci[0]


def test_duplicating_every_image_keeps_the_group_interval_and_shrinks_the_image_interval():
    labels, scores, groups = _data()
    once = intervals.metric_intervals(labels, scores, 0.5, groups, seed=3)
    twice = intervals.metric_intervals(np.tile(labels, 2), np.tile(scores, 2), 0.5,
                                       np.tile(groups, 2), seed=3)
    for name in ("accuracy", "roc_auc", "sensitivity", "specificity"):
        # Same groups, same draws: each copy only doubles every weight.
        assert np.allclose(once[name], twice[name]), name
    image_once = intervals.metric_intervals(labels, scores, 0.5, None, seed=3)
    image_twice = intervals.metric_intervals(np.tile(labels, 2), np.tile(scores, 2), 0.5, None, seed=3)
    ratio = _width(image_once["accuracy"]) / _width(image_twice["accuracy"])
    assert abs(ratio - np.sqrt(2)) < 0.25, ratio
    # And the honest interval is wider than the per-image one on grouped data.
    assert _width(once["accuracy"]) > 1.3 * _width(image_once["accuracy"])


def test_weighted_auc_equals_sklearn_on_repeated_images():
    labels, scores, _ = _data(images=200)
    scores = np.round(scores, 2)  # ties
    weights = np.random.default_rng(0).integers(0, 4, (5, len(labels))).astype(float)
    got = intervals.weighted_auc(weights, labels, scores)
    for row, value in zip(weights, got):
        keep = np.repeat(np.arange(len(labels)), row.astype(int))
        assert abs(value - roc_auc_score(labels[keep], scores[keep])) < 1e-12


def test_intervals_hold_the_point_and_a_single_class_gives_none():
    labels, scores, groups = _data()
    ci = intervals.metric_intervals(labels, scores, 0.5, groups)
    accuracy = np.mean((scores >= 0.5) == labels)
    assert ci["accuracy"][0] <= accuracy <= ci["accuracy"][1]
    assert ci["groups"] == len(np.unique(groups)) and ci["resamples"] == 2000
    only_tumor = intervals.metric_intervals(np.ones(20, int), np.linspace(0, 1, 20), 0.5, None)
    assert only_tumor["roc_auc"] is None and only_tumor["specificity"] is None
    assert only_tumor["sensitivity"] is not None


def test_paired_difference_is_zero_for_one_model_and_sees_a_real_gap():
    labels, scores, groups = _data(images=600, groups=150)
    same = intervals.paired_difference(labels, scores, scores, 0.5, 0.5, groups)
    assert same["roc_auc"]["difference"] == 0 and same["roc_auc"]["ci"] == [0.0, 0.0]
    noisy = np.clip(scores + np.random.default_rng(5).normal(0, 0.4, len(scores)), 0, 1)
    worse = intervals.paired_difference(labels, scores, noisy, 0.5, 0.5, groups)
    assert worse["roc_auc"]["difference"] < 0 and worse["roc_auc"]["ci"][1] < 0


def test_two_thousand_resamples_of_three_thousand_images_fit_a_page():
    labels, scores, groups = _data(images=3000, groups=500)
    started = time.perf_counter()
    intervals.metric_intervals(labels, scores, 0.5, groups)
    # Not a benchmark (bench/ measures speed): a generous bound that only a return to a
    # per-resample Python loop would break.
    assert time.perf_counter() - started < 10


def test_format_with_ci():
    assert intervals.format_with_ci(0.8761, [0.8443, 0.905]) == "87.6% (84.4–90.5)"
    assert intervals.format_with_ci(0.9638, [0.941, 0.98], percent=False) == "0.964 (0.941–0.980)"
    assert intervals.format_with_ci(None, None) == "–"
    assert intervals.format_with_ci(0.5, None) == "50.0%"


def test_delong_equals_a_brute_force_computation():
    from scipy.stats import norm
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 120)
    a = np.round(labels * 0.8 + rng.normal(0, 0.6, 120), 1)  # ties on purpose
    b = np.round(labels * 1.2 + rng.normal(0, 0.6, 120) + 0.3 * a, 1)
    got = intervals.delong(labels, a, b)
    pos, neg = labels == 1, labels == 0

    def psi(x, y):
        return 1.0 if x > y else 0.5 if x == y else 0.0

    v10 = [[np.mean([psi(s[i], s[j]) for j in np.flatnonzero(neg)]) for i in np.flatnonzero(pos)] for s in (a, b)]
    v01 = [[np.mean([psi(s[i], s[j]) for i in np.flatnonzero(pos)]) for j in np.flatnonzero(neg)] for s in (a, b)]
    aucs = [np.mean(v) for v in v10]
    s10, s01 = np.cov(v10), np.cov(v01)
    variance = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / pos.sum() + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / neg.sum()
    z = (aucs[1] - aucs[0]) / np.sqrt(variance)
    assert abs(got["auc_a"] - roc_auc_score(labels, a)) < 1e-12 and abs(got["auc_b"] - aucs[1]) < 1e-12
    assert abs(got["se"] - np.sqrt(variance)) < 1e-12
    assert abs(got["p_value"] - 2 * norm.sf(abs(z))) < 1e-12
    same = intervals.delong(labels, a, a)
    assert same["difference"] == 0 and same["p_value"] == 1.0


def test_calibration_bands_hold_the_point_figures_of_the_engine():
    from engine.serving.calibration import expected_calibration_error
    labels, scores, groups = _data(images=600, groups=150)
    bands = intervals.calibration_bands(labels, scores, groups)
    assert abs(bands["ece"] - expected_calibration_error(labels, scores)) < 1e-12
    assert abs(bands["brier"] - np.mean((scores - labels) ** 2)) < 1e-12
    assert bands["ece_ci"][0] <= bands["ece"] <= bands["ece_ci"][1] + 1e-9
    for row in bands["bins"]:
        low, high = row["observed_ci"]
        assert low - 1e-9 <= row["observed"] <= high + 1e-9
