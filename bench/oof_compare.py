"""Out-of-fold predictions of several recipes on the same folds, side by side, and
what averaging them would give.

    python bench/oof_compare.py runs/cv5 runs/cv5-other runs/cv5/keras_plain_oof_predictions.csv
    python bench/oof_compare.py runs/cv5 runs/cv5-seed1 --ensemble

Each argument is an engine.cv folder (its ``oof_predictions.csv``) or a CSV with
``path,label,logit,fold`` columns (what bench/keras_cv.py writes). Every source is
scored as engine.cv scores its own folds (engine.cv.fold_summary: each fold at a
threshold and temperature fitted on the other folds) and printed as one table row:
CV accuracy and ROC AUC (mean ± std over folds) and out-of-fold errors. With
``--ensemble`` a last row averages the sources' logits image by image: what a fold
ensemble of those recipes would score, without training anything. Sources must cover
the same images with the same folds; the script stops if they do not.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from engine.cv import OOF_FILE, fold_summary, out_of_fold_errors, read_oof  # noqa: E402


def read_source(source: str) -> dict[str, tuple[int, float, int]]:
    """path -> (label, logit, fold) from a CV folder or a predictions CSV (paths mapped
    onto this machine's Br35H copy by engine.cv.read_oof)."""
    path = Path(source)
    if path.is_dir():
        path = path / OOF_FILE
    return {r["path"]: (int(r["label"]), float(r["logit"]), int(r["fold"])) for r in read_oof(path)}


def row(name: str, labels, logits, folds_of) -> str:
    summary = fold_summary(labels, logits, folds_of, int(folds_of.max()) + 1)
    m, s = summary["mean"], summary["std"]
    per_fold = ", ".join(f"{100 * f['accuracy']:.1f}" for f in summary["folds"])
    return (f"| {name} | {100 * m['accuracy']:.1f} ± {100 * s['accuracy']:.1f}% | "
            f"{m['roc_auc']:.3f} ± {s['roc_auc']:.3f} | {out_of_fold_errors(summary)} | {per_fold} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", help="engine.cv folders or out-of-fold CSVs")
    parser.add_argument("--ensemble", action="store_true",
                        help="add a row for the mean logit of all sources")
    args = parser.parse_args(argv)
    tables = [read_source(s) for s in args.sources]
    paths = sorted(tables[0])
    for source, table in zip(args.sources, tables):
        if sorted(table) != paths or any(table[p][2] != tables[0][p][2] for p in paths):
            raise SystemExit(f"{source} does not cover the same images with the same folds "
                             f"as {args.sources[0]}")
    labels = np.array([tables[0][p][0] for p in paths])
    folds_of = np.array([tables[0][p][2] for p in paths])
    logits = [np.array([t[p][1] for p in paths]) for t in tables]
    print(f"{len(paths)} out-of-fold images, {int(folds_of.max()) + 1} folds")
    print("| source | CV accuracy | CV ROC AUC | out-of-fold errors | accuracy per fold |")
    print("|---|---|---|---|---|")
    for source, values in zip(args.sources, logits):
        print(row(source, labels, values, folds_of))
    if args.ensemble and len(logits) > 1:
        print(row(f"mean logit of the {len(logits)} above", labels, np.mean(logits, axis=0), folds_of))
    return 0


if __name__ == "__main__":
    sys.exit(main())
