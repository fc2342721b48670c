"""``python -m engine.cv``: grouped k-fold cross-validation, parsed here and run by
``engine.training.cv.cross_validate``."""

from __future__ import annotations

import sys
from pathlib import Path

from engine import runs
from engine.request import CrossValidation, RequestError, RunRequest
from engine.training.cli import build_parser, explicit_options, new_run_from_args
from engine.training.cv import FoldsNotReady, collect, cross_validate, train_one_fold
from engine.training.loop import StopRequested


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.prog = "python -m engine.cv"
    parser.description = ("Grouped, stratified k-fold cross-validation: one run folder per "
                          "fold, out-of-fold predictions, mean ± std, the fold ensemble on test.")
    parser.add_argument("--folds", type=int, default=5, help="number of folds (K)")
    parser.add_argument("--skip-test", action="store_true",
                        help="do not evaluate the ensemble on the test split (compare recipes "
                        "on the folds alone; look at test once, for the chosen recipe)")
    parser.add_argument("--fold", type=int, default=None, metavar="K",
                        help="train only this fold (0-based) into RUN_DIR/fold_K/: one job of a "
                        "cluster array; needs --run-dir, then --collect RUN_DIR once all are done")
    parser.add_argument("--collect", metavar="DIR",
                        help="summarise a CV whose folds were trained with --fold (out-of-fold "
                        "predictions, cv_summary.json, the ensemble); fails if a fold is missing")
    args = parser.parse_args(argv)
    given = explicit_options(parser, argv)
    if args.config and not args.resume:
        # A CV folder's config.json is the whole request: its "cv" section sets the folds
        # and the test evaluation unless the command line says otherwise.
        try:
            stored = RunRequest.read(args.config)
        except RequestError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if stored.is_cv:
            if "folds" not in given:
                args.folds = stored.cv.folds
            if "skip_test" not in given:
                args.skip_test = not stored.cv.evaluate_test
    if args.collect:
        try:
            summary = collect(args.collect)
        except FoldsNotReady as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"cv folder: {args.collect}  collected {summary['folds_count']} folds: accuracy "
              f"{summary['mean']['accuracy']:.4f} ± {summary['std']['accuracy']:.4f}")
        return 0
    stop = StopRequested().install()
    if args.fold is not None:
        if not args.run_dir:
            print("error: --fold needs --run-dir (the CV folder every fold job shares)", file=sys.stderr)
            return 2
        config, folder = new_run_from_args(args, parser, argv, lambda c: "unused")
        if config is None:
            return folder
        try:
            status = train_one_fold(config, folder, args.folds, args.fold, stop=stop,
                                    evaluate_test=not args.skip_test)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"fold {args.fold} of {folder}: {status['state']}")
        return 0 if status["state"] in (runs.FINISHED, runs.STOPPED) else 1
    try:
        if args.resume:
            folder = Path(args.resume)
            request = RunRequest.read(folder)
            if not request.is_cv:
                print(f"error: {folder} is not a cross-validation folder", file=sys.stderr)
                return 2
        else:
            if args.folds < 2:
                print("error: --folds must be at least 2", file=sys.stderr)
                return 2
            config, folder = new_run_from_args(args, parser, argv, lambda c: f"cv{args.folds}-{c.preset}")
            if config is None:
                return folder  # the exit code; the reason is printed
            request = RunRequest(config, CrossValidation(args.folds, not args.skip_test))
            request.write(folder)
    except RequestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    status = cross_validate(request.config, folder, request.cv.folds, stop=stop,
                            evaluate_test=request.cv.evaluate_test)
    print(f"cv folder: {folder}  status: {status['state']}"
          + (f"  error: {status.get('error')}" if status.get("error") else ""))
    return 0 if status["state"] in (runs.FINISHED, runs.STOPPED) else 1


if __name__ == "__main__":
    sys.exit(main())
