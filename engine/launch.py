"""``python -m engine.launch --workers N [every engine.train option]``: one training
run as N local worker processes under MultiWorkerMirroredStrategy, parsed here and run
by ``engine.training.launch.run_workers``."""

from __future__ import annotations

import sys
from pathlib import Path

from engine.training.cli import build_parser, new_run_from_args
from engine.training.launch import without_workers_flag, run_workers


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    parser.prog = "python -m engine.launch"
    parser.add_argument("--workers", type=int, default=0, help="local worker processes (>= 2)")
    args = parser.parse_args(argv)
    if args.workers < 2:
        print("error: --workers must be at least 2 (use python -m engine.train for one)", file=sys.stderr)
        return 2
    worker_argv = without_workers_flag(argv)
    if args.resume:
        folder = Path(args.resume)
    else:
        config, folder = new_run_from_args(args, parser, worker_argv, lambda c: f"{c.preset}-{args.workers}w")
        if config is None:
            return folder  # the exit code; the reason is printed
        if not args.run_dir:
            worker_argv += ["--run-dir", str(folder)]
    return run_workers(worker_argv, args.workers, folder)


if __name__ == "__main__":
    sys.exit(main())
