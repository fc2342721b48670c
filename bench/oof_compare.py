"""Out-of-fold predictions of several recipes on the same folds, side by side, and
what averaging them would give.

    python bench/oof_compare.py runs/cv5 runs/cv5-other runs/cv5/keras_plain_oof_predictions.csv
    python bench/oof_compare.py runs/cv5 runs/cv5-seed1 --ensemble
    python bench/oof_compare.py runs/cv5 runs/cv5-seed1 keras.csv --overlap errors.csv

Each argument is an engine.cv folder (its ``oof_predictions.csv``) or a CSV with
``path,label,logit,fold`` columns (what bench/keras_cv.py writes). Every source is
scored as engine.cv scores its own folds (engine.training.cv.fold_summary: each fold at a
threshold and temperature fitted on the other folds) and printed as one table row:
CV accuracy and ROC AUC (mean ± std over folds) and out-of-fold errors. With
``--ensemble`` a last row averages the sources' logits image by image: what a fold
ensemble of those recipes would score, without training anything. Sources must cover
the same images with the same folds; the script stops if they do not.

With ``--overlap FILE`` it also counts the images misclassified by exactly k of the
sources (k = 0..N) and writes one row per image misclassified by any of them
(``path,label,fold,group,wrong_in,mean_probability`` and one 0/1 column per source),
most often wrong first. Images every model gets wrong, whatever its recipe or seed, bound
what any recipe of that family can gain; they are the first ones to show a label
reviewer. If the first source is a CV folder with ``label_issues.csv`` (engine.audit), the
count of those images the audit flags is printed too.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from engine.evaluation.oof import (OOF_FILE, cross_fitted_predictions,  # noqa: E402
                       cross_fitted_probabilities, fold_summary, out_of_fold_errors, read_oof)

AUDIT_FILE = "label_issues.csv"


def read_source(source: str) -> dict[str, tuple[int, float, int]]:
    """path -> (label, logit, fold) from a CV folder or a predictions CSV (paths mapped
    onto this machine's Br35H copy by engine.training.cv.read_oof)."""
    return {r["path"]: (int(r["label"]), float(r["logit"]), int(r["fold"]))
            for r in read_oof(_oof_path(source))}


def _oof_path(source: str) -> Path:
    path = Path(source)
    return path / OOF_FILE if path.is_dir() else path


def summarize(labels, logits, folds_of) -> dict:
    return fold_summary(labels, logits, folds_of, int(folds_of.max()) + 1)


TABLE_HEADER = ("| source | CV accuracy | CV ROC AUC | out-of-fold errors | accuracy per fold |\n"
                "|---|---|---|---|---|")


def row(name: str, summary: dict) -> str:
    """One table row of a fold_summary (std shown as 0 when only one fold was scored)."""
    m, s = summary["mean"], summary["std"]
    per_fold = ", ".join(f"{100 * f['accuracy']:.1f}" for f in summary["folds"])
    return (f"| {name} | {100 * m['accuracy']:.1f} ± {100 * (s['accuracy'] or 0):.1f}% | "
            f"{m['roc_auc']:.3f} ± {(s['roc_auc'] or 0):.3f} | {out_of_fold_errors(summary)} | {per_fold} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", help="engine.cv folders or out-of-fold CSVs")
    parser.add_argument("--ensemble", action="store_true",
                        help="add a row for the mean logit of all sources")
    parser.add_argument("--overlap", metavar="FILE",
                        help="count images misclassified by k of the sources; write them to FILE")
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
    print(TABLE_HEADER)
    summaries = [summarize(labels, values, folds_of) for values in logits]
    for source, summary in zip(args.sources, summaries):
        print(row(source, summary))
    if args.ensemble and len(logits) > 1:
        print(row(f"mean logit of the {len(logits)} above", summarize(labels, np.mean(logits, axis=0), folds_of)))
    if args.overlap:
        wrong = np.array([cross_fitted_predictions(summary, values, folds_of) != labels
                          for summary, values in zip(summaries, logits)])
        probabilities = np.mean([cross_fitted_probabilities(summary, values, folds_of)
                                 for summary, values in zip(summaries, logits)], axis=0)
        report_overlap(args.sources, paths, labels, folds_of, wrong, probabilities, Path(args.overlap))
    return 0


def report_overlap(sources, paths, labels, folds_of, wrong, probabilities, out: Path) -> None:
    """Print how many images k of the sources misclassify, and write those images."""
    wrong_in = wrong.sum(axis=0)
    counts = [int((wrong_in == k).sum()) for k in range(len(sources) + 1)]
    print(f"images misclassified by exactly k of the {len(sources)} sources, k = 0..{len(sources)}: {counts}")
    every = wrong_in == len(sources)
    print(f"misclassified by all {len(sources)}: {int(every.sum())} "
          f"({int(labels[every].sum())} labelled tumor, {int((1 - labels[every]).sum())} no tumor)")
    groups, flagged = _first_source_audit(sources[0])
    every_groups = {groups.get(p, "") for p in np.array(paths)[every]} - {""}
    if every_groups:
        print(f"they fall in {len(every_groups)} duplicate groups")
    if flagged is not None:
        print(f"of those, flagged by the label audit of {sources[0]}: "
              f"{sum(1 for p in np.array(paths)[every] if p in flagged)}")
    order = sorted(np.flatnonzero(wrong_in > 0), key=lambda i: (-wrong_in[i], paths[i]))
    tmp = Path(f"{out}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "fold", "group", "wrong_in", "mean_probability",
                         *[f"wrong_{k}" for k in range(len(sources))]])
        for i in order:
            writer.writerow([paths[i], int(labels[i]), int(folds_of[i]), groups.get(paths[i], ""),
                             int(wrong_in[i]), f"{probabilities[i]:.4f}", *wrong[:, i].astype(int)])
    os.replace(tmp, out)
    print(f"wrote {len(order)} rows to {out}")


def _first_source_audit(source: str) -> tuple[dict, set | None]:
    """Duplicate group of each image (if the first source records it) and the paths its
    label audit flagged (None when there is no audit beside it)."""
    groups = {r["path"]: r.get("group", "") for r in read_oof(_oof_path(source))}
    audit = Path(source) / AUDIT_FILE
    if not audit.is_file():
        return groups, None
    return groups, {r["path"] for r in read_oof(audit) if r.get("flagged") == "True"}


if __name__ == "__main__":
    sys.exit(main())
