"""``python -m engine.train``: one training run (or ``--resume DIR``), parsed here and
run by ``engine.training.loop.train_and_evaluate``."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from pathlib import Path

from engine import runs
from engine.request import RequestError, RunRequest
from engine.training.cli import build_parser, explicit_options, new_run_from_args
from engine.training.launch import extend_request, launch, launch_request
from engine.training.loop import StopRequested, train_and_evaluate


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    stop = StopRequested().install()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1 <pid>: stacks to stderr
    given = explicit_options(parser, argv)
    standalone = not os.environ.get("TF_CONFIG")  # not one of a launcher's (or a cluster's) workers
    if args.resume:
        folder = Path(args.resume)
        try:
            request = RunRequest.read(folder)
            if "epochs" in given and standalone:
                extend_request(folder, args.epochs)  # the workers of a launcher read it extended
            if standalone and request.workers > 1:
                return launch(folder, resume=True)  # as many workers as it started with
        except RequestError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        config = RunRequest.read(folder).config
        if "devices" in given:
            config = config.replace(devices=args.devices)
        resume = True
    else:
        config, folder = new_run_from_args(args, parser, argv, lambda c: c.preset)
        if config is None:
            return folder  # the exit code; the reason is printed
        if standalone and config.workers > 1:
            # A request for several workers: the one launcher builds the manifest once
            # and starts them (python -m engine.launch does the same).
            return launch_request(folder, RunRequest(config))
        resume = False
    status = train_and_evaluate(config, folder, resume=resume, stop=stop)
    print(f"run folder: {folder}  status: {status['state']}"
          + (f"  error: {status.get('error')}" if status.get("error") else ""))
    return 0 if status["state"] in (runs.FINISHED, runs.STOPPED) else 1


if __name__ == "__main__":
    sys.exit(main())
