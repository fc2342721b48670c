"""A model's test and out-of-fold figures restated on the images that have no copy on
the other side of its split under today's duplicate tests (engine.data.dedup, with every
flip), beside those that do. A split dealt before a copy test existed leaks what that test
finds; this shows how much the model's figures owe to it.

    python scripts/leak_free_figures.py [MODEL]     # default: checkpoints (the shipped model)

v9's figures in the README came from v9's checkpoints/ (commit ac8b685: `git worktree add
../v9 ac8b685`, then `python scripts/leak_free_figures.py ../v9/checkpoints`). On v15 it
finds no copy across the split or folds.

Br35H only (the default data set, which the shipped model's manifest names). "copy
across": the image's duplicate group (today's tests) also holds an image the model trained
on, for a test image, or an image of another fold, for an out-of-fold one. Test intervals
resample today's groups (engine.evaluation.intervals).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import layout  # noqa: E402
from engine.data.manifest import build_manifest, read_manifest  # noqa: E402
from engine.data.sources import portable  # noqa: E402
from engine.evaluation.intervals import format_with_ci, metric_intervals  # noqa: E402


def todays_groups() -> dict[str, int]:
    """{portable path: group} of Br35H under today's duplicate tests (a fresh manifest's
    grouping, engine.data.manifest.build_manifest)."""
    rows, _ = build_manifest(None)
    return {portable(row.path): row.group for row in rows if row.usable}


def main() -> None:
    model = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "checkpoints"
    group_of = todays_groups()
    sides: dict[int, set] = {}
    for row in read_manifest(model / layout.MANIFEST):
        if row.usable:
            sides.setdefault(group_of[portable(row.path)], set()).add("test" if row.split == "test" else row.fold)
    threshold = json.loads((model / layout.MODEL_INFO).read_text())["threshold"]
    for split in ("test", "oof"):
        records = list(csv.DictReader(open(model / layout.predictions(split), newline="")))
        labels = np.array([int(r["label"]) for r in records])
        scores = np.array([float(r["probability"]) for r in records])
        predicted = np.array([int(r["predicted"]) for r in records])
        groups = np.array([group_of[portable(r["path"])] for r in records])
        alone = np.array([len(sides[g]) == 1 for g in groups])
        for name, mask in (("all", np.ones_like(alone)), ("no copy across", alone), ("copy across", ~alone)):
            y, right = labels[mask], predicted[mask] == labels[mask]
            if not mask.any():
                print(f"{split:4} {name:15}     0 images: none")
                continue
            line = (f"{split:4} {name:15} {mask.sum():5} images {len(set(groups[mask])):4} groups  "
                    f"accuracy {right.mean():.3f}  sensitivity {right[y == 1].mean():.3f}  "
                    f"specificity {right[y == 0].mean():.3f}")
            if split == "test" and name == "no copy across":
                ci = metric_intervals(y, scores[mask], threshold, groups[mask])
                line += f"  (accuracy {format_with_ci(right.mean(), ci['accuracy'])})"
            print(line)


if __name__ == "__main__":
    main()
