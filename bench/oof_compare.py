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

from engine import layout  # noqa: E402
from engine.evaluation.oof import fold_summary, out_of_fold_errors, read_oof  # noqa: E402
from engine.evaluation.oof_compare import NotComparable, compare, read_source  # noqa: E402

AUDIT_FILE = layout.LABEL_ISSUES


def _oof_path(source: str) -> Path:
    path = Path(source)
    return path / layout.OOF_PREDICTIONS if path.is_dir() else path


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
    tables = {source: read_source(source) for source in args.sources}
    try:
        comparison = compare(tables)
    except NotComparable as err:
        raise SystemExit(str(err)) from None
    print(f"{len(comparison.paths)} out-of-fold images, {int(comparison.folds.max()) + 1} folds")
    print(TABLE_HEADER)
    for source, summary in zip(args.sources, comparison.summaries):
        print(row(source, summary))
    for k in range(1, len(args.sources)):
        paired = comparison.paired(k)
        text = ", ".join(f"{key} {100 * paired[key]['difference']:+.1f} points"
                         + (f" ({100 * paired[key]['ci'][0]:+.1f} to {100 * paired[key]['ci'][1]:+.1f})"
                            if paired[key]["ci"] else "") for key in ("accuracy", "roc_auc"))
        print(f"{args.sources[k]} minus {args.sources[0]}, paired, 95% intervals over {paired['resampled']}: "
              f"{text}; DeLong p(AUC) {paired['delong']['p_value']:.3g}")
    if args.ensemble and len(tables) > 1:
        logits = np.mean([[t[p]["logit"] for p in comparison.paths] for t in tables.values()], axis=0)
        print(row(f"mean logit of the {len(tables)} above",
                  summarize(comparison.labels, logits, comparison.folds)))
    if args.overlap:
        report_overlap(args.sources, comparison, Path(args.overlap))
    return 0


def report_overlap(sources, comparison, out: Path) -> None:
    """Print how many images k of the sources misclassify, and write those images."""
    paths, labels = np.array(comparison.paths), comparison.labels
    every = comparison.wrong_in == len(sources)
    print(f"images misclassified by exactly k of the {len(sources)} sources, k = 0..{len(sources)}: "
          f"{comparison.misclassified_by()}")
    print(f"misclassified by all {len(sources)}: {int(every.sum())} "
          f"({int(labels[every].sum())} labelled tumor, {int((1 - labels[every]).sum())} no tumor)")
    groups, flagged = _first_source_audit(sources[0])
    every_groups = {groups.get(p, "") for p in paths[every]} - {""}
    if every_groups:
        print(f"they fall in {len(every_groups)} duplicate groups")
    if flagged is not None:
        print(f"of those, flagged by the label audit of {sources[0]}: "
              f"{sum(1 for p in paths[every] if p in flagged)}")
    rows = comparison.error_rows()
    tmp = Path(f"{out}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "fold", "group", "wrong_in", "mean_probability",
                         *[f"wrong_{k}" for k in range(len(sources))]])
        for r in rows:
            writer.writerow([r["path"], r["label"], r["fold"], groups.get(r["path"], ""), r["wrong_in"],
                             f"{r['mean_probability']:.4f}", *[int(r[f"wrong in {s}"]) for s in sources]])
    os.replace(tmp, out)
    print(f"wrote {len(rows)} rows to {out}")


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
