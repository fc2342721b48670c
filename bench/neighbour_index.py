"""Nearest training images at scale: exact NumPy product against the HNSW graph.

    python bench/neighbour_index.py [--sizes 10000 30000 100000 300000] [--queries 300]

Pools are grown from the shipped model's real pool vectors (checkpoints/neighbours.npz,
2,554 images, 1,280 values each): every synthetic image is a real vector plus Gaussian
noise (so clouds and near-copies look as they do in a real pool), renormalised. For each
size: the exact lookup's time per query (one query at a time, as Predict asks), the
graph's build time, its time per query, its recall@5 against the exact search on fresh
queries (perturbed real vectors), and the memory each holds. These figures choose
engine.serving.neighbours.APPROXIMATE_FROM.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from engine.serving import neighbours  # noqa: E402
from engine.serving.neighbours import NeighbourIndex  # noqa: E402


def grown_pool(base: np.ndarray, size: int, rng: np.random.Generator, noise: float = 0.02) -> np.ndarray:
    picks = rng.integers(0, len(base), size)
    pool = np.empty((size, base.shape[1]), np.float32)
    for start in range(0, size, 50_000):
        block = base[picks[start:start + 50_000]]
        block = block + noise * rng.standard_normal(block.shape, dtype=np.float32)
        pool[start:start + 50_000] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return pool


def median_ms(function, queries: np.ndarray) -> float:
    times = []
    for query in queries:
        start = time.perf_counter()
        function(query[None])
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000, 300_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--depths", type=int, nargs="+", default=[64, 128, 256], help="efSearch values to try")
    args = parser.parse_args()
    base = NeighbourIndex.load(ROOT / "checkpoints").vectors.astype(np.float32)
    rng = np.random.default_rng(0)
    print(f"graph: HNSW, {neighbours.GRAPH_LINKS} links, float16 vectors; {args.queries} queries, recall@{args.k} "
          f"at efSearch {', '.join(map(str, args.depths))} (engine: {neighbours.GRAPH_SEARCH_DEPTH})")
    print("| pool images | exact ms/query | graph build s | graph ms/query | recall@5 | exact memory GB | graph memory GB |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        pool = grown_pool(base, size, rng)
        queries = grown_pool(base, args.queries, rng)
        exact_ms = median_ms(lambda q: np.argpartition(-(q @ pool.T), args.k, axis=1)[:, :args.k], queries[:100])
        exact = np.argsort(-(queries @ pool.T), axis=1)[:, :args.k]
        start = time.perf_counter()
        graph = neighbours.build_graph(pool)
        build_s = time.perf_counter() - start
        graph_gb = len(neighbours.faiss.serialize_index(graph)) / 1e9
        timings, recalls = [], []
        for depth in args.depths:
            graph.hnsw.efSearch = depth
            timings.append(median_ms(lambda q: graph.search(q, args.k), queries[:100]))
            _, found = graph.search(queries, args.k)
            recalls.append(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(exact, found)]))
        print(f"| {size:,} | {exact_ms:.1f} | {build_s:.1f} | {' / '.join(f'{t:.2f}' for t in timings)} | "
              f"{' / '.join(f'{r:.4f}' for r in recalls)} | {pool.nbytes / 1e9:.2f} | {graph_gb:.2f} |", flush=True)
        del pool, graph


if __name__ == "__main__":
    main()
