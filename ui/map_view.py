"""The Map page's pieces that are not drawing: reading map.csv, the colourings, the
rows a lasso or box selection picked, and the actions on them. Kept apart from the page
so they are tested without a browser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from engine.data.sources import relocate

MAX_MARKERS = 50_000  # more are drawn as a density layer plus a sample of markers

COLOURINGS = {
    "label": ("label", "the folder's label (1 = tumor)"),
    "predicted class (out-of-fold)": ("predicted", "the fold model's decision for the image it never trained on"),
    "out-of-fold error": ("error", "1 = that decision was wrong"),
    "flagged label (audit)": ("flagged", "the label audit doubts the label"),
    "audit score": ("audit_score", "how strongly the out-of-fold prediction contradicts the label"),
    "acquisition-cue score": ("acquisition_score", "the shortcut audit's out-of-fold P(tumor) from size, "
                              "format and background alone"),
    "health issue": ("health_issues", "quality issues of the data-health report"),
    "fold": ("fold", "cross-validation fold"),
    "duplicate group": ("group", "copies of one slice share a group"),
}
CATEGORICAL = {"label", "predicted", "error", "flagged", "fold", "health_issues"}


def read_map(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"health_issues": str}, keep_default_na=False,
                        na_values={c: [""] for c in ("probability", "predicted", "error", "audit_score",
                                                     "acquisition_score")})
    frame["health_issues"] = frame["health_issues"].replace("", "none")
    frame["file"] = frame["path"].map(lambda p: Path(p).name)
    return frame


def drawn(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The rows drawn as markers: all of them up to MAX_MARKERS, else a seeded sample
    (the rest show in the density layer). The index keeps the map's row numbers."""
    if len(frame) <= MAX_MARKERS:
        return frame
    return frame.sample(MAX_MARKERS, random_state=seed).sort_index()


def selected_rows(markers: pd.DataFrame, selection) -> pd.DataFrame:
    """The rows a plotly selection event picked. Points carry their map row number in
    customdata, so the answer does not depend on trace order or colour groups."""
    points = (selection or {}).get("selection", {}).get("points", []) if isinstance(selection, dict) else \
        list(getattr(getattr(selection, "selection", None), "points", []) or [])
    rows = []
    for point in points:
        custom = point.get("customdata")
        if custom is not None:
            rows.append(int(custom[0] if isinstance(custom, (list, tuple)) else custom))
    rows = sorted(set(rows) & set(markers.index))
    return markers.loc[rows]


def summary(rows: pd.DataFrame) -> dict:
    """What a selection holds, in counts a reader checks at a glance."""
    errors = rows["error"].dropna()
    return {"images": int(len(rows)), "tumor labels": int((rows["label"] == 1).sum()),
            "no-tumor labels": int((rows["label"] == 0).sum()), "duplicate groups": int(rows["group"].nunique()),
            "out-of-fold errors": int(errors.sum()) if len(errors) else 0,
            "flagged labels": int(rows["flagged"].fillna(0).sum())}


def exclusion_images(rows: pd.DataFrame) -> list[tuple[str, int, int]]:
    """(path, group, label) for engine.evaluation.review.record_decision, in the form the
    review file stores (the engine's own paths)."""
    return [(relocate(p), int(g), int(label)) for p, g, label in zip(rows["path"], rows["group"], rows["label"])]


def place(frame: pd.DataFrame, neighbours: list[dict]) -> tuple[float, float] | None:
    """Where an upload falls on the map: the similarity-weighted mean position of its
    nearest training images (each ``{"path", "similarity"}``), or None when none of them
    is on the map. Cheaper than a transform and what "it falls among these" means."""
    where = dict(zip(frame["path"].map(relocate), zip(frame["x"], frame["y"])))
    found = [(where[relocate(n["path"])], max(float(n["similarity"]), 1e-6)) for n in neighbours
             if relocate(n["path"]) in where]
    if not found:
        return None
    weights = np.array([w for _, w in found])
    points = np.array([xy for xy, _ in found], np.float64)
    x, y = (points * weights[:, None]).sum(0) / weights.sum()
    return float(x), float(y)
