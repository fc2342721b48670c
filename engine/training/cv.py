"""Grouped, stratified k-fold cross-validation: ``python -m engine.cv --folds K
[every engine.train option] [--run-dir DIR]``.

Why: one split of ~150 duplicate groups moves accuracy by ten points, so a single
validation figure cannot rank two models. Here the fixed test split (the same seed
and fractions as engine.train) stays out; the rest is dealt into K folds by duplicate
group, stratified by label and modality. Each fold is an ordinary run folder
``DIR/fold_<k>/`` that trains for a fixed epoch budget (``best_metric="last"``), so no
fold's figure is chosen on that fold. Threshold and temperature for a fold's figure
are fitted on the other folds' out-of-fold predictions (cross-fitting), never on the
images being scored.

``DIR`` ends up as a model folder of its own: ``export/`` holds the K fold models as
one ensemble SavedModel (mean logit, plus each member's), ``model.json`` the threshold
and temperature fitted on all out-of-fold predictions, and beside them
``cv_summary.json``, ``oof_predictions.csv``, ``eval_test.json`` and
``predictions_test.csv``. A killed CV resumes with its unfinished fold (``--resume DIR``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine import layout, runs
from engine.config import TrainConfig
from engine.data.health import write_health
from engine.data.manifest import ScanStopped, read_manifest, read_placements, write_manifest
from engine.data.splits import fold_groups, keep_placements, split_summary
from engine.evaluation.evaluate import (
    classification_report, flagged_share, predict_outputs, seen_in_training, write_split_evaluation
)
from engine.evaluation.oof import fit_calibration, fold_summary, write_oof
from engine.request import CrossValidation, RunRequest, stored_request
from engine.serving import appearance, neighbours
from engine.serving.calibration import calibrated
from engine.serving.export import export_saved_model, model_info, restore_best_model
from engine.serving.inference import load_model, member_spread
from engine.serving.ood import fit
from engine.training.loop import StopRequested, apply_label_review, scan, train_and_evaluate, write_shortcut_audit
from engine.training.progress import setup_logging

log = logging.getLogger("engine.cv")



def fold_dir(cv_dir: Path, fold: int) -> Path:
    return Path(cv_dir) / layout.fold(fold)


def assign_folds(rows, folds: int, seed: int, kept: "dict[str, tuple[str, int]] | None" = None):
    """Set ``fold`` on every usable non-test row (test rows keep -1). With ``kept``
    (read_placements of an earlier CV's manifest with as many folds), its folds are kept:
    a group whose members it placed goes whole to their most common fold
    (engine.data.splits.keep_placements). Pure apart from the rows it is given."""
    pool = [r for r in rows if r.usable and r.split != "test"]
    # Stratified by the folder's labels, not a review's: a review never moves an image to
    # another fold, so as-labelled and reviewed figures compare on the same folds.
    labels = np.array([r.original_label if r.original_label >= 0 else r.label for r in pool])
    assignment = fold_groups(np.array([r.group for r in pool]), labels,
                             [r.modality for r in pool], folds, seed)
    if kept:
        if max(fold for _, fold in kept.values()) + 1 == folds:
            earlier = [kept[r.path][1] if r.path in kept and kept[r.path][1] >= 0 else None for r in pool]
            assignment = keep_placements(np.array([r.group for r in pool]), assignment, earlier)
        else:
            log.warning("kept split: the earlier manifest holds no %d-fold CV; the folds are dealt afresh", folds)
    for row, fold in zip(pool, assignment.tolist()):
        row.fold = int(fold)
    return rows


def rows_for_fold(rows, fold: int):
    """Copies of the rows with the fold's view of the splits: the fold is val, the
    other folds train, the fixed test split stays test."""
    result = []
    for row in rows:
        split = row.split
        if row.usable and row.split != "test":
            split = "val" if row.fold == fold else "train"
        result.append(replace(row, split=split))
    return result


def _prepare(config: TrainConfig, cv_dir: Path, folds: int, stop=None):
    """The CV manifest (built once, then reused on resume), with folds assigned."""
    path = cv_dir / layout.MANIFEST
    if path.exists():
        return read_manifest(path)
    rows, summary = scan(config, runs.preparation_progress(cv_dir), stop)
    summary["label_review"] = apply_label_review(rows, config, cv_dir)
    assign_folds(rows, folds, config.seed, read_placements(config.keep_split) if config.keep_split else None)
    write_manifest(rows, path)
    runs.write_json_atomic(cv_dir / layout.DATA_SUMMARY, summary)
    write_health(cv_dir, rows, summary)  # data_health.json and data_issues.csv (engine.data.health)
    return rows


def prepare_fold(cv_dir: Path, rows, fold: int, folds: int, config: TrainConfig, *,
                 where: str = "") -> tuple[Path, bool]:
    """(folder, resume) of fold ``fold``: its folder with its manifest (its train and val
    split of the pool, the test split unchanged), written once, and whether it resumes
    from a checkpoint; logs which, with ``where`` it trains (e.g. " on 2 workers")."""
    folder = fold_dir(cv_dir, fold)
    _write_fold_folder(rows, fold, folder, config)
    resume = (folder / layout.CHECKPOINTS / "checkpoint").exists()
    log.info("fold %d/%d: %s%s", fold + 1, folds, "resuming" if resume else "training", where)
    return folder, resume


def _write_fold_folder(rows, fold: int, folder: Path, config: TrainConfig) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / layout.MANIFEST).exists():
        return
    fold_rows = rows_for_fold(rows, fold)
    usable = [r for r in fold_rows if r.usable]
    summary = split_summary(np.array([r.group for r in usable]), np.array([r.label for r in usable]),
                            [r.modality for r in usable], np.array([r.split for r in usable]),
                            config.split_fractions, config.seed)
    summary["cv_fold"] = fold
    runs.write_json_atomic(folder / layout.DATA_SUMMARY, summary)
    write_manifest(fold_rows, folder / layout.MANIFEST)


def cross_validate(config: TrainConfig, cv_dir: str | os.PathLike, folds: int, *,
                   stop=None, evaluate_test: bool = True, train_fold=None) -> dict:
    """Train every unfinished fold of ``cv_dir`` (resuming a fold that has
    checkpoints), then summarise and export the ensemble. Returns the CV status.
    ``evaluate_test=False`` leaves the test split unseen: for comparing recipes, which
    must be chosen on the folds alone. ``train_fold(config, cv_dir, rows, fold, folds,
    stop) -> status`` trains one fold; by default in this process, and the launcher
    passes one that runs each fold on several worker processes."""
    cv_dir = Path(cv_dir)
    cv_dir.mkdir(parents=True, exist_ok=True)
    stop = stop or StopRequested()
    request = RunRequest(config, CrossValidation(folds, evaluate_test))
    config = request.config  # best_metric "last": a fold's val split chooses nothing
    # Rewritten on every start, so a resume reads exactly what the folds train with.
    request.write(cv_dir)
    runs.begin_segment(cv_dir, resume=True)  # a resumed CV adds to the time of its first start
    try:
        setup_logging(cv_dir)
        try:
            rows = _prepare(config, cv_dir, folds, stop)
        except ScanStopped as err:
            log.info("%s", err)
            return runs.write_status(cv_dir, runs.STOPPED, ended=time.time(), stopped_by=stop.signal_name,
                                     message=str(err))
        for fold in range(folds):
            if runs.read_status(fold_dir(cv_dir, fold)).get("state") == runs.FINISHED:
                continue
            if stop.requested:  # asked to stop between two folds
                return runs.write_status(cv_dir, runs.STOPPED, ended=time.time(), fold=fold,
                                         stopped_by=stop.signal_name)
            runs.write_status(cv_dir, runs.RUNNING, fold=fold, folds=folds)
            status = (train_fold or _train_fold)(config, cv_dir, rows, fold, folds, stop)
            setup_logging(cv_dir)
            if status["state"] != runs.FINISHED:
                log.info("fold %d ended %s; the CV stops here", fold, status["state"])
                return runs.write_status(cv_dir, status["state"], ended=time.time(),
                                         error=status.get("error"), fold=fold,
                                         stopped_by=status.get("stopped_by"))
        summary = summarize(cv_dir, rows, folds, config, evaluate_test)
        log.info("CV: accuracy %.4f ± %.4f, ROC AUC %.4f ± %.4f (mean ± std over %d folds)",
                 summary["mean"]["accuracy"], summary["std"]["accuracy"],
                 summary["mean"]["roc_auc"], summary["std"]["roc_auc"], folds)
        return runs.write_status(cv_dir, runs.FINISHED, ended=time.time())
    except Exception as err:  # the status must say why, whatever broke
        log.exception("cross-validation failed")
        return runs.write_status(cv_dir, runs.FAILED, ended=time.time(),
                                 error=f"{type(err).__name__}: {err}")


def _train_fold(config: TrainConfig, cv_dir: Path, rows, fold: int, folds: int, stop) -> dict:
    """Train (or resume) fold ``fold`` into ``cv_dir/fold_<k>/``; returns its status."""
    folder, resume = prepare_fold(cv_dir, rows, fold, folds, config)
    return train_and_evaluate(config, folder, resume=resume, stop=stop, final_evaluation=False)


class FoldsNotReady(RuntimeError):
    """``collect`` was asked for before every fold finished; the message lists them."""


def train_one_fold(config: TrainConfig, cv_dir: str | os.PathLike, folds: int, fold: int, *,
                   stop=None, evaluate_test: bool = True) -> dict:
    """Train only fold ``fold`` of a K-fold CV into ``cv_dir/fold_<k>/``: one job of a
    scheduler's array (Slurm ``--array=0-(K-1)``, an indexed Kubernetes Job). The jobs
    may run at the same time: the first to arrive writes config.json and builds the
    manifest under a file lock, the others wait and read them, so every fold sees the
    same groups and folds. Nothing is summarised; ``collect`` does that once all are
    done. A fold may itself use several workers (its config's devices, or engine.launch
    per fold). Returns the fold's status."""

    if not 0 <= fold < folds:
        raise ValueError(f"--fold must be in 0..{folds - 1}")
    cv_dir = Path(cv_dir)
    cv_dir.mkdir(parents=True, exist_ok=True)
    request = RunRequest(config, CrossValidation(folds, evaluate_test))
    config = request.config
    with open(cv_dir / ".prepare.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held while the first job writes the request and manifest
        stored = stored_request(cv_dir)
        if stored is not None:
            if stored.to_dict() != request.to_dict():
                raise ValueError(f"{cv_dir} holds a cross-validation with other settings; "
                                 "a fold job must use the same options as the others")
        else:
            request.write(cv_dir)
        rows = _prepare(config, cv_dir, folds)
    return _train_fold(config, cv_dir, rows, fold, folds, stop or StopRequested())


def collect(cv_dir: str | os.PathLike) -> dict:
    """Summarise a CV whose folds were trained as separate jobs: out-of-fold
    predictions, per-fold figures, the ensemble export and (unless the request said
    --skip-test) its test evaluation, exactly as one ``cross_validate`` run ends.
    Raises FoldsNotReady naming every fold that is missing or unfinished."""
    cv_dir = Path(cv_dir)
    request = stored_request(cv_dir)
    if request is None or not request.is_cv:
        raise FoldsNotReady(f"{cv_dir} is not a cross-validation folder (no request with a cv section)")
    config, folds = request.config, request.cv.folds
    missing = [f"fold {k}: {runs.read_status(fold_dir(cv_dir, k)).get('state') or 'missing'}"
               for k in range(folds)
               if runs.read_status(fold_dir(cv_dir, k)).get("state") != runs.FINISHED]
    if missing:
        raise FoldsNotReady(f"{cv_dir}: not every fold has finished ({'; '.join(missing)})")
    setup_logging(cv_dir)
    runs.begin_segment(cv_dir, resume=True)
    summary = summarize(cv_dir, read_manifest(cv_dir / layout.MANIFEST), folds, config,
                        request.cv.evaluate_test)
    log.info("CV (collected): accuracy %.4f ± %.4f over %d folds", summary["mean"]["accuracy"],
             summary["std"]["accuracy"], folds)
    runs.write_status(cv_dir, runs.FINISHED, ended=time.time())
    return summary


def summarize(cv_dir: Path, rows, folds: int, config: TrainConfig,
              evaluate_test: bool = True) -> dict:
    """Out-of-fold predictions, per-fold figures (cross-fitted calibration), the
    ensemble export and its test evaluation; writes every CV output file."""
    cv_dir = Path(cv_dir)
    pool = [r for r in rows if r.usable and r.split != "test"]
    test = [r for r in rows if r.usable and r.split == "test"] if evaluate_test else []
    members = [restore_best_model(fold_dir(cv_dir, fold))[1] for fold in range(folds)]
    export_saved_model(members, config.image_size, cv_dir / layout.EXPORT, config.flip_tta,
                       crop_to_head=config.crop_to_head)
    info = model_info(config, config.flip_tta, members=folds)
    runs.write_json_atomic(cv_dir / layout.MODEL_INFO, info)
    ensemble = load_model(cv_dir)
    # One pass of the ensemble gives every member's logit: an image's out-of-fold logit
    # is the one of the member whose training never saw its fold.
    pool_members, pool_features = predict_outputs(ensemble, [r.path for r in pool])
    oof_logits = pool_members[np.arange(len(pool)), [r.fold for r in pool]]
    ensemble = ensemble.replace(ood=None)
    if pool_features is not None:
        ensemble = ensemble.replace(ood=fit(pool_features, np.array([r.fold for r in pool])))
        ensemble.ood.save(cv_dir / layout.OOD)
        appearance.fit_for_folder(cv_dir, pool, np.array([r.fold for r in pool]), members=folds)
        ensemble = ensemble.replace(appearance=appearance.load(cv_dir))
        chosen = neighbours.build(cv_dir, pool, pool_features)
        log.info("nearest-neighbour pool: %d images, seen-in-training threshold %.4f",
                 len(pool), chosen["seen_threshold"])
    fold_of = np.array([r.fold for r in pool])
    # The headline is "as labelled": the folder's labels, whatever a review decided.
    labels = np.array([r.original_label for r in pool])
    summary = fold_summary(labels, oof_logits, fold_of, folds, groups=[r.group for r in pool])
    if any(r.review for r in pool):
        kept = np.array([r.review != "exclude" for r in pool])
        reviewed = np.array([r.label for r in pool])
        summary["with_reviewed_labels"] = {
            **fold_summary(reviewed[kept], oof_logits[kept], fold_of[kept], folds),
            "excluded": int((~kept).sum()), "relabelled": sum(r.review == "relabel" for r in pool)}
    temperature, threshold = fit_calibration(labels, oof_logits)
    write_oof(cv_dir / layout.OOF_PREDICTIONS, pool, oof_logits, temperature)
    _write_oof_evaluation(cv_dir, pool, oof_logits, temperature, threshold)
    info.update({"threshold": threshold, "temperature": temperature, "temperature_fitted": True,
                 "threshold_method": "youden",
                 "calibrated_on": f"out-of-fold predictions ({len(pool)} images, {folds} folds)"})
    runs.write_json_atomic(cv_dir / layout.MODEL_INFO, info)
    # The export carries its calibration too, so it serves calibrated decisions alone.
    export_saved_model(members, config.image_size, cv_dir / layout.EXPORT, config.flip_tta,
                       threshold, temperature, crop_to_head=config.crop_to_head)
    summary["test"] = None
    if test:
        ensemble = ensemble.replace(temperature=temperature, threshold=threshold)
        test_members, test_features = predict_outputs(ensemble, [r.path for r in test])
        summary["test"] = _write_test_evaluation(
            cv_dir, test, test_members, temperature, threshold,
            flagged_share(ensemble, [r.path for r in test], test_features),
            seen_in_training(neighbours.NeighbourIndex.load(cv_dir), test, test_features))
    summary.update({"folds_count": folds, "images_cv": len(pool), "images_test": len(test),
                    "threshold": threshold, "temperature": temperature,
                    "config": config.to_dict(), "written_at": time.time()})
    runs.write_json_atomic(cv_dir / layout.CV_SUMMARY, summary)
    write_shortcut_audit(cv_dir)
    return summary


def _write_oof_evaluation(cv_dir: Path, pool, logits, temperature: float, threshold: float) -> None:
    """Out-of-fold predictions as an evaluation "split" (oof) that Evaluate and Errors
    read like any other: every non-test image, each by the model that never trained on
    its duplicate group. The threshold and temperature were fitted on these same
    predictions, so its threshold-dependent figures are slightly optimistic; the
    per-fold figures in cv_summary.json are the cross-fitted ones."""
    write_split_evaluation(cv_dir, "oof", pool, logits, threshold, temperature, model_dir=str(cv_dir),
                           threshold_method="youden (out-of-fold)")


def _write_test_evaluation(cv_dir: Path, test, members, temperature: float, threshold: float,
                           ood_share: float | None = None, seen: dict | None = None):
    """The fold ensemble on the fixed test split, in the files Evaluate and Errors read,
    with each fold model alone on the same images at the same threshold and temperature
    (what the ensemble adds over one model)."""
    labels = [r.original_label for r in test]
    report = write_split_evaluation(
        cv_dir, "test", test, members.mean(axis=1), threshold, temperature, model_dir=str(cv_dir),
        threshold_method="youden (out-of-fold)",
        mean_uncertainty=float(member_spread(members, temperature).mean()),
        ood_flagged_share=ood_share, seen_in_training=seen,
        members=[{k: v for k, v in classification_report(labels, calibrated(members[:, k], temperature),
                                                          threshold).items()
                  if k in ("accuracy", "roc_auc", "sensitivity", "specificity")}
                 for k in range(members.shape[1])])
    return {**{k: report[k] for k in ("count", "accuracy", "roc_auc", "sensitivity", "specificity",
                                      "balanced_accuracy", "threshold", "ood_flagged_share")},
            "members": report["members"]}
