"""A 2-D map of a model's data set, from the pooled features it already stores.

Errors, flags and copies are lists elsewhere; the map shows the whole pool at once:
where the errors cluster, whether a flagged label sits in the other class's cloud,
whether one source forms its own island. The features are the model's
``neighbours.npz`` (for a CV or the shipped ensemble, the out-of-fold pool: every
non-test image). They are reduced by PCA to ``PCA_DIMENSIONS`` and laid out by openTSNE
(BSD-3). UMAP was measured as well (``bench/embedding_map.py``) and not chosen; see
docs/benchmarks.md.

Above ``MAX_FITTED`` points, the layout is fitted on one image per duplicate group (a
random sample of the groups if even those are too many) and every other image is
placed by openTSNE's ``transform`` from its nearest fitted images, so time and memory
stay bounded at hospital scale.

``map.csv`` has one row per pool image: path, x, y, label, group, fold and, where the
model folder has them, the out-of-fold prediction and error, the label-audit score, the
acquisition-cue score and the health issues. No TensorFlow.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np

from engine import layout
from engine.data.sources import portable, relocate
from engine.files import atomic_open

PCA_DIMENSIONS = 50
MAX_FITTED = 50_000
COLUMNS = ["path", "x", "y", "label", "group", "fold", "probability", "predicted", "error", "audit_score",
           "flagged", "acquisition_score", "health_issues"]


def layout_points(vectors: np.ndarray, groups: np.ndarray, seed: int = 0,
                  max_fitted: int = MAX_FITTED) -> tuple[np.ndarray, dict]:
    """[N, D] unit feature vectors -> [N, 2] map coordinates, and how they were made.
    Fitted on every point up to ``max_fitted``; above, on one point per duplicate group
    (sampled down to ``max_fitted``), the rest placed by ``transform``."""
    from openTSNE import TSNE
    from sklearn.decomposition import PCA
    started = time.perf_counter()
    vectors = np.asarray(vectors, np.float32)
    count = len(vectors)
    dims = int(min(PCA_DIMENSIONS, vectors.shape[1], max(count - 1, 1)))
    rng = np.random.default_rng(seed)
    if count > max_fitted:
        _, first = np.unique(groups, return_index=True)
        fitted = np.sort(rng.choice(first, size=min(len(first), max_fitted), replace=False))
    else:
        fitted = np.arange(count)
    pca = PCA(n_components=dims, random_state=seed).fit(vectors[fitted])
    reduced = pca.transform(vectors).astype(np.float32)
    perplexity = float(min(30.0, max(2.0, (len(fitted) - 1) / 3.0)))
    embedding = TSNE(perplexity=perplexity, random_state=seed, n_jobs=max(os.cpu_count() or 1, 1),
                     verbose=False).fit(reduced[fitted])
    points = np.empty((count, 2), np.float32)
    points[fitted] = np.asarray(embedding)
    rest = np.setdiff1d(np.arange(count), fitted)
    if len(rest):
        for start in range(0, len(rest), 20_000):
            chunk = rest[start:start + 20_000]
            points[chunk] = np.asarray(embedding.transform(reduced[chunk]))
    return points, {"method": "openTSNE", "pca_dimensions": dims, "perplexity": perplexity,
                    "fitted": int(len(fitted)), "placed": int(len(rest)), "seed": seed,
                    "seconds": round(time.perf_counter() - started, 2)}


def _table(path: Path, key: str = "path") -> dict[str, dict]:
    return {relocate(r[key]): r for r in _rows(path)}


def build_map(model_dir: str | os.PathLike, seed: int = 0, max_fitted: int = MAX_FITTED) -> tuple[list[dict], dict]:
    """The rows of ``map.csv`` for the model in ``model_dir`` and how the layout was made."""
    model_dir = Path(model_dir)
    store = model_dir / layout.NEIGHBOURS
    if not store.exists():
        raise FileNotFoundError(f"{model_dir} has no {layout.NEIGHBOURS} (pooled features): "
                                "train or re-export the model with this version first")
    with np.load(store, allow_pickle=False) as data:
        vectors, paths = data["vectors"], [relocate(str(p)) for p in data["paths"]]
        labels, groups, folds = data["labels"], data["groups"], data["folds"]
    points, how = layout_points(vectors, groups, seed, max_fitted)
    oof = _table(model_dir / layout.predictions("oof")) or _table(model_dir / layout.predictions("val"))
    audit = _table(model_dir / layout.LABEL_ISSUES)
    cues = _table(model_dir / layout.CUES)
    issues: dict[str, list[str]] = {}
    for row in _rows(model_dir / layout.DATA_ISSUES):
        if row["issue"] not in ("near_duplicate", "exact_duplicate"):
            issues.setdefault(relocate(row["path"]), []).append(row["issue"])
    rows = []
    for index, path in enumerate(paths):
        predicted = oof.get(path, {})
        flagged = audit.get(path, {})
        rows.append({
            "path": path, "x": float(points[index, 0]), "y": float(points[index, 1]),
            "label": int(labels[index]), "group": int(groups[index]), "fold": int(folds[index]),
            "probability": predicted.get("probability", ""), "predicted": predicted.get("predicted", ""),
            "error": "" if "correct" not in predicted else int(predicted["correct"] in ("0", "False")),
            "audit_score": flagged.get("score", ""), "flagged": int(flagged.get("flagged") == "True"),
            "acquisition_score": cues.get(path, {}).get("p_acquisition", ""),
            "health_issues": " ".join(issues.get(path, [])),
        })
    return rows, how


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_map(model_dir: str | os.PathLike, out: str | os.PathLike | None = None, seed: int = 0,
              max_fitted: int = MAX_FITTED) -> tuple[Path, dict]:
    """Write ``map.csv`` (by default beside the model) with portable paths where the
    data set is the installed one; returns its path and how the layout was made."""
    rows, how = build_map(model_dir, seed, max_fitted)
    out = Path(out) if out else Path(model_dir) / layout.MAP
    with atomic_open(out) as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "path": portable(row["path"]), "x": f"{row['x']:.4f}", "y": f"{row['y']:.4f}"})
    return out, {**how, "images": len(rows)}
