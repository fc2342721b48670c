"""``python -m engine.train``: one training run (or ``--resume DIR``), parsed here and
run by ``engine.training.loop.train_and_evaluate``."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from engine import runs
from engine.config import TrainConfig
from engine.training.cli import build_parser, explicit_options, new_run_from_args
from engine.training.loop import StopRequested, train_and_evaluate


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stop = StopRequested().install()
    import faulthandler
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1 <pid>: stacks to stderr
    if args.resume:
        folder = Path(args.resume)
        stored = runs.read_config_file(folder).get("config")
        if not stored:
            print(f"error: {folder} has no config.json to resume from", file=sys.stderr)
            return 2
        config = TrainConfig.from_dict(stored)
        given = explicit_options(parser, argv)
        if "devices" in given:
            config = config.replace(devices=args.devices)
        if "epochs" in given:
            # Continue a run for more epochs: the schedule is stretched over the new
            # total, so a cosine learning rate rises again to where the longer run
            # would be at this step (a warm restart), then decays to zero.
            done = len(runs.read_metrics(folder, "epoch"))
            if args.epochs < done:
                print(f"error: {folder} has already trained {done} epochs; --epochs must be at least that",
                      file=sys.stderr)
                return 2
            config = config.replace(epochs=args.epochs)
        resume = True
    else:
        config, folder = new_run_from_args(args, parser, argv, lambda c: c.preset)
        if config is None:
            return folder  # the exit code; the reason is printed
        resume = False
    status = train_and_evaluate(config, folder, resume=resume, stop=stop)
    print(f"run folder: {folder}  status: {status['state']}"
          + (f"  error: {status.get('error')}" if status.get("error") else ""))
    return 0 if status["state"] in (runs.FINISHED, runs.STOPPED) else 1


if __name__ == "__main__":
    sys.exit(main())
