"""Nearest training images through the approximate index (engine.serving.neighbours): on
the shipped model's real pool vectors the HNSW graph finds what the exact product finds,
and a pool from APPROXIMATE_FROM images on is written with its graph and read back."""

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import ROOT
from engine import layout
from engine.serving import neighbours
from engine.serving.neighbours import NeighbourIndex


@pytest.fixture(scope="module")
def shipped():
    index = NeighbourIndex.load(ROOT / "checkpoints")
    assert index is not None and not index.approximate  # 2,554 images: exact
    return index


def _with_graph(index: NeighbourIndex) -> NeighbourIndex:
    return NeighbourIndex(**{**index.__dict__, "vectors": index.vectors.astype(np.float16),
                             "graph": neighbours.build_graph(index.vectors)})


def _as_features(vectors):
    return np.asarray(vectors, np.float32)[:, None, :]


def test_the_graph_finds_the_exact_nearest_images_of_the_shipped_pool(shipped):
    """Pool images (themselves and their groups left out, as Errors and Label review ask)
    and unseen perturbed vectors: recall@5 of the graph against the exact search >= 0.98,
    the same "seen in training" verdicts, the same similarities."""
    approximate = _with_graph(shipped)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(shipped.vectors), 150, replace=False)
    noisy = shipped.vectors[picks] + 0.02 * rng.standard_normal(shipped.vectors[picks].shape).astype(np.float32)
    for queries, exclude in ((shipped.vectors[picks], [shipped.paths[i] for i in picks]), (noisy, None)):
        exact = shipped.query(_as_features(queries), 5, exclude=exclude)
        found = approximate.query(_as_features(queries), 5, exclude=exclude)
        hits = sum(len({n["path"] for n in a["neighbours"]} & {n["path"] for n in b["neighbours"]})
                   for a, b in zip(exact, found))
        assert hits / (5 * len(queries)) >= 0.98
        assert [a["seen_in_training"] for a in exact] == [b["seen_in_training"] for b in found]
        assert [a["copies_left_out"] for a in exact] == [b["copies_left_out"] for b in found]
        for a, b in zip(exact, found):
            assert abs(a["neighbours"][0]["similarity"] - b["neighbours"][0]["similarity"]) < 2e-3
    # Left-out images stay out on the graph path too.
    own = shipped.paths[picks[0]]
    result = approximate.query(_as_features(shipped.vectors[picks[:1]]), 5, exclude=[own])[0]
    assert own not in {n["path"] for n in result["neighbours"]}
    assert shipped.groups[picks[0]] not in {n["group"] for n in result["neighbours"]}


def test_the_threshold_chosen_on_the_graph_matches_the_exact_one(shipped):
    """Each image's 32 nearest on the graph stand in for the pool: a few images whose
    closest copy ranks lower (large groups of look-alike slices) drop out of the pairs."""
    exact = neighbours.choose_seen_threshold(shipped.vectors, shipped.groups)
    graph = neighbours.build_graph(shipped.vectors)
    approximate = neighbours.choose_seen_threshold(shipped.vectors, shipped.groups, graph=graph)
    assert abs(exact["seen_threshold"] - approximate["seen_threshold"]) < 0.01
    assert 0.99 * exact["pairs"] <= approximate["pairs"] <= exact["pairs"]


def test_a_large_pool_is_written_with_its_graph_and_a_small_one_without(tmp_path, monkeypatch, shipped):
    """With APPROXIMATE_FROM lowered below the pool, build writes neighbours.faiss and
    load answers through it; rebuilt small, the stale graph is removed; a graph that no
    longer matches its vectors is ignored (exact lookup)."""
    count = 600
    rows = [SimpleNamespace(path=str(p), group=int(g), fold=int(f), label=int(l), original_label=-1)
            for p, g, f, l in zip(shipped.paths[:count], shipped.groups[:count], shipped.folds[:count],
                                  shipped.labels[:count])]
    features = _as_features(shipped.vectors[:count])
    monkeypatch.setattr(neighbours, "APPROXIMATE_FROM", 500)
    chosen = neighbours.build(tmp_path, rows, features)
    assert chosen["lookup"].startswith("approximate") and (tmp_path / layout.NEIGHBOURS_GRAPH).exists()
    loaded = NeighbourIndex.load(tmp_path)
    assert loaded.approximate and loaded.graph.ntotal == count
    first = loaded.query(features[:1], 3)[0]
    nearest = first["neighbours"][0]
    # Itself, or an exact copy of it (similarity 1 either way).
    assert (nearest["path"] == rows[0].path or nearest["group"] == rows[0].group) and nearest["similarity"] > 0.999
    assert first["seen_in_training"]

    neighbours.build(tmp_path, rows[:400], features[:400])
    assert not (tmp_path / layout.NEIGHBOURS_GRAPH).exists() and not NeighbourIndex.load(tmp_path).approximate

    neighbours.build(tmp_path, rows, features)
    neighbours.build(tmp_path, rows[:550], features[:550])  # a graph of 550, now replaced ...
    (tmp_path / layout.NEIGHBOURS_GRAPH).write_bytes(
        neighbours.faiss.serialize_index(neighbours.build_graph(loaded.vectors[:520])).tobytes())  # ... by a stale one
    stale = NeighbourIndex.load(tmp_path)
    assert not stale.approximate and stale.vectors.dtype == np.float32
