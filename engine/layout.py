"""The map of a run folder: every file and subfolder a run, a fold or a cross-validation
writes, named once. The engine writes them, the dashboard, the report and the benchmarks
read them, and none of them spells a file name of its own, so renaming or adding a file
is one edit here. No TensorFlow and no engine imports: every stage and the UI use it.

A **run** (``python -m engine.train``) and a **fold** of a CV hold the training files and
the model; a **CV** (``python -m engine.cv``) holds ``fold_<k>/`` folders, the out-of-fold
files and the fold ensemble; the shipped model (checkpoints/) is a CV without its folds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# The request and the record of a run (engine.request), written first.
CONFIG = "config.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
TRAIN_LOG = "train.log"
PROCESS_LOG = "process.log"  # a launched run's stdout/stderr (engine.training.launch)

# The data as this run saw it.
MANIFEST = "manifest.csv"  # every image: path, label, split, duplicate group, fold
DATA_SUMMARY = "data_summary.json"
DATA_HEALTH = "data_health.json"
DATA_ISSUES = "data_issues.csv"
SHORTCUTS = "shortcuts.json"  # the shortcut audit (engine.evaluation.shortcut_audit)
CUES = "cues.csv"

# The model.
CHECKPOINTS = "checkpoints"
BEST_CHECKPOINT = "checkpoints/best"
EXPORT = "export"  # the SavedModel
MODEL_INFO = "model.json"  # threshold, temperature, refer band, conformal set
MODEL_CARD = "model_card.json"
NEIGHBOURS = "neighbours.npz"
NEIGHBOURS_GRAPH = "neighbours.faiss"  # the approximate index of a large pool (engine.serving.neighbours)
OOD = "ood.npz"
APPEARANCE = "appearance.npz"
KERAS_COMPARISON = "keras_comparison.json"
MAP = "map.csv"  # the 2-D map of the pool (engine.map)

# A cross-validation.
CV_SUMMARY = "cv_summary.json"
OOF_PREDICTIONS = "oof_predictions.csv"  # each pool image scored by the fold that held it out
LABEL_ISSUES = "label_issues.csv"  # the label audit (engine.evaluation.audit)

SPLITS = ("train", "val", "test", "oof")


def evaluation(split: str) -> str:
    """``eval_<split>.json``: figures on one split ("oof": a CV's out-of-fold pool)."""
    return f"eval_{split}.json"


def predictions(split: str) -> str:
    """``predictions_<split>.csv``: one row per image of that split."""
    return f"predictions_{split}.csv"


def fold(k: int) -> str:
    """``fold_<k>``: the run folder of a CV's fold k."""
    return f"fold_{int(k)}"


def fold_dirs(folder: str | os.PathLike) -> list[Path]:
    """The fold folders a CV folder holds, in fold order (none for the shipped model)."""
    folder, found, k = Path(folder), [], 0
    while (folder / fold(k)).is_dir():
        found.append(folder / fold(k))
        k += 1
    return found


RUN, CV, FOLD, MODEL, UNKNOWN = "run", "cv", "fold", "model", "unknown"


def kind(folder: str | os.PathLike) -> str:
    """What a folder is, decided one way everywhere: "cv" when its request has a cv
    section (or, for the shipped model and old folders, it holds a CV summary or
    out-of-fold predictions), "fold" for a CV's fold_<k>, "run" for a run with a
    request, "model" for an exported model without a request, else "unknown"."""
    folder = Path(folder)
    request = {}
    try:
        request = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError):
        pass
    if isinstance(request, dict) and "cv" in request:
        return CV
    if (folder / CV_SUMMARY).exists() or (folder / OOF_PREDICTIONS).exists():
        return CV
    if folder.name.startswith("fold_") and (folder.parent / CONFIG).exists():
        return FOLD
    if isinstance(request, dict) and request.get("config"):
        return RUN
    if (folder / EXPORT).is_dir() or (folder / MODEL_INFO).exists():
        return MODEL
    return UNKNOWN
