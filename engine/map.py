"""``python -m engine.map MODEL [--out FILE]``: the 2-D map of a model's data set
(map.csv, beside the model by default), which the dashboard's Map page draws.
See engine.evaluation.embedding_map."""

from __future__ import annotations

import argparse
import sys

from engine.evaluation.embedding_map import MAX_FITTED, write_map


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.map", description=__doc__)
    parser.add_argument("model", help="a run, a CV folder or checkpoints/ (needs its neighbours.npz)")
    parser.add_argument("--out", help="where to write map.csv (default: inside MODEL)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-fitted", type=int, default=MAX_FITTED,
                        help="fit the layout on at most this many images (one per duplicate group above it); "
                        "the rest are placed from their nearest fitted images")
    args = parser.parse_args(argv)
    try:
        out, how = write_map(args.model, args.out, args.seed, args.max_fitted)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"map of {how['images']} images written to {out}: {how['method']} on {how['pca_dimensions']} PCA "
          f"dimensions, fitted on {how['fitted']}, placed {how['placed']}, {how['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
