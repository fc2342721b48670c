"""Copy a finished cross-validation's fold ensemble into checkpoints/ (the shipped model)
with everything its model card, the Label review page and the CI check need, and record
the CI sample's accuracy.

    python scripts/ship_model.py runs/<cv_dir>
    python scripts/ship_model.py --restamp checkpoints   # intervals, shortcut audit, seen test images, portable paths

Run the label audit first (python -m engine.audit runs/<cv_dir>) so label_issues.csv
ships too. Fold run folders (checkpoints, logs) are not shipped: only the ensemble.
"""

from __future__ import annotations

import json
import shutil
import sys

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import layout  # noqa: E402

FILES = [layout.MODEL_INFO, layout.CONFIG, layout.MANIFEST, layout.DATA_SUMMARY, layout.evaluation("test"),
         layout.predictions("test"), layout.evaluation("oof"), layout.predictions("oof"), layout.CV_SUMMARY,
         layout.OOF_PREDICTIONS, layout.LABEL_ISSUES, layout.OOD, layout.DATA_HEALTH, layout.DATA_ISSUES,
         layout.NEIGHBOURS, layout.APPEARANCE, layout.SHORTCUTS, layout.CUES]
OPTIONAL = [layout.KERAS_COMPARISON]
STALE = [layout.evaluation("val"), layout.predictions("val")]  # a single run's files, not a CV's
CI_SAMPLE = 250


def build_neighbours(source: Path) -> None:
    """neighbours.npz for a CV folder exported before it was stored: the ensemble's
    features of the out-of-fold pool (what engine.training.cv.summarize now writes)."""
    from engine.data.manifest import read_manifest
    from engine.evaluation.evaluate import predict_outputs
    from engine.serving import neighbours
    from engine.serving.inference import load_model
    pool = [r for r in read_manifest(source / layout.MANIFEST) if r.usable and r.split != "test"]
    _, features = predict_outputs(load_model(source), [r.path for r in pool])
    print("neighbours:", neighbours.build(source, pool, features))


def build_appearance(source: Path) -> None:
    """appearance.npz for a CV folder made before the pixel-appearance flag existed:
    one Gaussian per fold member on the out-of-fold pool's descriptors (what
    engine.training.cv.summarize now writes)."""
    from engine.data.manifest import read_manifest
    from engine.serving import appearance
    pool = [r for r in read_manifest(source / layout.MANIFEST) if r.usable and r.split != "test"]
    folds = json.loads((source / layout.CV_SUMMARY).read_text())["folds_count"]
    print("appearance:", appearance.fit_for_folder(source, pool, [r.fold for r in pool], members=folds))


def build_health(source: Path) -> None:
    """data_health.json and data_issues.csv for a CV folder made before the report
    existed: the manifest's images scored once (the scores are added to manifest.csv;
    groups, splits and folds are unchanged)."""
    from engine.data.health import measure_missing_quality, write_health
    from engine.data.manifest import read_manifest, write_manifest
    rows = read_manifest(source / layout.MANIFEST)
    measure_missing_quality(rows)
    write_manifest(rows, source / layout.MANIFEST)
    summary = json.loads((source / layout.DATA_SUMMARY).read_text())
    print("data health:", write_health(source, rows, summary)["issues"])


def build_shortcuts(source: Path) -> None:
    """shortcuts.json and cues.csv for a CV folder made before the shortcut audit existed
    (what engine.training.cv.summarize now writes)."""
    from engine.data.manifest import read_manifest
    from engine.evaluation.shortcut_audit import write_audit
    report = write_audit(source, read_manifest(source / layout.MANIFEST), model_dir=source)
    print("shortcuts:", {k: v["auc"] for k, v in report["cue_sets"].items()})


def stamp_intervals(folder: Path) -> None:
    """Group-bootstrap intervals (engine.evaluation.intervals) in the eval_*.json and
    cv_summary.json of a CV folder written before they existed, from its own prediction
    files and manifest groups; nothing is predicted again."""
    import csv
    import numpy as np
    from engine.data.manifest import read_manifest
    from engine.data.sources import relocate
    from engine.evaluation.intervals import calibration_bands, metric_intervals
    from engine.evaluation.oof import fold_summary, read_oof
    group_of = {r.path: r.group for r in read_manifest(folder / layout.MANIFEST)}
    for split in ("test", "oof"):
        report_path, predictions = folder / layout.evaluation(split), folder / layout.predictions(split)
        if not report_path.exists() or not predictions.exists():
            continue
        with open(predictions, newline="") as handle:
            rows = list(csv.DictReader(handle))
        report = json.loads(report_path.read_text())
        labels, probabilities = [int(r["label"]) for r in rows], [float(r["probability"]) for r in rows]
        groups = [group_of[relocate(r["path"])] for r in rows]
        report["ci"] = metric_intervals(labels, probabilities, report["threshold"], groups)
        report["calibration_bands"] = calibration_bands(labels, probabilities, groups)
        report_path.write_text(json.dumps(report, indent=2))
    summary_path = folder / layout.CV_SUMMARY
    summary = json.loads(summary_path.read_text())
    oof = read_oof(folder / layout.OOF_PREDICTIONS)
    fresh = fold_summary(np.array([int(r["label"]) for r in oof]), np.array([float(r["logit"]) for r in oof]),
                         np.array([int(r["fold"]) for r in oof]), summary["folds_count"],
                         groups=[r["group"] for r in oof])
    summary["pooled"] = fresh["pooled"]
    summary_path.write_text(json.dumps(summary, indent=2))


def stamp_seen(folder: Path) -> None:
    """eval_test.json's ``seen_in_training`` for a CV folder evaluated before it was
    written: the test images the model's own neighbour check marks (Home states it)."""
    from engine.data.manifest import read_manifest
    from engine.evaluation.evaluate import predict_outputs, seen_in_training
    from engine.serving.inference import load_model
    path = folder / layout.evaluation("test")
    report = json.loads(path.read_text())
    if report.get("seen_in_training") is not None:
        return
    model = load_model(folder)
    test = [r for r in read_manifest(folder / layout.MANIFEST) if r.usable and r.split == "test"]
    _, features = predict_outputs(model, [r.path for r in test])
    report["seen_in_training"] = seen_in_training(model.neighbours, test, features)
    path.write_text(json.dumps(report, indent=2))
    print("seen in training:", report["seen_in_training"])


def card_figures(folder: Path) -> dict:
    """What the model card adds beside its headline figures: their 95% intervals, the
    pooled out-of-fold figures, the shortcut audit's AUCs and gaps, and the refer band's
    test coverage (all read from the folder's own files)."""
    test = json.loads((folder / layout.evaluation("test")).read_text())
    summary = json.loads((folder / layout.CV_SUMMARY).read_text())
    shortcuts = json.loads((folder / layout.SHORTCUTS).read_text()) if (folder / layout.SHORTCUTS).exists() else {}
    figures = {"test_ci": {k: test.get("ci", {}).get(k) for k in ("accuracy", "roc_auc", "sensitivity", "specificity")},
               "cv_pooled": {k: summary.get("pooled", {}).get(k) for k in ("accuracy", "roc_auc", "errors", "ci")}}
    if shortcuts:
        figures["shortcut_auc"] = {k: v["auc"] for k, v in shortcuts["cue_sets"].items()}
        figures["shortcut_gap_oof"] = {k: v["gap"] for k, v in shortcuts["model"]["oof"]["by_set"].items()}
    if test.get("seen_in_training"):
        figures["test_seen_in_training"] = test["seen_in_training"]
    if test.get("refer"):
        figures["refer_test"] = {k: test["refer"][k] for k in ("coverage", "accuracy", "sensitivity", "specificity")}
    return figures


def make_portable(folder: Path) -> None:
    """Rewrite every path column (and neighbours.npz's paths) of a shipped folder into
    engine.data.sources.portable form, so checkpoints/ names no folder of the machine
    that built it; readers map them back with relocate."""
    import csv
    import io
    import numpy as np
    from engine.data.sources import portable
    for path in sorted(folder.glob("*.csv")):
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
        if not rows or "path" not in rows[0]:
            continue
        column = rows[0].index("path")
        for row in rows[1:]:
            row[column] = portable(row[column])
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        path.write_text(buffer.getvalue())
    npz = folder / layout.NEIGHBOURS
    if npz.exists():
        with np.load(npz) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["paths"] = np.array([portable(str(p)) for p in arrays["paths"]])
        with open(npz, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    for name in (layout.evaluation("test"), layout.evaluation("oof"), layout.SHORTCUTS):
        path = folder / name
        if path.exists():
            data = json.loads(path.read_text())
            for key in ("model_dir",):
                if isinstance(data.get(key), str) and Path(data[key]).is_absolute():
                    data[key] = Path(data[key]).name
            path.write_text(json.dumps(data, indent=2))


def main(source_dir: str) -> None:
    from engine.evaluation.evaluate import evaluate
    from engine.runs import is_cv, read_status
    source = Path(source_dir)
    if read_status(source).get("state") != "finished" or not is_cv(source):
        sys.exit(f"{source} is not a finished cross-validation")
    target = ROOT / "checkpoints"
    target.mkdir(exist_ok=True)
    from engine.serving.export import stamp_calibration
    stamp_calibration(source)  # the export carries its threshold and temperature (serving contract)
    if not (source / layout.NEIGHBOURS).exists():
        build_neighbours(source)
    if not (source / layout.DATA_HEALTH).exists():
        build_health(source)
    if not (source / layout.APPEARANCE).exists():
        build_appearance(source)
    if not (source / layout.SHORTCUTS).exists():
        build_shortcuts(source)
    if "pooled" not in json.loads((source / layout.CV_SUMMARY).read_text()):
        stamp_intervals(source)
    stamp_seen(source)
    if (target / "export").exists():
        shutil.rmtree(target / "export")
    shutil.copytree(source / "export", target / "export")
    for name in FILES + [n for n in OPTIONAL if (source / n).exists()]:
        shutil.copy2(source / name, target / name)
    for name in STALE:
        (target / name).unlink(missing_ok=True)
    info = json.loads((target / layout.MODEL_INFO).read_text())
    info["checkpoint"] = f"fold ensemble of cross-validation {source.name}"
    (target / layout.MODEL_INFO).write_text(json.dumps(info, indent=2, sort_keys=True))
    sample = evaluate(target, "test", out_dir=ROOT / "runs" / "_ci_sample", limit=CI_SAMPLE)
    full = json.loads((target / layout.evaluation("test")).read_text())
    summary = json.loads((target / layout.CV_SUMMARY).read_text())
    # Training wall time: first fold started to last fold ended (a later re-summary of
    # the same folds does not count).
    folds = [read_status(source / layout.fold(k)) for k in range(summary["folds_count"])]
    wall = max(f["ended"] for f in folds) - min(f["started"] for f in folds)
    card = {
        "cv_dir": source.name, "folds": summary["folds_count"],
        "cv_mean": summary["mean"], "cv_std": summary["std"],
        "ci_sample_size": CI_SAMPLE, "ci_sample_accuracy": sample["accuracy"],
        "test_accuracy": full["accuracy"], "test_roc_auc": full["roc_auc"],
        "test_sensitivity": full["sensitivity"], "test_specificity": full["specificity"],
        "test_count": full["count"], "members": info.get("members", 1),
        "cv_training_wall_seconds": wall,
    }
    card.update(card_figures(target))
    (target / layout.MODEL_CARD).write_text(json.dumps(card, indent=2, sort_keys=True))
    make_portable(target)
    print(json.dumps(card, indent=2))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--restamp":
        # The shipped folder as it is, brought up to date without retraining:
        # intervals, the shortcut audit and portable paths.
        folder = Path(sys.argv[2])
        stamp_intervals(folder)
        build_shortcuts(folder)
        stamp_seen(folder)
        make_portable(folder)
        card_path = folder / layout.MODEL_CARD
        card = json.loads(card_path.read_text())
        card.update(card_figures(folder))
        card_path.write_text(json.dumps(card, indent=2, sort_keys=True))
    else:
        main(sys.argv[1])
