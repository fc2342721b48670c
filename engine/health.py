"""``python -m engine.health [--data-dir DIR | --manifest FILE] --out DIR``: the data-health
report of a data folder (default: Br35H) or of an existing manifest, parsed here and
written by ``engine.data.health.write_health``. Model-free."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from engine import layout, runs
from engine.data.health import DEFECTS, measure_missing_quality, write_health
from engine.data.manifest import build_manifest, read_manifest
from engine.data.sources import DataLayoutError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.health",
        description="Data health: quality issues, conflicting labels and duplicates of a data set, "
                    "written as data_issues.csv and data_health.json. No model is used.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data-dir", help="a data folder (the layouts of engine.train); default: Br35H")
    source.add_argument("--manifest", help="a manifest.csv (a run folder's, or checkpoints/manifest.csv)")
    parser.add_argument("--out", required=True, help="folder for data_issues.csv and data_health.json")
    parser.add_argument("--seed", type=int, default=42, help="seed of the split whose leak is reported")
    args = parser.parse_args(argv)
    started = time.time()
    try:
        if args.manifest:
            rows = read_manifest(args.manifest)
            summary = runs.read_json(Path(args.manifest).parent / layout.DATA_SUMMARY, {}) or {}
            measured = measure_missing_quality(rows)
            if measured:
                print(f"measured the quality of {measured} images this manifest did not score")
        else:
            rows, summary = build_manifest(args.data_dir or None, seed=args.seed)
    except (DataLayoutError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    health = write_health(args.out, rows, summary)
    shown = {k: health[k] for k in ("images", "usable", "images_with_a_defect", "issues", "class_balance",
                                    "duplicate_groups", "duplicate_share", "leak_if_random_split")}
    print(json.dumps(shown, indent=2))
    defects = sum(health["issues"][k] for k in DEFECTS)
    print(f"{defects} issue rows that need a look, in {Path(args.out) / layout.DATA_ISSUES} "
          f"({time.time() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
