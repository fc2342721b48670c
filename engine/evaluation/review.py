"""Label review decisions: a CSV a reviewer fills on the Label review page (or by hand),
one row per image, and its application to a manifest.

A decision is taken per duplicate group and recorded for each of its images:
``keep`` (the label stands), ``relabel`` (the other class) or ``exclude`` (left out of
training and of the "with reviewed labels" figures). The file is rewritten atomically
on every decision, with the reviewer's note and the time, so a crash never leaves half
a file. Nothing here decides a label: the file holds only what a reviewer entered.

The manifest keeps both labels: ``original_label`` (as the folder says) and ``label``
(after review, what training uses). Splits and folds never depend on the review, so
"as labelled" and "with reviewed labels" figures are measured on the same images.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np

from engine.data.sources import relocate
from engine.files import atomic_open

DECISIONS = ("keep", "relabel", "exclude")
REVIEW_FIELDS = ["path", "group", "original_label", "decision", "reviewed_label", "note",
                 "reviewer", "time"]


class ReviewFileError(ValueError):
    """The review file cannot be used; ``str(err)`` says why."""


def read_review(path: str | os.PathLike) -> dict[str, dict]:
    """Decisions by image path. A missing file is an empty review."""
    path = Path(path)
    if not path.exists():
        return {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "decision"} - set(reader.fieldnames or [])
        if missing:
            raise ReviewFileError(f"{path} is not a label review file (no {', '.join(sorted(missing))} column)")
        decisions = {}
        for number, record in enumerate(reader, start=2):
            if record["decision"] not in DECISIONS:
                raise ReviewFileError(f"{path} line {number}: decision must be one of "
                                      f"{', '.join(DECISIONS)}, got {record['decision']!r}")
            decisions[record["path"]] = record
        return decisions


def record_decision(path: str | os.PathLike, images: list[tuple[str, int, int]], decision: str,
                    note: str = "", reviewer: str = "") -> None:
    """Record ``decision`` for every (path, group, original label) of one duplicate
    group, replacing earlier decisions for those images."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}")
    path = Path(path)
    decisions = read_review(path)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for image_path, group, original in images:
        reviewed = {"keep": original, "relabel": 1 - int(original), "exclude": ""}[decision]
        decisions[image_path] = {"path": image_path, "group": group, "original_label": int(original),
                                 "decision": decision, "reviewed_label": reviewed, "note": note,
                                 "reviewer": reviewer, "time": stamp}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=REVIEW_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for record in decisions.values():
            writer.writerow(record)


def apply_review(rows, decisions: dict[str, dict]):
    """Set ``review`` and the reviewed ``label`` on manifest rows (in place); the
    folder's label stays in ``original_label``. Returns the rows."""
    for row in rows:
        if row.original_label < 0:
            row.original_label = row.label
        record = decisions.get(row.path)
        if record is None:
            continue
        row.review = record["decision"]
        if row.review == "relabel":
            row.label = 1 - row.original_label
        else:
            row.label = row.original_label
    return rows


def reviewed_labels(paths, labels, decisions: dict[str, dict]):
    """(labels after review, mask of images kept) for images already predicted, so any
    model's stored predictions can be scored with a review without predicting again:
    ``relabel`` flips a label, ``exclude`` drops the image, ``keep`` and undecided
    images stand."""
    labels = np.asarray(labels).astype(int).copy()
    kept = np.ones(len(labels), bool)
    for index, path in enumerate(paths):
        decision = decisions.get(path, {}).get("decision")
        if decision == "relabel":
            labels[index] = 1 - labels[index]
        elif decision == "exclude":
            kept[index] = False
    return labels, kept


def queue_file(reviews_dir: str | os.PathLike, model_slug: str) -> Path:
    """Where images sent for review from the Map page wait, per model: beside the review
    files, ``<slug>.queue.csv``."""
    return Path(reviews_dir) / f"{model_slug}.queue.csv"


def _queue_rows(path: Path) -> dict[str, dict]:
    """The queue file's rows by stored path, in order; a missing file is an empty queue."""
    if not path.exists():
        return {}
    with open(path, newline="") as handle:
        return {r["path"]: r for r in csv.DictReader(handle)}


def read_queue(path: str | os.PathLike) -> set[str]:
    """The image paths sent for review (relocated); a missing file is an empty queue."""
    return {relocate(stored) for stored in _queue_rows(Path(path))}


def add_to_queue(path: str | os.PathLike, images: list[str], note: str = "") -> int:
    """Add images to the review queue (kept once each); returns how many it holds."""
    path = Path(path)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    queued = _queue_rows(path)
    for image in images:
        queued.setdefault(image, {"path": image, "note": note, "time": stamp})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "note", "time"])
        writer.writeheader()
        writer.writerows(queued.values())
    return len(queued)
