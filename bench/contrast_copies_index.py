"""Does the indexed contrast-copy search find what the exact one finds?

    python bench/contrast_copies_index.py [--images 3000] [--neighbours 48]

On Br35H (all 3,000 slices by default): the contrast-invariant descriptors of every
image, then engine.data.dedup.correlated_pairs (every pair, exact) against
indexed_correlated_pairs (faiss HNSW on a 256-value random projection, candidates
verified exactly). Prints both pair counts, the recall of the indexed search, the pairs
it found that the exact one did not (none can be: every candidate is verified), the
groups each yields, and the time of each.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from engine.data.dedup import ANN_NEIGHBOURS, contrast_descriptor, correlated_pairs, indexed_correlated_pairs  # noqa: E402
from engine.data.imageio import decode_path  # noqa: E402
from engine.data.sources import discover  # noqa: E402


def descriptors_of(paths: list[str]) -> np.ndarray:
    with ThreadPoolExecutor(4) as pool:
        return np.stack(list(pool.map(lambda p: contrast_descriptor(decode_path(p)), paths)))


def groups(count: int, pairs) -> int:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    pairs = np.array(pairs, np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(count, count))
    return int(connected_components(graph, directed=False)[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--neighbours", type=int, default=ANN_NEIGHBOURS)
    args = parser.parse_args(argv)
    images, _ = discover(None)
    paths = sorted(str(i.path) for i in images)[: args.images]
    started = time.perf_counter()
    descriptors = descriptors_of(paths)
    print(f"{len(paths)} Br35H images: descriptors in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    exact = set(correlated_pairs(descriptors))
    exact_seconds = time.perf_counter() - started
    started = time.perf_counter()
    indexed = set(indexed_correlated_pairs(descriptors, neighbours=args.neighbours))
    indexed_seconds = time.perf_counter() - started
    recall = len(exact & indexed) / max(len(exact), 1)
    print(f"exact: {len(exact)} pairs, {groups(len(paths), sorted(exact))} groups, {exact_seconds:.1f} s")
    print(f"indexed (k={args.neighbours}): {len(indexed)} pairs, {groups(len(paths), sorted(indexed))} groups, "
          f"{indexed_seconds:.1f} s; recall {recall:.4f}, extra pairs {len(indexed - exact)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
