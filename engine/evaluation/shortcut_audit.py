"""Writes the shortcut audit of a data set (and optionally of a model) into a folder:
``shortcuts.json`` and ``cues.csv``. Used by ``python -m engine.shortcuts`` and by every
training run and cross-validation, as data_health.json is.

The model part reads only the model folder's own prediction files: a cross-validation's
``oof_predictions.csv`` (each image by the member that never trained on it, at its
fold's cross-fitted threshold) and, where present, ``predictions_test.csv`` (the fixed
test split). No TensorFlow here.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np

from engine import layout, runs
from engine.data.cues import CUE_SETS, cue_columns, measure_cues
from engine.data.sources import relocate
from engine.data.splits import fold_groups
from engine.evaluation import shortcuts
from engine.evaluation.oof import cross_fitted_probabilities, read_oof
from engine.files import atomic_open

AUDIT_FOLDS = 5
HEALTH_SCORES = ("grey_mean", "grey_std", "grey_p99", "sharpness")


def cue_folds(rows, folds: int = AUDIT_FOLDS, seed: int = 42) -> np.ndarray:
    """The fold of every row for the cue models: a cross-validation manifest's own folds;
    otherwise ``folds`` grouped folds dealt over the non-test rows. Test rows get -1
    (scored by a cue model fitted on all other rows, like the network)."""
    if any(r.fold >= 0 for r in rows):
        return np.array([r.fold if r.split != "test" else -1 for r in rows])
    pool = np.array([r.split != "test" for r in rows])
    assignment = np.full(len(rows), -1)
    if pool.any():
        groups = np.array([r.group for r in rows])[pool]
        labels = np.array([r.original_label if r.original_label >= 0 else r.label for r in rows])[pool]
        count = max(2, min(folds, len(np.unique(groups)) // 2))
        assignment[pool] = fold_groups(groups, labels, [r.modality for r, p in zip(rows, pool) if p],
                                       count, seed)
    return assignment


def _model_predictions(model_dir: Path) -> dict[str, dict]:
    """``{"oof": {...}, "test": {...}}``: per prediction kind, path -> (probability,
    threshold) of the model folder's own prediction files."""
    found: dict[str, dict] = {}
    summary = runs.read_json(model_dir / layout.CV_SUMMARY, None)
    if summary and (model_dir / layout.OOF_PREDICTIONS).exists():
        oof = read_oof(model_dir / layout.OOF_PREDICTIONS)
        logits = np.array([float(r["logit"]) for r in oof])
        fold_of = np.array([int(r["fold"]) for r in oof])
        probabilities = cross_fitted_probabilities(summary, logits, fold_of)
        thresholds = {f["fold"]: f["threshold"] for f in summary["folds"]}
        found["oof"] = {r["path"]: (p, thresholds[f]) for r, p, f in zip(oof, probabilities, fold_of)}
    test_file = model_dir / layout.predictions("test")
    if test_file.exists():
        info = runs.read_json(model_dir / layout.MODEL_INFO, {}) or {}
        threshold = float(info.get("threshold", 0.5))
        with open(test_file, newline="") as handle:
            found["test"] = {relocate(r["path"]): (float(r["probability"]), threshold)
                             for r in csv.DictReader(handle)}
    return found


DESCRIPTIONS = {"oof": "out-of-fold predictions of the cross-validation (each image by the member "
                       "that never trained on its duplicate group, at its fold's threshold)",
                "test": "the fixed test split"}


def model_audit(rows, cue_rows, probabilities: dict[str, np.ndarray], top_cues: list[str],
                model_dir: Path, *, seed: int = 0) -> dict:
    """The network on aligned and conflicting images of each cue set, and the per-slice
    table (bins of ``top_cues``, the health scores and the modality), for each kind of
    prediction the model folder holds."""
    labels_all = np.array([r.original_label if r.original_label >= 0 else r.label for r in rows])
    groups_all = np.array([r.group for r in rows])
    pool = np.array([r.split != "test" for r in rows])
    base_rate = float(labels_all[pool].mean()) if pool.any() else float(labels_all.mean())
    index = {r.path: i for i, r in enumerate(rows)}
    result = {}
    for kind, predicted in _model_predictions(model_dir).items():
        keep = [(index[p], prob, thr) for p, (prob, thr) in predicted.items() if p in index]
        if not keep:
            continue
        at = np.array([k[0] for k in keep])
        network = np.array([k[1] for k in keep])
        thresholds = np.array([k[2] for k in keep])
        labels, groups = labels_all[at], groups_all[at]
        correct = (network >= thresholds) == (labels == 1)
        by_set = {name: shortcuts.aligned_conflicting(labels, correct, network, probability[at], groups,
                                                      thresholds, base_rate, seed=seed)
                  for name, probability in probabilities.items()}
        columns = {cue: np.array([cue_rows[i].get(cue) for i in at], dtype=object) for cue in top_cues}
        for score in HEALTH_SCORES:
            values = np.array([getattr(rows[i], score) for i in at], np.float64)
            if (values >= 0).any():
                columns[score] = np.where(values >= 0, values, np.nan)
        modalities = np.array([rows[i].modality for i in at], dtype=object)
        if len(set(modalities.tolist())) > 1:
            columns["modality"] = modalities
        result[kind] = {
            "source": DESCRIPTIONS[kind], "images": int(len(at)),
            "accuracy": float(correct.mean()),
            "by_set": by_set,
            "slices": shortcuts.slice_table(columns, labels, network, thresholds, groups, seed=seed),
        }
    return result


def write_cues(path: Path, rows, cue_rows: list[dict], folds, probabilities: dict) -> None:
    names = [c for columns in CUE_SETS.values() for c in columns]
    present = [c for c in names if any(c in row for row in cue_rows)]
    with atomic_open(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "group", "split", "fold", *present,
                         *[f"p_{name}" for name in probabilities]])
        for i, (row, cues) in enumerate(zip(rows, cue_rows)):
            label = row.original_label if row.original_label >= 0 else row.label
            values = [_cell(cues.get(c)) for c in present]
            writer.writerow([row.path, label, row.group, row.split, int(folds[i]), *values,
                             *[f"{probabilities[name][i]:.6f}" for name in probabilities]])


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def read_cues(path: str | os.PathLike) -> list[dict]:
    """Rows of cues.csv (text values; numbers as written), Br35H paths relocated."""
    with open(path, newline="") as handle:
        return [{**r, "path": relocate(r["path"])} for r in csv.DictReader(handle)]


def write_audit(out_dir: str | os.PathLike, rows, *, model_dir: str | os.PathLike | None = None,
                seed: int = 42, cue_rows: list[dict] | None = None) -> dict:
    """Measure the cues of the usable ``rows``, fit the cue models on their grouped
    folds, audit ``model_dir`` when given, and write shortcuts.json and cues.csv into
    ``out_dir``. Returns the shortcuts.json content."""
    started = time.time()
    out_dir = Path(out_dir)
    rows = [r for r in rows if r.usable]
    if cue_rows is None:
        cue_rows = measure_cues([r.path for r in rows])
    labels = np.array([r.original_label if r.original_label >= 0 else r.label for r in rows])
    groups = np.array([r.group for r in rows])
    folds = cue_folds(rows, seed=seed)
    columns = cue_columns(cue_rows)
    cue_sets, probabilities = shortcuts.audit_cue_sets(cue_rows, labels, groups, folds, columns, seed=0)
    for name, entry in cue_sets.items():
        entry["words"] = shortcuts.plain_words(name, entry["auc"])
    report = {
        "images": len(rows), "pool_images": int((folds != -1).sum()),
        "folds": int(len(set(folds.tolist()) - {-1})),
        "fold_source": ("the cross-validation's own folds" if any(r.fold >= 0 for r in rows)
                        else "grouped folds dealt over the non-test images (duplicate groups kept whole)"),
        "cue_model": "scikit-learn HistGradientBoostingClassifier (200 trees, 15 leaves) per cue set",
        "conflicting_rule": "the cue model's out-of-fold P(tumor) is on the other side of the "
                            "training share of tumors than the label",
        "cue_sets": cue_sets,
        "warning": any((e["auc"] or 0) > shortcuts.WARN_AUC for e in cue_sets.values()),
    }
    if model_dir:
        report["model_dir"] = str(model_dir)
        top = list(dict.fromkeys(c["cue"] for entry in cue_sets.values() for c in entry["top_cues"][:3]))
        report["model"] = model_audit(rows, cue_rows, probabilities, top, Path(model_dir), seed=seed)
    report["seconds"] = time.time() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    write_cues(out_dir / layout.CUES, rows, cue_rows, folds, probabilities)
    runs.write_json_atomic(out_dir / layout.SHORTCUTS, report)
    return report
