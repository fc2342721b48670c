"""``python -m engine.launch``: start (or resume) any run from its request, and run it
in the foreground; what the dashboard starts in the background.

    python -m engine.launch --config FILE [--run-dir DIR] [options]   # a new run
    python -m engine.launch --workers 2 [every engine.train option]   # N local workers
    python -m engine.launch --folds 5 [options]                       # a cross-validation
    python -m engine.launch --resume DIR [--epochs N]                 # continue one

The request (config.json: the TrainConfig with its ``workers``, plus a ``cv`` section
for a cross-validation) is written into the run folder first; then
``engine.training.launch.launch`` runs exactly what it says."""

from __future__ import annotations

import sys
from pathlib import Path

from engine.request import CrossValidation, RequestError, RunRequest
from engine.training.cli import build_parser, explicit_options, new_run_from_args
from engine.training.launch import launch, launch_request


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    parser.prog = "python -m engine.launch"
    parser.description = ("Start or resume a run from its request: one process, several local "
                          "workers (--workers), or a cross-validation (--folds).")
    parser.add_argument("--folds", type=int, default=0, help="cross-validate on K grouped folds (0 = one run)")
    parser.add_argument("--skip-test", action="store_true",
                        help="with --folds: leave the test split unseen (compare recipes on the folds alone)")
    args = parser.parse_args(argv)
    given = explicit_options(parser, argv)
    try:
        if args.resume:
            return launch(Path(args.resume), resume=True,
                          epochs=args.epochs if "epochs" in given else None)
        stored = RunRequest.read(args.config) if args.config else None
        cv = stored.cv if stored else None
        if "folds" in given or "skip_test" in given:
            folds = args.folds if "folds" in given else (cv.folds if cv else 5)
            cv = CrossValidation(folds, not args.skip_test) if folds >= 2 else None  # --folds 0: one run
        config, folder = new_run_from_args(
            args, parser, argv,
            lambda c: f"cv{cv.folds}-{c.preset}" if cv else (f"{c.preset}-{c.workers}w" if c.workers > 1
                                                             else c.preset))
        if config is None:
            return folder  # the exit code; the reason is printed
        request = RunRequest(config, cv)
        return launch_request(folder, request)
    except RequestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
