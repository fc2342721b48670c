"""``python -m engine.evaluate``: evaluate a model folder on a split or a data folder,
parsed here and run by ``engine.evaluation.evaluate.evaluate``."""

from __future__ import annotations

import argparse
import json
import sys

from engine.evaluation.evaluate import evaluate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.evaluate",
                                     description="Evaluate a trained model and write eval_<split>.json.")
    parser.add_argument("--model", default="", help="model folder (a run folder or checkpoints/); "
                        "default: the shipped model")
    parser.add_argument("--split", choices=["val", "test", "train"], default="test")
    parser.add_argument("--manifest", help="manifest.csv to take the split from (default: the model folder's)")
    parser.add_argument("--data-dir", help="evaluate every image of this folder instead of a split")
    parser.add_argument("--out", help="folder for the outputs (default: the model folder; for the "
                        "shipped model runs/evaluations/shipped, so checkpoints/ is never rewritten)")
    parser.add_argument("--recalibrate", action="store_true",
                        help="refit temperature and threshold on the validation split")
    parser.add_argument("--threshold-method", choices=["youden", "sensitivity"], default="youden")
    parser.add_argument("--target-sensitivity", type=float, default=0.98)
    parser.add_argument("--label-review", metavar="FILE",
                        help="also report the metrics with this review's labels (excluded "
                        "images left out), beside the as-labelled ones")
    args = parser.parse_args(argv)
    from engine.serving.inference import SHIPPED_MODEL_DIR
    try:
        report = evaluate(args.model or SHIPPED_MODEL_DIR, args.split, args.manifest, args.data_dir,
                          args.out, args.recalibrate, args.threshold_method, args.target_sensitivity,
                          label_review=args.label_review)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    shown = {k: report[k] for k in ("split", "count", "threshold", "temperature", "accuracy",
                                     "balanced_accuracy", "sensitivity", "specificity", "precision",
                                     "f1", "roc_auc", "pr_auc", "brier", "ece_before_temperature",
                                     "ece", "confusion_matrix")}
    if "with_reviewed_labels" in report:
        shown["with_reviewed_labels"] = {k: v for k, v in report["with_reviewed_labels"].items()
                                         if k != "confusion_matrix"}
    print(json.dumps(shown, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
