"""What a label review buys, measured end to end on Br35H's cross-validation pool.

    python bench/review_loop.py [--image-size 96] [--epochs 10] [--folds 5] [--flip 0.1]

Three cross-validations on the same folds (folds are stratified by the folder's labels,
so a review never moves an image), each scored out-of-fold against the folder's own
labels (the truth here):

  (a) 10% of the pool's labels flipped on purpose (seeded), trained as they are;
  (b) the label audit of (a)'s out-of-fold predictions (confident learning, against the
      flipped labels a user would have), then a simulated reviewer who accepts the
      suggested label for the top 2 x (number flipped) images, then the CV again;
  (c) the original labels.

The flips and the review reach training as label-review files (engine.evaluation.review),
exactly as a reviewer's decisions do. Prints the three out-of-fold accuracies (mean ± std
over folds), their error counts, how many flips the review fixed and how many correct
labels it broke. Sized for 2 CPU cores: 96 px and 10 epochs of the shipped recipe (the
shipped model trains 18 epochs at 128 px); about 12 minutes per CV there.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import layout  # noqa: E402
from engine.data.manifest import build_manifest  # noqa: E402
from engine.evaluation.audit import label_issue_table  # noqa: E402
from engine.evaluation.oof import read_oof  # noqa: E402
from engine.evaluation.review import REVIEW_FIELDS  # noqa: E402


def write_review(path: Path, pool, labels: dict[str, int], note: str) -> int:
    """A review file that relabels every pool image whose label in ``labels`` differs
    from the folder's; returns how many."""
    count = 0
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=REVIEW_FIELDS)
        writer.writeheader()
        for row in pool:
            if labels[row.path] != row.label:
                count += 1
                writer.writerow({"path": row.path, "group": row.group, "original_label": row.label,
                                 "decision": "relabel", "reviewed_label": labels[row.path],
                                 "note": note, "reviewer": "bench/review_loop.py",
                                 "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return count


def run_cv(folder: Path, args, review: Path | None) -> dict:
    summary_path = folder / layout.CV_SUMMARY
    if not summary_path.exists():  # rerunning the script reuses finished CVs
        command = [sys.executable, "-m", "engine.cv", "--folds", str(args.folds), "--shipped-recipe",
                   "--image-size", str(args.image_size), "--epochs", str(args.epochs), "--skip-test",
                   "--run-dir", str(folder)]
        if review is not None:
            command += ["--label-review", str(review)]
        started = time.time()
        subprocess.run(command, cwd=ROOT, check=True)
        print(f"  {folder.name}: {time.time() - started:.0f} s", flush=True)
    return json.loads(summary_path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--flip", type=float, default=0.1, help="share of the pool's labels flipped")
    parser.add_argument("--seed", type=int, default=0, help="seed of the flips")
    parser.add_argument("--out", default=str(ROOT / "runs" / "review_loop"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, _ = build_manifest(None)  # the CVs rebuild the same manifest (same seed)
    pool = [r for r in rows if r.usable and r.split != "test"]
    rng = np.random.default_rng(args.seed)
    flipped = set(rng.choice(len(pool), size=int(round(args.flip * len(pool))), replace=False).tolist())
    noisy = {r.path: (1 - r.label if i in flipped else r.label) for i, r in enumerate(pool)}
    write_review(out / "flips.csv", pool, noisy, "flipped on purpose")
    print(f"{len(pool)} pool images, {len(flipped)} labels flipped (seed {args.seed})", flush=True)

    noisy_cv = run_cv(out / "a_flipped", args, out / "flips.csv")
    oof = {r["path"]: float(r["probability"]) for r in read_oof(out / "a_flipped" / layout.OOF_PREDICTIONS)}
    paths = [r.path for r in pool]
    table = label_issue_table([noisy[p] for p in paths], [oof[p] for p in paths])
    budget = 2 * len(flipped)
    reviewed_paths = [paths[i] for i in np.argsort(-table["score"], kind="stable")[:budget]]
    suggestion = dict(zip(paths, table["suggested_label"].tolist()))
    reviewed = dict(noisy)
    for path in reviewed_paths:
        reviewed[path] = int(suggestion[path])  # the reviewer accepts the suggested label
    truth = {r.path: r.label for r in pool}
    flipped_paths = {paths[i] for i in flipped}
    fixed = sum(reviewed[p] == truth[p] for p in flipped_paths)
    broken = sum(reviewed[p] != truth[p] for p in paths if p not in flipped_paths)
    in_budget = len(flipped_paths & set(reviewed_paths))
    write_review(out / "reviewed.csv", pool, reviewed, "flips after a simulated review of the audit's top")
    reviewed_cv = run_cv(out / "b_reviewed", args, out / "reviewed.csv")
    clean_cv = run_cv(out / "c_original", args, None)

    def line(name, summary, wrong):
        m, s = summary["mean"], summary["std"]
        from engine.evaluation.oof import out_of_fold_errors
        return (f"| {name} | {100 * m['accuracy']:.1f} ± {100 * s['accuracy']:.1f}% | "
                f"{m['roc_auc']:.3f} ± {s['roc_auc']:.3f} | {out_of_fold_errors(summary)} | {wrong} |")
    print(f"\nreview loop: {args.folds} folds, {args.image_size} px, {args.epochs} epochs, "
          f"{len(flipped)} of {len(pool)} labels flipped, review budget {budget} images")
    print("| case | out-of-fold accuracy (true labels) | ROC AUC | out-of-fold errors | wrong labels trained on |")
    print("|---|---|---|---|---|")
    print(line("(a) flipped labels", noisy_cv, len(flipped)))
    print(line("(b) audit + review of the top 2x", reviewed_cv, len(flipped) - fixed + broken))
    print(line("(c) original labels", clean_cv, 0))
    print(f"review: {in_budget} of {len(flipped)} flips were in the reviewed top {budget}; "
          f"fixed {fixed}, broke {broken} correct labels")


if __name__ == "__main__":
    main()
