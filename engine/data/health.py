"""Data health: what is wrong with a data set before any model sees it.

Model-free and pure NumPy. Each image gets four quality scores when the manifest is
built (``quality_scores``, stored in manifest.csv, so a report never decodes twice),
and ``write_health`` turns a manifest's rows into ``data_issues.csv`` (one row per image and
issue: ``path,issue,score,group,detail``) and ``data_health.json`` (counts per issue and
the data set's figures: class balance, duplicate share, the leak of a random split,
patients per split, sizes and modalities). ``python -m engine.health`` writes both;
every training run and cross-validation writes them into its folder.

Issues, and the thresholds calibrated on Br35H (3,000 slices, README "Data health"):

- ``conflicting_labels``: a duplicate group whose members carry different labels;
  every member is flagged (a copy cannot be both tumour and no tumour);
- ``near_constant``: grey-level standard deviation under 0.02 of the range (a blank,
  a flat field, a failed export);
- ``dark``: the brightest 1% of pixels under 0.15 (the head itself is dim);
- ``bright``: mean grey level over 0.7 (a slice is mostly black background: a bright
  image is washed out, inverted or not a slice);
- ``blurry``: the variance of the Laplacian, relative to the image's contrast, under
  ``BLUR_THRESHOLD`` on a 256-pixel thumbnail;
- ``small``: shorter side under 64 px; ``odd_aspect``: wider or taller than 2.5:1;
- ``unreadable``: the file does not decode (the reason is in ``detail``);
- ``exact_duplicate`` and ``near_duplicate`` (information, not a defect): the image has
  a copy with the same pixels, or shares a duplicate group with a near copy.

Time and memory grow linearly with the number of images (one pass over the rows).
"""

from __future__ import annotations

import csv
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from engine import layout
from engine.data.imageio import ImageDecodeError, decode_path, decode_workers
from engine.data.sources import relocate
from engine.files import atomic_open, write_json_atomic

ISSUE_FIELDS = ["path", "issue", "score", "group", "detail"]
QUALITY_ISSUES = ("near_constant", "dark", "bright", "blurry", "small", "odd_aspect")
ISSUES = ("conflicting_labels", *QUALITY_ISSUES, "unreadable", "exact_duplicate", "near_duplicate")
DEFECTS = ("conflicting_labels", *QUALITY_ISSUES, "unreadable")  # the rest is information

NEAR_CONSTANT_STD = 0.02
DARK_P99 = 0.15
BRIGHT_MEAN = 0.7
BLUR_THRESHOLD = 0.004
SMALL_SIDE = 64
ODD_ASPECT = 2.5
_THUMBNAIL = 256


def quality_scores(rgb: np.ndarray) -> dict[str, float]:
    """Grey-level mean, standard deviation and 99th percentile (all in [0, 1]) and the
    sharpness: the variance of the 4-neighbour Laplacian of a thumbnail (longer side
    256 px, so images of any size compare) divided by the thumbnail's variance, so a
    contrast change does not read as blur. Near 0 for a blurred or flat image."""
    gray = Image.fromarray(np.ascontiguousarray(rgb)).convert("L")
    scale = _THUMBNAIL / max(gray.size)
    if scale < 1:
        gray = gray.resize((max(1, round(gray.size[0] * scale)), max(1, round(gray.size[1] * scale))),
                           Image.BILINEAR)
    pixels = np.asarray(gray, np.float64) / 255.0
    variance = float(pixels.var())
    sharpness = 0.0
    if min(pixels.shape) >= 3 and variance > 1e-8:
        laplacian = (pixels[1:-1, :-2] + pixels[1:-1, 2:] + pixels[:-2, 1:-1] + pixels[2:, 1:-1]
                     - 4 * pixels[1:-1, 1:-1])
        sharpness = float(laplacian.var() / variance)
    return {"mean": float(pixels.mean()), "std": float(np.sqrt(variance)),
            "p99": float(np.percentile(pixels, 99)), "sharpness": sharpness}


def set_quality(row, scores: dict[str, float]) -> None:
    """Store ``quality_scores`` on a manifest row (its grey_* and sharpness columns)."""
    row.grey_mean, row.grey_std = round(scores["mean"], 5), round(scores["std"], 5)
    row.grey_p99, row.sharpness = round(scores["p99"], 5), round(scores["sharpness"], 6)


def quality_issues(width: int, height: int, scores: dict[str, float]) -> list[tuple[str, float, str]]:
    """(issue, score, detail) for each quality problem of one image. The score is the
    measured value the threshold was applied to."""
    found = []
    if scores["std"] < NEAR_CONSTANT_STD:
        found.append(("near_constant", scores["std"], f"grey-level std {scores['std']:.3f} < {NEAR_CONSTANT_STD}"))
    elif scores["sharpness"] < BLUR_THRESHOLD:  # a flat image is not also "blurry"
        found.append(("blurry", scores["sharpness"],
                      f"relative Laplacian variance {scores['sharpness']:.4f} < {BLUR_THRESHOLD}"))
    if scores["p99"] < DARK_P99:
        found.append(("dark", scores["p99"], f"brightest 1% at {scores['p99']:.2f} < {DARK_P99}"))
    if scores["mean"] > BRIGHT_MEAN:
        found.append(("bright", scores["mean"], f"mean grey level {scores['mean']:.2f} > {BRIGHT_MEAN}"))
    if min(width, height) < SMALL_SIDE:
        found.append(("small", float(min(width, height)), f"{width}x{height} px, shorter side < {SMALL_SIDE}"))
    aspect = max(width, height) / max(1, min(width, height))
    if aspect > ODD_ASPECT:
        found.append(("odd_aspect", aspect, f"{width}x{height} px, {aspect:.1f}:1 > {ODD_ASPECT}:1"))
    return found


def image_issues(rows) -> list[dict]:
    """Every (image, issue) row of a manifest's rows, most serious issues first within
    each image. Rows need the manifest's quality columns (``quality`` dict)."""
    usable = [r for r in rows if r.usable]
    labels_of, members = defaultdict(set), defaultdict(list)
    for row in usable:
        labels_of[row.group].add(row.label)
        members[row.group].append(row)
    digests = Counter(row.sha256 for row in usable)
    out = []
    for row in rows:
        if not row.usable:
            out.append({"path": row.path, "issue": "unreadable", "score": 1.0, "group": "", "detail": row.reason})
            continue
        group_labels = labels_of[row.group]
        if len(group_labels) > 1:
            counts = Counter(m.label for m in members[row.group])
            out.append({"path": row.path, "issue": "conflicting_labels", "score": 1.0, "group": row.group,
                        "detail": f"group of {len(members[row.group])}: {counts[1]} tumor, {counts[0]} no tumor"})
        for issue, score, detail in quality_issues(row.width, row.height, row.quality):
            out.append({"path": row.path, "issue": issue, "score": round(score, 5), "group": row.group,
                        "detail": detail})
        if digests[row.sha256] > 1:
            out.append({"path": row.path, "issue": "exact_duplicate", "score": float(digests[row.sha256]),
                        "group": row.group, "detail": f"{digests[row.sha256]} files with these pixels"})
        elif len(members[row.group]) > 1:
            out.append({"path": row.path, "issue": "near_duplicate", "score": float(len(members[row.group])),
                        "group": row.group, "detail": f"group of {len(members[row.group])} copies"})
    return out


def _distribution(values) -> dict:
    values = np.asarray(values, np.float64)
    if not len(values):
        return {}
    return {"min": float(values.min()), "p5": float(np.percentile(values, 5)),
            "median": float(np.median(values)), "p95": float(np.percentile(values, 95)),
            "max": float(values.max())}


def dataset_health(rows, issues: list[dict], summary: dict | None = None) -> dict:
    """Counts per issue (images, and duplicate groups where that is the unit) and the
    data set's figures. ``summary`` is the manifest's split summary (data_summary.json),
    which carries the leak of a random split and the patients per split."""
    usable = [r for r in rows if r.usable]
    counts = {issue: 0 for issue in ISSUES}
    groups_with = defaultdict(set)
    for item in issues:
        counts[item["issue"]] += 1
        if item["group"] != "":
            groups_with[item["issue"]].add(item["group"])
    group_sizes = Counter(r.group for r in usable)
    labels = Counter(r.label for r in usable)
    flagged = {item["path"] for item in issues if item["issue"] in DEFECTS}
    summary = summary or {}
    return {
        "images": len(rows), "usable": len(usable),
        "issues": counts,
        "groups_per_issue": {k: len(v) for k, v in groups_with.items()},
        "images_with_a_defect": len(flagged),
        "class_balance": {"tumor": labels.get(1, 0), "no_tumor": labels.get(0, 0),
                          "tumor_share": labels.get(1, 0) / max(1, len(usable))},
        "duplicate_groups": len(group_sizes),
        "largest_group": max(group_sizes.values(), default=0),
        "duplicate_share": sum(n for n in group_sizes.values() if n > 1) / max(1, len(usable)),
        "distinct_slices_share": len(group_sizes) / max(1, len(usable)),
        "leak_if_random_split": summary.get("leak_if_random_split"),
        "leak_in_this_split": summary.get("leak_in_this_split"),
        "patients_per_split": summary.get("patients"),
        "modalities": dict(Counter(r.modality for r in usable)),
        "width": _distribution([r.width for r in usable]),
        "height": _distribution([r.height for r in usable]),
        "thresholds": {"near_constant_std": NEAR_CONSTANT_STD, "dark_p99": DARK_P99,
                       "bright_mean": BRIGHT_MEAN, "blurry_sharpness": BLUR_THRESHOLD,
                       "small_side": SMALL_SIDE, "odd_aspect": ODD_ASPECT},
    }


def write_health(folder: str | os.PathLike, rows, summary: dict | None = None) -> dict:
    """Write ``data_issues.csv`` and ``data_health.json`` into ``folder``; return the
    health figures."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    issues = image_issues(rows)
    with atomic_open(folder / layout.DATA_ISSUES) as handle:
        writer = csv.DictWriter(handle, fieldnames=ISSUE_FIELDS)
        writer.writeheader()
        writer.writerows(issues)
    health = dataset_health(rows, issues, summary)
    write_json_atomic(folder / layout.DATA_HEALTH, health)
    return health


def read_issues(path: str | os.PathLike) -> list[dict]:
    """Rows of data_issues.csv, with Br35H paths mapped onto this machine's copy (a
    shipped or copied report names the builder's)."""
    with open(path, newline="") as handle:
        return [{**row, "path": relocate(row["path"])} for row in csv.DictReader(handle)]


def measure_missing_quality(rows, workers: int | None = None) -> int:
    """Fill in the quality scores of usable rows from a manifest written before they
    were stored (decoding those images once); returns how many were measured."""

    missing = [r for r in rows if r.usable and r.grey_std < 0]

    def measure(row):
        try:
            set_quality(row, quality_scores(decode_path(row.path)))
        except (ImageDecodeError, OSError) as err:
            row.usable, row.reason = False, f"unreadable now: {err}"
    with ThreadPoolExecutor(max_workers=decode_workers(workers)) as pool:
        list(pool.map(measure, missing))
    return len(missing)
