"""Evaluation of a trained model on a split of a run's manifest or on any image folder:
``python -m engine.evaluate``.

Writes ``eval_<split>.json`` (metrics, confusion matrix, curve points, per-modality
breakdown) and ``predictions_<split>.csv`` into the output folder, so the dashboard
draws everything without recomputing. All metrics come from scikit-learn.
"""

from __future__ import annotations

import csv
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from engine import layout, runs
from engine.data.imageio import ImageDecodeError, decode_path, decode_workers
from engine.data.manifest import build_manifest, read_manifest, rows_for_split
from engine.data.sources import relocate
from engine.evaluation.intervals import calibration_bands, metric_intervals
from engine.evaluation.review import apply_review, read_review, reviewed_labels
from engine.files import atomic_open
from engine.serving import appearance, neighbours
from engine.serving.calibration import calibrated, choose_threshold, expected_calibration_error, fit_temperature
from engine.serving.ood import FeatureGaussians, fit

PREDICTION_FIELDS = ["path", "label", "modality", "probability", "logit", "predicted", "correct"]


def classification_report(labels, probabilities, threshold: float) -> dict:
    """Every headline metric at ``threshold``; threshold-free ones where defined."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, np.float64)
    predicted = (probabilities >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    both = len(np.unique(labels)) == 2
    report = {
        "count": int(len(labels)), "threshold": float(threshold),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(labels, predicted)) if both else None,
        "sensitivity": float(skm.recall_score(labels, predicted, pos_label=1, zero_division=0)) if tp + fn else None,
        "specificity": float(skm.recall_score(labels, predicted, pos_label=0, zero_division=0)) if tn + fp else None,
        "precision": float(skm.precision_score(labels, predicted, zero_division=0)),
        "f1": float(skm.f1_score(labels, predicted, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(labels, probabilities)) if both else None,
        "pr_auc": float(skm.average_precision_score(labels, probabilities)) if both else None,
        "brier": float(skm.brier_score_loss(labels, probabilities, pos_label=1)),
        "ece": expected_calibration_error(labels, probabilities),
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }
    return report


def curve_points(labels, probabilities, max_points: int = 200) -> dict:
    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        return {}
    fpr, tpr, roc_t = skm.roc_curve(labels, probabilities)
    precision, recall, pr_t = skm.precision_recall_curve(labels, probabilities)
    frac_pos, mean_pred = calibration_curve(labels, probabilities, n_bins=10, strategy="uniform")

    def thin(*arrays):
        step = max(1, len(arrays[0]) // max_points)
        return [np.asarray(a)[::step].tolist() + [float(np.asarray(a)[-1])] for a in arrays]

    fpr, tpr, roc_t = thin(fpr, tpr, np.clip(roc_t, 0, 1))
    precision, recall = thin(precision, recall)
    return {"roc": {"fpr": fpr, "tpr": tpr, "thresholds": roc_t},
            "pr": {"precision": precision, "recall": recall},
            "calibration": {"mean_predicted": mean_pred.tolist(), "fraction_positive": frac_pos.tolist()}}


def full_report(labels, logits, modalities, threshold: float, temperature: float,
                groups=None) -> dict:
    """Every figure of an ``eval_<split>.json``; ``ci`` holds their 95% intervals,
    resampling ``groups`` (duplicate groups, merged with patients; None = images)."""
    labels = np.asarray(labels).astype(int)
    logits = np.asarray(logits, np.float64)
    raw = calibrated(logits)
    probabilities = calibrated(logits, temperature)
    report = classification_report(labels, probabilities, threshold)
    report["ci"] = metric_intervals(labels, probabilities, threshold, groups)
    report["calibration_bands"] = calibration_bands(labels, probabilities, groups)
    report["ece_before_temperature"] = expected_calibration_error(labels, raw)
    report["temperature"] = float(temperature)
    report["curves"] = curve_points(labels, probabilities)
    modalities = np.asarray(modalities)
    if len(set(modalities.tolist())) > 1:
        report["by_modality"] = {
            str(m): classification_report(labels[modalities == m], probabilities[modalities == m], threshold)
            for m in sorted(set(modalities.tolist()))}
    return report


def write_split_evaluation(out_dir: str | Path, split: str, rows, logits, threshold: float,
                           temperature: float, **extra) -> dict:
    """``eval_<split>.json`` and ``predictions_<split>.csv`` for manifest ``rows`` scored
    by their ensemble ``logits``: the one writer engine.evaluate and the cross-validation
    (its out-of-fold pool and its test split) share, so Evaluate and Errors read the same
    files whichever wrote them. ``extra`` goes into the report as it is."""
    out_dir = Path(out_dir)
    logits = np.asarray(logits, np.float64)
    labels = [r.original_label if r.original_label >= 0 else r.label for r in rows]
    modalities = [r.modality for r in rows]
    report = full_report(labels, logits, modalities, threshold, temperature, [r.group for r in rows])
    reviewed = reviewed_report(rows, logits, threshold, temperature)
    if reviewed:
        report["with_reviewed_labels"] = reviewed
    report.update({"split": split, "evaluated_at": time.time(), **extra})
    out_dir.mkdir(parents=True, exist_ok=True)
    runs.write_json_atomic(out_dir / layout.evaluation(split), report)
    write_predictions(out_dir / layout.predictions(split), [r.path for r in rows], labels, modalities,
                      logits, temperature, threshold)
    return report


def reviewed_report(rows, logits, threshold: float, temperature: float) -> dict:
    """The same metrics with reviewed labels, excluded images left out; {} when no row
    carries a review. Kept apart from the "as labelled" figures, never mixed in."""
    if not any(r.review for r in rows):
        return {}
    kept = np.array([r.review != "exclude" for r in rows])
    labels = np.array([r.label for r in rows])[kept]
    report = classification_report(labels, calibrated(np.asarray(logits)[kept], temperature), threshold)
    report.update({"excluded": int((~kept).sum()),
                   "relabelled": int(sum(r.review == "relabel" for r in rows))})
    return report


def rescored_with_review(paths, labels, probabilities, threshold: float, decisions: dict[str, dict]) -> dict:
    """Stored predictions scored with a review's labels, without predicting again:
    relabelled images flipped, excluded ones left out (Evaluate's review choice and the
    HTML report). Paths are mapped onto this machine's copy of Br35H first."""
    paths = [relocate(str(p)) for p in paths]
    new_labels, kept = reviewed_labels(paths, labels, decisions)
    report = classification_report(new_labels[kept], np.asarray(probabilities, np.float64)[kept], threshold)
    report.update({"relabelled": sum(decisions.get(p, {}).get("decision") == "relabel" for p in paths),
                   "excluded": int((~kept).sum())})
    return report


def predict_paths(model, paths: list[str], batch_size: int = 32) -> np.ndarray:
    """Logits for image files, decoded through the same pipeline as training."""
    members = predict_member_logits(model, paths, batch_size)
    return members.mean(axis=1) if len(members) else np.zeros([0])


def predict_member_logits(model, paths: list[str], batch_size: int = 32) -> np.ndarray:
    """[N, K] logits of each ensemble member ([N, 1] for one model) for image files."""
    return predict_outputs(model, paths, batch_size)[0]


def predict_outputs(model, paths: list[str], batch_size: int = 32):
    """([N, K] member logits, [N, K, C] member features or None) for image files,
    decoded through the same pipeline as training."""
    from engine.data import pipeline
    decoded = pipeline.decoded_dataset(paths, [0] * len(paths), model.image_size, cache="none",
                                       crop_to_head=model.crop_to_head)
    logits, features = [], []
    for images, _ in pipeline.eval_dataset(decoded, batch_size):
        batch_logits, batch_features = model.outputs(images.numpy())
        logits.append(batch_logits)
        features.append(batch_features)
    if not logits:
        return np.zeros([0, 1]), None
    return np.concatenate(logits), (None if features[0] is None else np.concatenate(features))


def fit_ood_for_run(model_dir: Path, train_rows, val_rows, model=None):
    """Fit the out-of-distribution statistics of a single run's model: a Gaussian on
    its training images' features, threshold on its validation images (engine.serving.ood),
    and its nearest-training-image pool. A ``model`` already loaded from ``model_dir`` is
    used. Returns (figures, a copy of the model carrying the new statistics); the
    model given is not changed."""
    from engine.serving.inference import load_model
    model = model or load_model(model_dir)
    _, train_features = predict_outputs(model, [r.path for r in train_rows])
    _, val_features = predict_outputs(model, [r.path for r in val_rows])
    if train_features is None or len(train_rows) < 4 or len(val_rows) < 2:
        return {}, model
    features = np.concatenate([train_features, val_features])
    held_out = np.array([-1] * len(train_rows) + [0] * len(val_rows))
    gaussians = fit(features, held_out)
    gaussians.save(Path(model_dir) / layout.OOD)
    pixels = appearance.fit_for_folder(model_dir, list(train_rows) + list(val_rows), held_out, members=1)
    # The nearest-training-image pool of a single run: its training images.
    chosen = neighbours.build(model_dir, train_rows, train_features, folds=[-1] * len(train_rows))
    fitted = model.replace(ood=FeatureGaussians.load(Path(model_dir) / layout.OOD),  # as a later load sees them
                           neighbours=neighbours.NeighbourIndex.load(model_dir),
                           appearance=appearance.load(model_dir))
    return ({"ood_thresholds": gaussians.thresholds.tolist(), "seen_threshold": chosen["seen_threshold"],
             **pixels}, fitted)


def seen_in_training(index, rows, features) -> dict | None:
    """How many of ``rows`` (a test split) the model's own neighbour check calls "seen in
    training", and in how many of their duplicate groups: relatives the grouping missed,
    which Home states beside the test figure. None without a neighbour index."""
    if index is None or features is None or not len(rows):
        return None
    seen = np.array([found["seen_in_training"] for found in index.query(features, 1)])
    groups = np.array([r.group for r in rows])
    return {"images": int(seen.sum()), "of": int(len(rows)), "groups": int(len(set(groups[seen].tolist()))),
            "of_groups": int(len(set(groups.tolist()))), "threshold": float(index.seen_threshold)}


def flagged_share(model, paths: list[str], features) -> float | None:
    """Share of images the out-of-distribution flag would stop on Predict: the feature
    flag or any pixel check (engine.serving.input_check with the model's appearance
    statistics); None when the model has no feature statistics."""
    flags, _ = model.ood_flags(features)
    if flags is None:
        return None


    def pixels_flag(path: str) -> bool:
        try:
            return bool(model.pixel_findings(decode_path(path)))
        except (ImageDecodeError, OSError):  # counted by the evaluation's own error handling
            return False
    flags = np.array(flags, bool)
    unflagged = [index for index in range(len(paths)) if not flags[index]]
    with ThreadPoolExecutor(decode_workers()) as pool:  # Pillow and NumPy release the GIL
        flags[unflagged] = list(pool.map(pixels_flag, [paths[index] for index in unflagged]))
    return float(np.mean(flags)) if len(flags) else None


def calibrate_on_validation(model, val_rows, method: str = "youden",
                            target_sensitivity: float = 0.98) -> dict:
    """Fit the temperature and choose the threshold on validation rows; returns the
    values to store in model.json."""
    labels = np.array([r.label for r in val_rows])
    logits = predict_paths(model, [r.path for r in val_rows])
    temperature = fit_temperature(labels, logits)
    probabilities = calibrated(logits, temperature)
    threshold = choose_threshold(labels, probabilities, method, target_sensitivity)
    return {"threshold": threshold, "temperature": temperature, "threshold_method": method,
            "target_sensitivity": target_sensitivity if method == "sensitivity" else None,
            "calibrated_on": f"val ({len(val_rows)} images)", "calibration_images": len(val_rows)}


def write_predictions(path: Path, paths, labels, modalities, logits, temperature, threshold) -> None:
    probabilities = calibrated(logits, temperature)
    with atomic_open(path) as handle:  # the Errors page reads it while a run finishes
        writer = csv.writer(handle)
        writer.writerow(PREDICTION_FIELDS)
        for p, y, m, z, prob in zip(paths, labels, modalities, logits, probabilities):
            predicted = int(prob >= threshold)
            writer.writerow([p, int(y), m, f"{prob:.6f}", f"{z:.6f}", predicted, int(predicted == int(y))])


def evaluate(model_dir: str | Path, split: str = "test", manifest: str | Path | None = None,
             data_dir: str | None = None, out_dir: str | Path | None = None,
             recalibrate: bool = False, threshold_method: str = "youden",
             target_sensitivity: float = 0.98, limit: int = 0, label_review: str | None = None,
             model=None) -> dict:
    """Evaluate the model in ``model_dir`` on ``split`` of ``manifest`` (default: the
    model folder's own manifest.csv), or on every image of ``data_dir``. Writes
    eval_<split>.json and predictions_<split>.csv into ``out_dir`` (default
    ``model_dir``) and returns the report. ``model``: the export of ``model_dir`` if the
    caller has it loaded already (a finishing run evaluates val and test with one load)."""
    from engine.serving.inference import SHIPPED_MODEL_DIR, load_model
    model_dir = Path(model_dir)
    shipped = model_dir.resolve() == SHIPPED_MODEL_DIR.resolve()
    if shipped and recalibrate:
        raise ValueError("the shipped model's threshold and temperature are part of the release; "
                         "copy checkpoints/ to a folder of yours to recalibrate it")
    # The shipped model's files are committed: its evaluations go to the runs folder.
    default_out = runs.DEFAULT_RUNS_ROOT / "evaluations" / "shipped" if shipped else model_dir
    out_dir = Path(out_dir or default_out)
    model = model or load_model(model_dir)
    info_path = model_dir / layout.MODEL_INFO
    info = runs.read_json(info_path, {}) or {}
    if data_dir:
        # Every usable image of the folder is evaluated; the stored threshold and
        # temperature (chosen on the model's own validation split) are kept.
        rows, _ = build_manifest(data_dir, (0.0, 1.0, 0.0))
        rows = [r for r in rows if r.usable]
        split = "folder"
        val_rows = []
    else:
        rows = read_manifest(manifest or model_dir / layout.MANIFEST)
        if label_review:
            if not Path(label_review).exists():
                raise FileNotFoundError(f"label review file {label_review} does not exist")
            apply_review(rows, read_review(label_review))
        val_rows = rows_for_split(rows, "val")
        rows = rows_for_split(rows, split)
    if limit and limit < len(rows):
        # Evenly spaced over the split (which is ordered by class folder), so a fixed
        # sample keeps both classes in proportion.
        rows = [rows[int(i)] for i in np.linspace(0, len(rows) - 1, limit).round()]
    if not rows:
        raise ValueError(f"no usable images for split {split!r}")
    if val_rows and (recalibrate or "temperature_fitted" not in info):
        info.update(calibrate_on_validation(model, val_rows, threshold_method, target_sensitivity))
        info["temperature_fitted"] = True
        runs.write_json_atomic(info_path, info)
        try:  # the SavedModel carries the new calibration too (its serving contract)
            from engine.serving.export import stamp_calibration
            stamp_calibration(model_dir)
        except FileNotFoundError:  # an export without its checkpoints (copied elsewhere)
            pass
    if "threshold" in info:
        # The folder's stored decision rule, as it stands now (a val pass may just have
        # written it): a calibrated copy, the caller's model is left as it was.
        model = model.replace(threshold=float(info["threshold"]),
                              temperature=float(info.get("temperature", 1.0)))
    started = time.time()
    members, features = predict_outputs(model, [r.path for r in rows])
    extra = {"ood_flagged_share": flagged_share(model, [r.path for r in rows], features)}
    if split == "test":
        extra["seen_in_training"] = seen_in_training(model.neighbours, rows, features)
    report = write_split_evaluation(
        out_dir, split, rows, members.mean(axis=1), model.threshold, model.temperature,
        model_dir=str(model_dir), seconds=time.time() - started,
        threshold_method=info.get("threshold_method", "default 0.5"), **extra)
    return report
