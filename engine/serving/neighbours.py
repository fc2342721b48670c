"""The nearest training images of a prediction, and whether the model has effectively
seen the input before.

A model folder carries ``neighbours.npz``: the pooled features of the images it learnt
from (for a fold ensemble, the out-of-fold pool: every non-test image, with its fold,
label and duplicate group), each member's features L2-normalised and concatenated, then
normalised again, as float16 (Br35H's 2,554-image pool with five 256-wide members:
about 6.5 MB). The cosine similarity of two such vectors is the mean of the members'
cosine similarities. Below ``APPROXIMATE_FROM`` pool images lookup is exact, one matrix
product in NumPy, whose time grows linearly with the pool (a few milliseconds at
Br35H's size). From there on, ``build`` also writes ``neighbours.faiss``: an HNSW graph
(faiss, inner product) over the same vectors held as float16, searched in about a
millisecond whatever the pool; its recall against the exact search is measured by
``bench/neighbour_index.py`` (docs/benchmarks.md) and checked in tests/test_neighbours.py.

``seen_threshold``, stored beside the features, decides "seen in training": it is
chosen on the pool's own known duplicates, as the similarity that best separates an
image's most similar copy in its own duplicate group from its most similar image of
another group (Youden's J over those two sets).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from engine import layout
from engine.data.sources import relocate
from engine.files import atomic_open

FLOAT16_SLACK = 1e-3  # similarity lost by storing unit vectors as float16
# Pool size from which lookup goes through the HNSW graph: there the exact product costs
# about 17 ms a query (0.5 GB of float32) and grows linearly, the graph about 1.4 ms
# (bench/neighbour_index.py, docs/benchmarks.md).
APPROXIMATE_FROM = 100_000
GRAPH_LINKS = 32  # HNSW neighbours per node
GRAPH_SEARCH_DEPTH = 256  # efSearch: recall@5 0.997 at 100,000 images, 0.993 at 300,000
THRESHOLD_CANDIDATES = 32  # nearest images per pool image when choosing the threshold on a graph


def embed(features: np.ndarray) -> np.ndarray:
    """[N, K, C] member features -> [N, K*C] unit vectors (float32)."""
    features = np.asarray(features, np.float32)
    if features.ndim == 2:
        features = features[:, None, :]
    unit = features / np.maximum(np.linalg.norm(features, axis=2, keepdims=True), 1e-12)
    flat = unit.reshape(len(unit), -1)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


def choose_seen_threshold(vectors: np.ndarray, groups: np.ndarray, chunk: int = 1024,
                          graph: "faiss.Index | None" = None) -> dict:
    """The "seen in training" threshold from the pool's duplicate groups (see the module
    docstring), with the figures behind it. Exact and quadratic in the pool, in chunks;
    with ``graph``, each image's ``THRESHOLD_CANDIDATES`` nearest from the graph stand
    in for the whole pool (a copy or a closest other image beyond them is not counted)."""
    groups = np.asarray(groups)
    same_best, other_best = np.full(len(vectors), -np.inf), np.full(len(vectors), -np.inf)
    for start in range(0, len(vectors), chunk):
        rows = np.arange(start, min(start + chunk, len(vectors)))
        block = np.asarray(vectors[rows], np.float32)
        if graph is None:  # every pool image is a candidate: its groups broadcast, nothing gathered
            sims = block @ np.asarray(vectors, np.float32).T
            sims[rows - start, rows] = -np.inf
            candidate_groups = groups[None, :]
        else:
            sims, ids = graph.search(block, min(THRESHOLD_CANDIDATES + 1, len(vectors)))
            sims = np.where((ids == rows[:, None]) | (ids < 0), -np.inf, sims)
            candidate_groups = groups[np.maximum(ids, 0)]
        same = groups[rows][:, None] == candidate_groups
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


def build_graph(vectors: np.ndarray) -> "faiss.Index":
    """The HNSW graph of a large pool: inner product on the unit vectors, kept as float16
    (the precision ``neighbours.npz`` stores), so its similarities are the exact path's."""
    graph = faiss.IndexHNSWSQ(vectors.shape[1], faiss.ScalarQuantizer.QT_fp16, GRAPH_LINKS,
                              faiss.METRIC_INNER_PRODUCT)
    graph.train(np.asarray(vectors[:1], np.float32))  # fp16 needs no training data; faiss asks for the call
    for start in range(0, len(vectors), 65_536):
        graph.add(np.asarray(vectors[start:start + 65_536], np.float32))
    graph.hnsw.efSearch = GRAPH_SEARCH_DEPTH
    return graph


def build(folder: str | os.PathLike, rows, features: np.ndarray, folds=None) -> dict:
    """Write ``neighbours.npz`` for ``rows`` (manifest rows the model learnt from) and
    their [N, K, C] features, and from ``APPROXIMATE_FROM`` images on the graph
    ``neighbours.faiss`` beside it; returns the threshold figures."""
    vectors = embed(features)
    groups = np.array([r.group for r in rows])
    graph_file = Path(folder) / layout.NEIGHBOURS_GRAPH
    graph = build_graph(vectors) if len(vectors) >= APPROXIMATE_FROM else None
    chosen = choose_seen_threshold(vectors, groups, graph=graph)
    with atomic_open(Path(folder) / layout.NEIGHBOURS, "wb") as handle:
        np.savez_compressed(
            handle, vectors=vectors.astype(np.float16), paths=np.array([r.path for r in rows]),
            labels=np.array([r.original_label if r.original_label >= 0 else r.label for r in rows]),
            groups=groups, folds=np.array(folds if folds is not None else [r.fold for r in rows]),
            seen_threshold=np.float32(chosen["seen_threshold"]))
    if graph is not None:
        with atomic_open(graph_file, "wb") as handle:
            handle.write(faiss.serialize_index(graph).tobytes())
        chosen["lookup"] = f"approximate (HNSW graph, {len(vectors):,} images)"
    else:
        graph_file.unlink(missing_ok=True)  # a smaller pool rebuilt in the same folder
        chosen["lookup"] = "exact"
    return chosen


@dataclass(frozen=True)
class NeighbourIndex:
    vectors: np.ndarray  # [N, D] unit vectors: float32 for exact lookup, float16 (as stored) beside a graph
    paths: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    folds: np.ndarray
    seen_threshold: float
    graph: object = None  # faiss HNSW graph of a large pool, else None (exact lookup)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "NeighbourIndex | None":
        path = Path(folder) / layout.NEIGHBOURS
        if not path.exists():
            return None
        with np.load(path) as data:
            index = cls(vectors=data["vectors"].astype(np.float16),
                        paths=np.array([relocate(str(p)) for p in data["paths"]]),
                        labels=data["labels"], groups=data["groups"], folds=data["folds"],
                        seen_threshold=float(data["seen_threshold"]))
        graph_file = Path(folder) / layout.NEIGHBOURS_GRAPH
        if graph_file.exists():
            graph = faiss.deserialize_index(np.fromfile(graph_file, dtype=np.uint8))
            graph.hnsw.efSearch = GRAPH_SEARCH_DEPTH
            if graph.ntotal == len(index.vectors):  # else stale: exact lookup is right, only slower
                return cls(**{**index.__dict__, "graph": graph})
        return cls(**{**index.__dict__, "vectors": index.vectors.astype(np.float32)})

    @property
    def approximate(self) -> bool:
        return self.graph is not None

    def _candidates(self, queries: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """[N, m] similarities and pool ids of each query's candidates: the whole pool
        (exact), or the graph's ``count`` nearest (ids -1 where it found fewer)."""
        if self.graph is None:
            sims = queries @ self.vectors.T
            return sims, np.broadcast_to(np.arange(len(self.vectors)), sims.shape)
        return self.graph.search(queries, int(min(count, len(self.vectors))))

    def query(self, features: np.ndarray, k: int = 5, exclude: list[str | None] | None = None) -> list[dict]:
        """For each of N inputs ([N, K, C] features): its ``k`` most similar pool images
        (most similar first) and whether it is a near-copy of one of them. ``exclude``:
        per input, a pool path to leave out (the input itself, when it is a pool image
        shown on Errors or Label review) together with the rest of its duplicate group:
        its copies are counted as copies already (``copies_left_out``), and the reviewer
        wants to see how *other* slices that look like it are labelled."""
        queries = embed(features)
        nothing = (np.zeros(0, np.int64), 0)
        dropped = []  # per input: (pool ids left out, how many of them are the input itself)
        for path in list(exclude or []) + [None] * (len(queries) - len(exclude or [])):
            if path is None:
                dropped.append(nothing)
                continue
            itself = self.paths == path
            dropped.append((np.flatnonzero(itself | np.isin(self.groups, self.groups[itself])), int(itself.sum())))
        extra = max((len(ids) for ids, _ in dropped), default=0)
        sims, ids = self._candidates(queries, k + extra)
        sims = np.where(ids < 0, -np.inf, sims)
        out = []
        for row in range(len(queries)):
            drop, itself = dropped[row]
            row_sims = np.where(np.isin(ids[row], drop), -np.inf, sims[row]) if len(drop) else sims[row]
            order = np.argsort(-row_sims)[:k]
            picks = order[np.isfinite(row_sims[order])]
            out.append({
                "copies_left_out": len(drop) - itself,
                # The pool's vectors are stored as float16: an image's similarity to its own
                # stored vector can fall a few 1e-4 short of 1, so the test allows that much.
                "seen_in_training": bool(len(picks) and row_sims[picks[0]] >= self.seen_threshold - FLOAT16_SLACK),
                "neighbours": [{"path": str(self.paths[ids[row, i]]), "label": int(self.labels[ids[row, i]]),
                                "group": int(self.groups[ids[row, i]]), "similarity": round(float(row_sims[i]), 4)}
                               for i in picks],
            })
        return out
