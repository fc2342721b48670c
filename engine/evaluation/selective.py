"""Choosing and reporting the refer band and the conformal sets of a model folder.

The band and the sets are fitted on calibration data only: a cross-validation's
out-of-fold predictions (``predictions_oof.csv``, at its pooled threshold and
temperature), else a run's validation split (``predictions_val.csv``). They are stored
in model.json (``refer_band``, ``conformal``), where prediction reads them
(engine.serving.inference.decide) and the export stamps them into the SavedModel. Only
after that is the fixed test split scored with them: coverage and the answered images'
accuracy, sensitivity and specificity, and each class's set coverage, each with a
group-bootstrap interval, written into eval_test.json (``refer``, ``prediction_sets``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from engine import layout, runs
from engine.data.manifest import read_manifest
from engine.data.sources import relocate
from engine.evaluation.intervals import Resamples, metric_intervals, percentile_interval
from engine.serving import refer


def _predictions(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return ([relocate(r["path"]) for r in rows], np.array([int(r["label"]) for r in rows]),
            np.array([float(r["probability"]) for r in rows]))


def calibration_file(model_dir: Path) -> Path:
    for name in (layout.predictions("oof"), layout.predictions("val")):
        if (model_dir / name).exists():
            return model_dir / name
    raise FileNotFoundError(f"{model_dir} has no out-of-fold or validation predictions to calibrate on")


def _groups(model_dir: Path, paths: list[str]) -> list:
    manifest = model_dir / layout.MANIFEST
    if not manifest.exists():
        return list(range(len(paths)))
    group_of = {r.path: r.group for r in read_manifest(manifest)}
    return [group_of.get(p, f"image {k}") for k, p in enumerate(paths)]


def shares_with_interval(mask: np.ndarray, draws: Resamples) -> tuple[float, list[float] | None]:
    totals = draws.weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = (draws.weights @ mask) / np.where(totals > 0, totals, np.nan)
    return float(mask.mean()) if len(mask) else None, percentile_interval(values)


def test_report(labels, probabilities, groups, threshold: float, band: dict, conformal: dict) -> dict:
    """The test split under the stored band and sets, with group-bootstrap intervals."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, np.float64)
    draws = Resamples.draw(len(labels), groups)
    answered = refer.answered(probabilities, threshold, band["margin"])
    coverage, coverage_ci = shares_with_interval(answered.astype(float), draws)
    kept = metric_intervals(labels[answered], probabilities[answered], threshold,
                            np.asarray(groups, dtype=object)[answered]) if answered.any() else {}
    predicted = probabilities >= threshold
    figures = refer._figures(labels, predicted.astype(int), answered)
    report = {"margin": band["margin"], "rule": band["rule"], "images": int(len(labels)),
              "answered": int(answered.sum()), "coverage": coverage, "coverage_ci": coverage_ci,
              **figures, "ci": {k: kept.get(k) for k in ("accuracy", "sensitivity", "specificity")},
              "risk_coverage": refer.risk_coverage(labels, probabilities, threshold)}
    sets = refer.prediction_sets(probabilities, conformal)
    covered = np.array([refer.CLASS_NAMES[y] in s for y, s in zip(labels, sets)], float)
    per_class = {}
    for name, y in (("tumor", 1), ("no_tumor", 0)):
        mask = labels == y
        if mask.any():
            sub = Resamples.draw(int(mask.sum()), np.asarray(groups, dtype=object)[mask])
            per_class[name] = dict(zip(("coverage", "coverage_ci"), shares_with_interval(covered[mask], sub)))
    sizes = np.array([len(s) for s in sets])
    sets_report = {"alpha": conformal["alpha"], "per_class": per_class,
                   "singletons": float((sizes == 1).mean()), "both": float((sizes == 2).mean()),
                   "empty": float((sizes == 0).mean())}
    return {"refer": report, "prediction_sets": sets_report}


def calibrate(model_dir: str | Path, *, min_accuracy: float | None = None, min_sensitivity: float | None = None,
              min_coverage: float | None = None, alpha: float = 0.05) -> dict:
    """Fit the band and the sets on the folder's calibration predictions, store them in
    model.json, then score the test split (if the folder has one) and return both."""
    model_dir = Path(model_dir)
    info_path = model_dir / layout.MODEL_INFO
    info = runs.read_json(info_path, {}) or {}
    source = calibration_file(model_dir)
    _, labels, probabilities = _predictions(source)
    threshold = float(info.get("threshold", 0.5))
    band = refer.choose_margin(labels, probabilities, threshold, min_accuracy=min_accuracy,
                               min_sensitivity=min_sensitivity, min_coverage=min_coverage)
    band.update({"calibrated_on": f"{source.name} ({len(labels)} images)",
                 "risk_coverage_aurc": refer.risk_coverage(labels, probabilities, threshold)["aurc"]})
    conformal = refer.fit_conformal(labels, probabilities, alpha)
    conformal["calibrated_on"] = band["calibrated_on"]
    info.update({"refer_band": band, "conformal": conformal})
    runs.write_json_atomic(info_path, info)
    for split in ("oof", "val"):
        evaluation = runs.read_json(model_dir / layout.evaluation(split), None)
        if evaluation is not None and (model_dir / layout.predictions(split)).exists():
            evaluation["risk_coverage"] = refer.risk_coverage(labels, probabilities, threshold)
            runs.write_json_atomic(model_dir / layout.evaluation(split), evaluation)
    result = {"band": band, "conformal": conformal}
    test_file, test_eval = model_dir / layout.predictions("test"), runs.read_json(model_dir / layout.evaluation("test"), None)
    if test_file.exists() and test_eval is not None:
        paths, test_labels, test_probabilities = _predictions(test_file)
        scored = test_report(test_labels, test_probabilities, _groups(model_dir, paths), threshold, band, conformal)
        test_eval.update(scored)
        runs.write_json_atomic(model_dir / layout.evaluation("test"), test_eval)
        result.update(scored)
    return result


def sensitivity_guarantee(model_dir: str | Path, target: float = 0.95, delta: float = 0.05) -> dict:
    """The learn-then-test threshold (engine.serving.refer.sensitivity_threshold) on the
    folder's calibration predictions, offered beside the stored (Youden) threshold and
    stored in model.json as ``sensitivity_threshold``; the stored threshold is left as
    it is. One tumor per duplicate group enters the test (each group's least confident
    copy), since copies are not independent draws. Then, if the folder has a test split,
    its sensitivity and specificity at that threshold with group-bootstrap intervals."""
    model_dir = Path(model_dir)
    info_path = model_dir / layout.MODEL_INFO
    info = runs.read_json(info_path, {}) or {}
    source = calibration_file(model_dir)
    paths, labels, probabilities = _predictions(source)
    groups = _groups(model_dir, paths)
    least: dict = {}
    for group, label, probability in zip(groups, labels, probabilities):
        if label == 1:
            least[group] = min(least.get(group, 1.0), float(probability))
    chosen = refer.sensitivity_threshold(np.ones(len(least), int), np.array(list(least.values())), target, delta)
    chosen["calibrated_on"] = f"{source.name} ({len(least)} tumor groups, least confident copy of each)"
    test_file = model_dir / layout.predictions("test")
    if test_file.exists():
        paths, test_labels, test_probabilities = _predictions(test_file)
        scored = metric_intervals(test_labels, test_probabilities, chosen["threshold"], _groups(model_dir, paths))
        predicted = test_probabilities >= chosen["threshold"]
        chosen["test"] = {"sensitivity": float(predicted[test_labels == 1].mean()),
                          "specificity": float((~predicted[test_labels == 0]).mean()),
                          "sensitivity_ci": scored.get("sensitivity"), "specificity_ci": scored.get("specificity"),
                          "images": int(len(test_labels))}
    info["sensitivity_threshold"] = chosen  # with the test figures, scored after it was chosen
    runs.write_json_atomic(info_path, info)
    return chosen
