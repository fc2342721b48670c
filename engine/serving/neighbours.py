"""The nearest training images of a prediction, and whether the model has effectively
seen the input before.

A model folder carries ``neighbours.npz``: the pooled features of the images it learnt
from (for a fold ensemble, the out-of-fold pool: every non-test image, with its fold,
label and duplicate group), each member's features L2-normalised and concatenated, then
normalised again, as float16 (Br35H's 2,554-image pool with five 256-wide members:
about 6.5 MB). The cosine similarity of two such vectors is the mean of the members'
cosine similarities. Lookup is exact, one matrix product in NumPy: time and memory grow
linearly with the pool, a few milliseconds at this size.

``seen_threshold``, stored beside the features, decides "seen in training": it is
chosen on the pool's own known duplicates, as the similarity that best separates an
image's most similar copy in its own duplicate group from its most similar image of
another group (Youden's J over those two sets).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import layout

NEIGHBOURS_FILE = layout.NEIGHBOURS
FLOAT16_SLACK = 1e-3  # similarity lost by storing unit vectors as float16


def embed(features: np.ndarray) -> np.ndarray:
    """[N, K, C] member features -> [N, K*C] unit vectors (float32)."""
    features = np.asarray(features, np.float32)
    if features.ndim == 2:
        features = features[:, None, :]
    unit = features / np.maximum(np.linalg.norm(features, axis=2, keepdims=True), 1e-12)
    flat = unit.reshape(len(unit), -1)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


def choose_seen_threshold(vectors: np.ndarray, groups: np.ndarray, chunk: int = 1024) -> dict:
    """The "seen in training" threshold from the pool's duplicate groups (see the module
    docstring), with the figures behind it. Quadratic in the pool, in chunks."""
    groups = np.asarray(groups)
    same_best, other_best = np.full(len(vectors), -np.inf), np.full(len(vectors), -np.inf)
    for start in range(0, len(vectors), chunk):
        sims = vectors[start:start + chunk] @ vectors.T
        rows = np.arange(start, min(start + chunk, len(vectors)))
        sims[rows - start, rows] = -np.inf
        same = groups[rows][:, None] == groups[None, :]
        same_best[rows] = np.where(same, sims, -np.inf).max(axis=1)
        other_best[rows] = np.where(~same, sims, -np.inf).max(axis=1)
    has_copy = np.isfinite(same_best)
    positives, negatives = same_best[has_copy], other_best[np.isfinite(other_best)]
    if not len(positives) or not len(negatives):
        return {"seen_threshold": 0.99, "rule": "no duplicate pairs in the pool: a fixed 0.99"}
    candidates = np.unique(np.concatenate([positives, negatives]))
    tpr = np.array([(positives >= t).mean() for t in candidates])
    fpr = np.array([(negatives >= t).mean() for t in candidates])
    best = int(np.argmax(tpr - fpr))
    return {"seen_threshold": float(candidates[best]), "rule": "Youden J on known duplicate pairs",
            "true_positive_rate": float(tpr[best]), "false_positive_rate": float(fpr[best]),
            "pairs": int(len(positives)), "non_pairs": int(len(negatives))}


def build(folder: str | os.PathLike, rows, features: np.ndarray, folds=None) -> dict:
    """Write ``neighbours.npz`` for ``rows`` (manifest rows the model learnt from) and
    their [N, K, C] features; returns the threshold figures."""
    vectors = embed(features)
    groups = np.array([r.group for r in rows])
    chosen = choose_seen_threshold(vectors, groups)
    from engine.files import atomic_open
    with atomic_open(Path(folder) / NEIGHBOURS_FILE, "wb") as handle:
        np.savez_compressed(
            handle, vectors=vectors.astype(np.float16), paths=np.array([r.path for r in rows]),
            labels=np.array([r.original_label if r.original_label >= 0 else r.label for r in rows]),
            groups=groups, folds=np.array(folds if folds is not None else [r.fold for r in rows]),
            seen_threshold=np.float32(chosen["seen_threshold"]))
    return chosen


@dataclass(frozen=True)
class NeighbourIndex:
    vectors: np.ndarray
    paths: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    folds: np.ndarray
    seen_threshold: float

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "NeighbourIndex | None":
        path = Path(folder) / NEIGHBOURS_FILE
        if not path.exists():
            return None
        from engine.data.sources import relocate
        with np.load(path) as data:
            return cls(vectors=data["vectors"].astype(np.float32),
                       paths=np.array([relocate(str(p)) for p in data["paths"]]),
                       labels=data["labels"], groups=data["groups"], folds=data["folds"],
                       seen_threshold=float(data["seen_threshold"]))

    def query(self, features: np.ndarray, k: int = 5, exclude: list[str | None] | None = None) -> list[dict]:
        """For each of N inputs ([N, K, C] features): its ``k`` most similar pool images
        (most similar first) and whether it is a near-copy of one of them. ``exclude``:
        per input, a pool path to leave out (the input itself, when it is a pool image
        shown on Errors or Label review) together with the rest of its duplicate group:
        its copies are counted as copies already (``copies_left_out``), and the reviewer
        wants to see how *other* slices that look like it are labelled."""
        sims = embed(features) @ self.vectors.T
        left_out = [0] * len(sims)
        for row, path in enumerate(exclude or []):
            if path is not None:
                itself = self.paths == path
                drop = itself | np.isin(self.groups, self.groups[itself]) if itself.any() else itself
                sims[row, drop] = -np.inf
                left_out[row] = int(drop.sum() - itself.sum())
        k = min(k, int(np.isfinite(sims).sum(axis=1).min()) if len(sims) else k)
        order = np.argsort(-sims, axis=1)[:, :k]
        out = []
        for row, picks in zip(sims, order):
            out.append({
                "copies_left_out": left_out[len(out)],
                # The pool's vectors are stored as float16: an image's similarity to its own
                # stored vector can fall a few 1e-4 short of 1, so the test allows that much.
                "seen_in_training": bool(row[picks[0]] >= self.seen_threshold - FLOAT16_SLACK) if k else False,
                "neighbours": [{"path": str(self.paths[i]), "label": int(self.labels[i]),
                                "group": int(self.groups[i]), "similarity": round(float(row[i]), 4)}
                               for i in picks],
            })
        return out
