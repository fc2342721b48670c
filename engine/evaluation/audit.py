"""Label audit: ``python -m engine.audit CV_DIR`` ranks every image by how likely its
label is wrong and writes ``CV_DIR/label_issues.csv`` (most suspicious first).

Confident learning (Northcutt, Jiang and Chuang, JAIR 2021), written here in NumPy
rather than taken from cleanlab: cleanlab is AGPL-licensed and this project is MIT, and
for two classes the method is a few lines. Each class gets a threshold, the mean
probability of that class over the images labelled with it; an image is *confidently*
of class j when its probability of j reaches j's threshold. An image whose confident
class differs from its label is flagged. Every image is ranked by self-confidence, one
minus the probability of its given label (cleanlab's ``self_confidence`` ranking).

The probabilities must be out-of-sample: out-of-fold for the CV pool (each image scored
by the fold model that never trained on its duplicate group) and the fold ensemble's for
the fixed test split, which no fold trained on.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from engine import layout
from engine.data.manifest import read_manifest
from engine.data.sources import relocate
from engine.evaluation.oof import read_oof
from engine.files import atomic_open

ISSUE_FIELDS = ["path", "label", "suggested_label", "score", "group", "probability", "flagged",
                "source", "modality"]


def confident_classes(labels, probabilities) -> np.ndarray:
    """For each image, the class it confidently belongs to (0 or 1), or -1 if none.

    ``probabilities`` are P(tumor). Per-class thresholds: the mean P(class) over the
    images labelled with that class. Where both classes pass, the likelier wins."""
    labels = np.asarray(labels).astype(int)
    p1 = np.asarray(probabilities, np.float64)
    class_probs = np.stack([1.0 - p1, p1], axis=1)
    thresholds = np.array([class_probs[labels == k, k].mean() if (labels == k).any() else 1.0
                           for k in (0, 1)])
    passes = class_probs >= thresholds[None, :]
    confident = np.where(passes, class_probs, -np.inf).argmax(axis=1)
    return np.where(passes.any(axis=1), confident, -1)


def label_issue_table(labels, probabilities) -> dict[str, np.ndarray]:
    """Score (1 - P(given label); higher = more suspicious), suggested label (the
    likelier class), and the confident-learning flag, for every image."""
    labels = np.asarray(labels).astype(int)
    p1 = np.asarray(probabilities, np.float64)
    given = np.where(labels == 1, p1, 1.0 - p1)
    confident = confident_classes(labels, p1)
    suggested = (p1 >= 0.5).astype(int)
    # Flagged only where the suggestion differs from the label: a weak model can be
    # "confident" of the other class below 0.5, and a card saying "labelled tumor,
    # model suggests tumor" asks a reviewer to decide nothing.
    return {"score": 1.0 - given, "suggested_label": suggested,
            "flagged": (confident >= 0) & (confident != labels) & (suggested != labels)}


def audit(cv_dir: str | os.PathLike) -> list[dict]:
    """Rank the CV pool (out-of-fold) and the test split (fold ensemble) of an engine.cv
    folder; write label_issues.csv; return its rows, most suspicious first."""
    cv_dir = Path(cv_dir)
    if not (cv_dir / layout.OOF_PREDICTIONS).exists():
        raise FileNotFoundError(f"{cv_dir} has no {layout.OOF_PREDICTIONS}: run python -m engine.cv first")
    manifest = {r.path: r for r in read_manifest(cv_dir / layout.MANIFEST)}
    items = [{"path": r["path"], "label": int(r["label"]), "probability": float(r["probability"]),
              "source": "out-of-fold"} for r in read_oof(cv_dir / layout.OOF_PREDICTIONS)]
    test_file = cv_dir / layout.predictions("test")
    if test_file.exists():
        with open(test_file, newline="") as handle:
            items += [{"path": relocate(r["path"]), "label": int(r["label"]),
                       "probability": float(r["probability"]), "source": "test (ensemble)"}
                      for r in csv.DictReader(handle)]
    table = label_issue_table([i["label"] for i in items], [i["probability"] for i in items])
    rows = []
    for index, item in enumerate(items):
        row = manifest.get(item["path"])
        rows.append({**item, "score": float(table["score"][index]),
                     "suggested_label": int(table["suggested_label"][index]),
                     "flagged": bool(table["flagged"][index]),
                     "group": row.group if row else -1, "modality": row.modality if row else ""})
    rows.sort(key=lambda r: -r["score"])
    write_issues(cv_dir / layout.LABEL_ISSUES, rows)
    return rows


def write_issues(path: Path, rows: list[dict]) -> None:
    with atomic_open(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=ISSUE_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "score": f"{row['score']:.6f}",
                             "probability": f"{row['probability']:.6f}"})


def read_issues(path: str | os.PathLike) -> list[dict]:
    """Rows of label_issues.csv, most suspicious first, Br35H paths relocated."""
    with open(path, newline="") as handle:
        return [{**r, "path": relocate(r["path"]), "label": int(r["label"]), "suggested_label": int(r["suggested_label"]),
                 "score": float(r["score"]), "probability": float(r["probability"]),
                 "group": int(r["group"]), "flagged": r["flagged"] == "True"}
                for r in csv.DictReader(handle)]
