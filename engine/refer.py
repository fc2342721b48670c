"""``python -m engine.refer MODEL (--min-answered-accuracy A | --min-sensitivity S |
--min-coverage C) [--alpha 0.05]``: choose a model's refer band and its per-class
coverage sets on its calibration predictions (out-of-fold or validation), store them
with the model, then report the test split under them (engine.evaluation.selective)."""

from __future__ import annotations

import argparse
import sys

from engine.evaluation.selective import calibrate, sensitivity_guarantee


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.refer",
        description="Refer band (no verdict close to the threshold) and class-conditional conformal "
                    "sets, chosen on the model's out-of-fold or validation predictions and stored in "
                    "its model.json; the test split is scored only afterwards.")
    parser.add_argument("model", help="a run, a cross-validation or checkpoints/")
    rule = parser.add_mutually_exclusive_group(required=True)
    rule.add_argument("--min-answered-accuracy", type=float, help="answer as many images as possible "
                      "while the answered calibration images are at least this accurate (e.g. 0.975)")
    rule.add_argument("--min-sensitivity", type=float, help="likewise for sensitivity on the answered images")
    rule.add_argument("--min-coverage", type=float, help="answer at least this share (e.g. 0.8)")
    rule.add_argument("--guaranteed-sensitivity", type=float, metavar="S",
                      help="instead of a band: a threshold whose sensitivity is at least S with probability "
                      "1 - --delta (learn-then-test), stored beside the model's own threshold")
    parser.add_argument("--delta", type=float, default=0.05, help="risk of --guaranteed-sensitivity failing")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="error level of the per-class coverage sets (coverage 1 - alpha per class)")
    parser.add_argument("--no-export", action="store_true", help="store in model.json only")
    args = parser.parse_args(argv)
    if args.guaranteed_sensitivity is not None:
        try:
            chosen = sensitivity_guarantee(args.model, args.guaranteed_sensitivity, args.delta)
        except (FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"threshold {chosen['threshold']:.4f}: {chosen['rule']}; on {chosen['calibrated_on']}: "
              f"sensitivity {100 * chosen['calibration_sensitivity']:.1f}%")
        if "test" in chosen:
            test = chosen["test"]
            ci = test["sensitivity_ci"]
            print(f"test split ({test['images']} images): sensitivity {100 * test['sensitivity']:.1f}%"
                  + (f" ({100 * ci[0]:.1f}-{100 * ci[1]:.1f})" if ci else "")
                  + f", specificity {100 * test['specificity']:.1f}%")
        return 0
    try:
        result = calibrate(args.model, min_accuracy=args.min_answered_accuracy,
                           min_sensitivity=args.min_sensitivity, min_coverage=args.min_coverage,
                           alpha=args.alpha)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    band = result["band"]
    print(f"refer band: logit margin {band['margin']:.3f} ({band['rule']}); on {band['calibrated_on']}: "
          f"answers {100 * band['coverage']:.1f}%, accuracy {100 * band['accuracy']:.1f}%")
    q = result["conformal"]["q"]
    print(f"conformal sets at alpha {args.alpha}: q(no tumor) {q[0]:.4f}, q(tumor) {q[1]:.4f}")
    if "refer" in result:
        test = result["refer"]
        ci = test["ci"]["accuracy"]
        print(f"test split: answers {test['answered']} of {test['images']} ({100 * test['coverage']:.1f}%), "
              f"answered accuracy {100 * test['accuracy']:.1f}%"
              + (f" ({100 * ci[0]:.1f}-{100 * ci[1]:.1f})" if ci else ""))
        per_class = result["prediction_sets"]["per_class"]
        print("test set coverage: " + ", ".join(f"{k} {100 * v['coverage']:.1f}%" for k, v in per_class.items()))
    if not args.no_export:
        from engine.serving.export import stamp_calibration
        try:
            stamp_calibration(args.model)
            print("the SavedModel now carries the band and the sets")
        except FileNotFoundError as err:
            print(f"note: the SavedModel was not re-exported ({err}); model.json holds them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
