"""engine.serving.refer: the refer band and class-conditional conformal sets, checked
against crepes (an independent implementation) and on the shipped model."""

import numpy as np
import pytest

from engine.serving import refer


def _calibration(count=2000, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    logits = (labels * 2 - 1) * 2.0 + rng.normal(0, 1.6, count)
    return labels, 1 / (1 + np.exp(-logits))


def test_conformal_sets_equal_crepes_class_conditional_sets():
    import crepes  # a test dependency (requirements-dev.txt): never skipped

    class Given:
        """A 'learner' whose probabilities are the input: crepes calibrates on ours."""
        classes_ = np.array([0, 1])

        def fit(self, X, y):
            return self

        def predict_proba(self, X):
            return np.asarray(X)

    labels, probabilities = _calibration()
    test_labels, test_probabilities = _calibration(1000, seed=1)
    conformal = refer.fit_conformal(labels, probabilities, alpha=0.05)
    ours = refer.prediction_sets(test_probabilities, conformal)
    wrapped = crepes.WrapClassifier(Given())
    wrapped.calibrate(np.stack([1 - probabilities, probabilities], 1), labels, class_cond=True)
    theirs = wrapped.predict_set(np.stack([1 - test_probabilities, test_probabilities], 1), confidence=0.95,
                                 smoothing=False, labels=False)
    as_sets = [[name for name, inside in (("tumor", row[1]), ("no tumor", row[0])) if inside] for row in theirs]
    assert as_sets == ours
    coverage = refer.set_coverage(test_labels, ours)
    assert coverage["tumor"] >= 0.93 and coverage["no_tumor"] >= 0.93


def test_refer_band_rules_hold_on_the_calibration_images():
    labels, probabilities = _calibration()
    by_accuracy = refer.choose_margin(labels, probabilities, 0.5, min_accuracy=0.97)
    assert by_accuracy["accuracy"] >= 0.97 and 0 < by_accuracy["coverage"] < 1
    # The narrowest such band: one step narrower misses the target.
    distance = refer.margins(probabilities, 0.5)
    narrower = distance[distance < by_accuracy["margin"]].max()
    keep = distance >= narrower
    assert (((probabilities >= 0.5) == labels)[keep]).mean() < 0.97
    by_coverage = refer.choose_margin(labels, probabilities, 0.5, min_coverage=0.8)
    assert by_coverage["coverage"] >= 0.8
    decided = refer.decisions(probabilities, 0.5, by_coverage["margin"])
    assert abs(decided.count("refer") / len(decided) - (1 - by_coverage["coverage"])) < 1e-9
    assert refer.decisions([0.9, 0.1], 0.5, 0.0, [False, True]) == ["tumor", "not assessed"]
    curve = refer.risk_coverage(labels, probabilities, 0.5)
    accuracies = [p["accuracy"] for p in curve["curve"]]
    assert accuracies[0] >= accuracies[-1] and 0 < curve["aurc"] < 1 - accuracies[-1]
    with pytest.raises(ValueError):
        refer.choose_margin(labels, probabilities, 0.5)


def test_shipped_model_intervals_band_and_sets_on_the_test_split():
    """The shipped model's stored figures: eval_test.json's group-bootstrap intervals
    agree in width (within a third) with an independent group bootstrap of
    predictions_test.csv; the refer band was chosen on out-of-fold predictions and its
    answered test images are at least 95% accurate; the SavedModel, loaded by a plain
    client, gives the engine's decisions and sets; engine.predict --json gives every test
    image a prediction set, each class covered at least 90% of the time."""
    import csv
    import json
    import subprocess
    import sys

    import tensorflow as tf

    from conftest import ROOT
    from engine.data.manifest import read_manifest
    shipped = ROOT / "checkpoints"
    report = json.loads((shipped / "eval_test.json").read_text())
    info = json.loads((shipped / "model.json").read_text())
    group_of = {r.path.split("br35h/")[-1]: r.group for r in read_manifest(shipped / "manifest.csv")}
    with open(shipped / "predictions_test.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    correct = np.array([int(r["correct"]) for r in rows])
    groups = np.array([group_of[r["path"].split("br35h/")[-1]] for r in rows])
    # Independent: a plain loop over resampled groups, another seed.
    rng = np.random.default_rng(123)
    members = {g: np.flatnonzero(groups == g) for g in np.unique(groups)}
    keys = list(members)
    accuracies = []
    for _ in range(1000):
        picked = np.concatenate([members[keys[k]] for k in rng.integers(0, len(keys), len(keys))])
        accuracies.append(correct[picked].mean())
    low, high = np.percentile(accuracies, [2.5, 97.5])
    stored = report["ci"]["accuracy"]
    assert abs((stored[1] - stored[0]) - (high - low)) <= (high - low) / 3
    for key in ("accuracy", "roc_auc", "sensitivity", "specificity"):
        assert report["ci"][key][0] <= report[key] <= report["ci"][key][1]
    band = info["refer_band"]
    assert band["calibrated_on"].startswith("predictions_oof.csv")
    assert report["refer"]["accuracy"] >= 0.95
    assert report["prediction_sets"]["per_class"]["tumor"]["coverage"] >= 0.90
    assert report["prediction_sets"]["per_class"]["no_tumor"]["coverage"] >= 0.90
    # The SavedModel alone: decision 2 = refer, exactly where the engine refers.
    loaded = tf.saved_model.load(str(shipped / "export"))
    paths = [r["path"] for r in rows[:60]]
    from engine.data.sources import relocate
    data = [open(relocate(p), "rb").read() for p in paths]
    out = loaded.signatures["serving_bytes"](image_bytes=tf.constant(data))
    expected = refer.decisions(out["probability"].numpy(), info["threshold"], band["margin"])
    assert [("no tumor", "tumor", "refer")[d] for d in out["decision"].numpy()] == expected
    sets = refer.prediction_sets(out["probability"].numpy(), info["conformal"])
    assert [[n for n, inside in (("tumor", s[1]), ("no tumor", s[0])) if inside]
            for s in out["prediction_set"].numpy()] == sets
    result = subprocess.run([sys.executable, "-m", "engine.predict", "--json", *[relocate(p) for p in paths]],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(records) == len(paths) and all(isinstance(r["prediction_set"], list) for r in records)
    assert {r["decision"] for r in records} <= {"tumor", "no tumor", "refer", "not assessed"}
    assert any(r["decision"] == "refer" and "too close to the threshold" in r["refer_reason"] for r in records)


def test_the_learn_then_test_threshold_keeps_its_sensitivity_promise_over_repeated_calibrations():
    """Over 300 calibration draws from a known population, the threshold's true
    sensitivity falls under the target in at most delta of them (plus Monte-Carlo slack),
    while a plain empirical quantile breaks the promise about half the time."""
    from engine.serving.refer import sensitivity_threshold
    rng = np.random.default_rng(0)
    population = rng.beta(5, 2, 200_000)  # tumor probabilities of the whole population
    target, delta, broken, naive_broken = 0.9, 0.1, 0, 0
    for _ in range(300):
        draw = rng.choice(population, 150)
        chosen = sensitivity_threshold(np.ones(150, int), draw, target, delta)
        broken += (population >= chosen["threshold"]).mean() < target
        naive = np.quantile(draw, 1 - target)
        naive_broken += (population >= naive).mean() < target
    assert broken / 300 <= delta + 0.04, broken
    assert naive_broken / 300 > 0.3, naive_broken
    few = sensitivity_threshold(np.ones(10, int), rng.random(10), 0.99, 0.05)
    assert few["miss_rate_upper_bound"] is None and "not certifiable" in few["rule"]
