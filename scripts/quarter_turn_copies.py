"""Does a data set hold copies turned by a quarter (90 or 270 degrees, or transposed)?

The copy test (engine.data.dedup) tries each image as it is, mirrored, upside down and
half turned. The four other turns of the square are not tried, because on Br35H they
find nothing; this script is how that was checked, and how to check your own data:

    python scripts/quarter_turn_copies.py runs/<run>/manifest.csv

For every usable image of the manifest it takes the contrast descriptors (from the
inspection cache when there, else computed), compares each view with every other image
turned a quarter, and prints the pairs at or above the copy test's thresholds, how many
cross the manifest's groups, and how many put a copy on both sides of its split or folds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.data import dedup, inspect_cache  # noqa: E402
from engine.data.imageio import decode_path  # noqa: E402
from engine.data.manifest import read_manifest  # noqa: E402

QUARTER_TURNS = {"90 degrees": (1, False), "270 degrees": (3, False), "transposed": (0, True),
                 "anti-transposed": (2, True)}


def turned(views: np.ndarray, quarters: int, transpose: bool) -> np.ndarray:
    """Views (N, 4096) of the images turned ``quarters`` times 90 degrees after an
    optional transpose."""
    side = dedup.DESCRIPTOR_SIDE
    square = views.reshape(-1, side, side)
    if transpose:
        square = square.transpose(0, 2, 1)
    return np.ascontiguousarray(np.rot90(square, quarters, axes=(1, 2))).reshape(len(views), -1)


def descriptors_of(paths: list[str]) -> np.ndarray:
    path = inspect_cache.default_path()
    cache = inspect_cache.InspectCache(path) if path and path.exists() else None
    found = []
    try:
        for image in paths:
            cached = cache.get(image, inspect_cache.file_stamp(image), True) if cache else None
            if cached and cached[1] is not None:
                found.append(cached[1][0])
            else:
                found.append(dedup.contrast_descriptor(decode_path(image)))
    finally:
        if cache:
            cache.close()
    return np.stack(found).astype(np.float32)


def quarter_turn_pairs(descriptors: np.ndarray, chunk: int = 1024) -> list[tuple[int, int, str]]:
    """Pairs (i < j, turn) whose views correlate at the copy test's thresholds when one
    is turned a quarter. Exact, in blocks of ``chunk`` rows: time grows with n^2 (3,000
    images: a few seconds), memory with chunk x n."""
    hits: dict[tuple[int, int], str] = {}
    for view in range(descriptors.shape[1]):
        matrix = np.asarray(descriptors[:, view], np.float32)
        level = dedup.MIN_CORRELATION + dedup.VIEW_MARGINS[view]
        for name, (quarters, transpose) in QUARTER_TURNS.items():
            other = turned(matrix, quarters, transpose)
            for start in range(0, len(matrix), chunk):
                rows, cols = np.nonzero(matrix[start:start + chunk] @ other.T >= level)
                for i, j in zip((rows + start).tolist(), cols.tolist()):
                    if i != j:
                        hits.setdefault((min(i, j), max(i, j)), name)
    return [(i, j, name) for (i, j), name in sorted(hits.items())]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    args = parser.parse_args(argv)
    rows = [r for r in read_manifest(Path(args.manifest)) if r.usable]
    pairs = quarter_turn_pairs(descriptors_of([r.path for r in rows]))
    across = [(i, j, turn) for i, j, turn in pairs if rows[i].group != rows[j].group]
    sides = [(i, j, turn) for i, j, turn in across
             if (rows[i].split == "test") != (rows[j].split == "test") or rows[i].fold != rows[j].fold]
    print(f"{len(rows)} images: {len(pairs)} pairs are copies a quarter turn apart, {len(across)} of them "
          f"across duplicate groups, {len(sides)} on two sides of the split or folds, "
          f"{sum(rows[i].label != rows[j].label for i, j, _ in pairs)} with different labels")
    for i, j, turn in sides[:50]:
        print(f"  {rows[i].path} ~ {rows[j].path} ({turn})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
