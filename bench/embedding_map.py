"""openTSNE against UMAP for the Map page, on a model's pooled features.

    python bench/embedding_map.py [--model checkpoints] [--seeds 0 1]

Both run on the same PCA-50 reduction of the model's neighbours.npz (the shipped model:
Br35H's 2,556 out-of-fold pool images). For each: wall time, trustworthiness at k=10
(sklearn: how many of a point's 10 nearest neighbours on the map were near it in the
feature space), and the share of each point's 10 nearest map neighbours that have its
label and that share its duplicate group (copies should sit together).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from engine import layout  # noqa: E402


def neighbours_share(points: np.ndarray, values: np.ndarray, k: int = 10) -> float:
    from sklearn.neighbors import NearestNeighbors
    index = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points, return_distance=False)[:, 1:]
    return float((values[index] == values[:, None]).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "checkpoints"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args(argv)
    from sklearn.decomposition import PCA
    from sklearn.manifold import trustworthiness
    with np.load(Path(args.model) / layout.NEIGHBOURS) as data:
        vectors, labels, groups = data["vectors"].astype(np.float32), data["labels"], data["groups"]
    reduced = PCA(n_components=50, random_state=0).fit_transform(vectors)
    print(f"{len(vectors)} images, {vectors.shape[1]} features -> PCA 50; {os.cpu_count()} CPU cores")
    print(f"feature space itself: 10-NN label share {neighbours_share(reduced, labels):.3f}, "
          f"group share {neighbours_share(reduced, groups):.3f}")

    def tsne(seed):
        from openTSNE import TSNE
        return np.asarray(TSNE(perplexity=30, random_state=seed, n_jobs=os.cpu_count()).fit(reduced))

    def umap_layout(seed):
        import umap
        return umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=seed).fit_transform(reduced)

    for name, method in (("openTSNE", tsne), ("UMAP", umap_layout)):
        for seed in args.seeds:
            started = time.perf_counter()
            points = method(seed)
            seconds = time.perf_counter() - started
            print(f"{name} seed {seed}: {seconds:.1f} s, trustworthiness@10 {trustworthiness(reduced, points, n_neighbors=10):.3f}, "
                  f"10-NN label share {neighbours_share(points, labels):.3f}, group share "
                  f"{neighbours_share(points, groups):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
