"""Finishing a run: the best checkpoint exported as a SavedModel, the final evaluation
on the val and test splits, the shortcut audit, and the environment record.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path

import tensorflow as tf

from engine import layout, runs
from engine.config import Derived, TrainConfig
from engine.data.manifest import read_manifest, rows_for_training
from engine.evaluation.evaluate import evaluate, fit_ood_for_run
from engine.evaluation.shortcut_audit import write_audit
from engine.serving.export import export_run
from engine.serving.inference import load_model
from engine.training.distribute import device_names
from engine.training.progress import format_metric

log = logging.getLogger("engine.train")


def finish_run(config: TrainConfig, folder: Path, derived: Derived, best_manager, status,
            evaluate: bool, stopped_by: str | None) -> dict:
    """After the last epoch, or a stop: export the best model, calibrate and evaluate
    it when asked, and write the final state. A stopped run whose export fails still
    ends as stopped: its checkpoint is safe and a resume exports again."""
    status(folder, runs.RUNNING, phase=runs.PHASE_EXPORTING, eta_seconds=None)
    try:
        _export_best(best_manager, config, folder)
    except Exception:  # noqa: BLE001 - see the docstring
        if not stopped_by:
            raise
        log.exception("exporting the best model failed; the checkpoint is kept")
    if evaluate:
        status(folder, runs.RUNNING, phase=runs.PHASE_EVALUATING)
        _evaluate_splits(folder, derived)
    if stopped_by:
        return status(folder, runs.STOPPED, ended=time.time(), phase=None, error=None,
                      stopped_by=stopped_by)
    return status(folder, runs.FINISHED, ended=time.time(), phase=None)


def _export_best(best_manager, config: TrainConfig, folder: Path) -> None:
    """Export the best checkpoint as a SavedModel (see engine.serving.export.export_run)."""
    if not best_manager.latest_checkpoint:
        return
    export_run(folder, best_manager.latest_checkpoint, config.flip_tta)
    log.info("exported best model to %s", folder / layout.EXPORT)


def _evaluate_splits(folder: Path, derived: Derived) -> None:
    """Calibrate on val and evaluate val and test, so the dashboard has metrics,
    curves and per-image predictions as soon as the run finishes. A failure here is
    logged; the trained model is already safe."""
    try:
        model = load_model(folder)  # once for the three passes below (about 0.6 s each)
    except Exception:  # noqa: BLE001 - logged; the checkpoints are safe
        log.exception("loading the exported model for evaluation failed")
        return
    try:
        rows = read_manifest(folder / layout.MANIFEST)
        _, model = fit_ood_for_run(folder, rows_for_training(rows, "train"),
                                   rows_for_training(rows, "val"), model)
    except Exception:  # noqa: BLE001 - the flag is optional; predictions still work
        log.exception("fitting the out-of-distribution statistics failed")
    for split, count in (("val", derived.val_images), ("test", derived.test_images)):
        if not count:
            continue
        try:
            report = evaluate(folder, split, model=model)
            log.info("%s: accuracy %.4f, ROC AUC %s, sensitivity %s, specificity %s at threshold %.3f",
                     split, report["accuracy"], format_metric(report["roc_auc"]), format_metric(report["sensitivity"]),
                     format_metric(report["specificity"]), report["threshold"])
        except Exception:  # noqa: BLE001 - evaluation must not fail a finished run
            log.exception("evaluation of the %s split failed", split)
    write_shortcut_audit(folder)


def write_shortcut_audit(folder: Path) -> None:
    """shortcuts.json and cues.csv of a finished run or CV (engine.evaluation.shortcut_audit):
    the model-free cue audit of its data and its own predictions on aligned and
    conflicting images. Logged, never fatal: the trained model is already safe."""
    try:
        report = write_audit(folder, read_manifest(folder / layout.MANIFEST), model_dir=folder)
        for name, entry in report["cue_sets"].items():
            log.info("shortcut audit, %s cues: out-of-fold AUC %s", name, format_metric(entry["auc"]))
    except Exception:  # noqa: BLE001 - see the docstring
        log.exception("the shortcut audit failed")


def environment_record(strategy) -> dict:
    return {
        "tensorflow": tf.__version__, "python": platform.python_version(),
        "devices": device_names(strategy), "replicas": strategy.num_replicas_in_sync,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "host": platform.node(),
    }
