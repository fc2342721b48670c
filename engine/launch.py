"""``python -m engine.launch --workers N [every engine.train option]``: one training
run as N local worker processes under MultiWorkerMirroredStrategy.

Each worker is ``python -m engine.train`` with a ``TF_CONFIG`` that names all N on free
loopback ports; worker 0 is the chief and the only one writing the run folder. This is
how the multi-worker path is tested on one machine, and how several processes share a
big host. On several hosts, start ``python -m engine.train`` on each with its own
TF_CONFIG instead (see the README).

Stopping: SIGTERM or SIGINT to this process (or to its process group, which is what
the dashboard's Stop does) is passed to every worker; the workers agree on the step at
which to stop and the chief saves a checkpoint. A worker that dies makes the others
fail at their next collective (within engine.distribute.COLLECTIVE_TIMEOUT_SECONDS);
this launcher then ends the rest and records the run as failed if the chief could not.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from engine import runs
from engine.cli import build_parser, new_run_from_args

GRACE_AFTER_FAILURE = 180.0  # seconds the others get to notice a dead worker and exit


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def worker_env(ports: list[int], index: int, base: dict | None = None) -> dict:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    env = dict(base if base is not None else os.environ)
    env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    return env


def _without_workers(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    parser.prog = "python -m engine.launch"
    parser.add_argument("--workers", type=int, default=0, help="local worker processes (>= 2)")
    args = parser.parse_args(argv)
    if args.workers < 2:
        print("error: --workers must be at least 2 (use python -m engine.train for one)", file=sys.stderr)
        return 2
    worker_argv = _without_workers(argv)
    if args.resume:
        folder = Path(args.resume)
    else:
        config, folder = new_run_from_args(args, parser, worker_argv, lambda c: f"{c.preset}-{args.workers}w")
        if config is None:
            return folder  # the exit code; the reason is printed
        if not args.run_dir:
            worker_argv += ["--run-dir", str(folder)]
    ports = free_ports(args.workers)
    processes = [subprocess.Popen([sys.executable, "-m", "engine.train", *worker_argv],
                                  env=worker_env(ports, index),
                                  stdout=None if index == 0 else subprocess.DEVNULL)
                 for index in range(args.workers)]

    def forward(signum, _frame):
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    first_failure = None
    while any(p.poll() is None for p in processes):
        failed = [i for i, p in enumerate(processes) if p.poll() not in (None, 0)]
        if failed and first_failure is None:
            first_failure = (failed[0], processes[failed[0]].returncode, time.time())
        if first_failure and time.time() - first_failure[2] > GRACE_AFTER_FAILURE:
            for process in processes:
                if process.poll() is None:
                    process.kill()
        time.sleep(0.5)
    codes = [p.returncode for p in processes]
    if any(codes):
        index, code = next((i, c) for i, c in enumerate(codes) if c)
        state = runs.read_json(folder / runs.STATUS_FILE, {}) or {}
        if state.get("state") not in (runs.FAILED, runs.STOPPED):
            runs.write_status(folder, runs.FAILED, ended=time.time(), phase=None,
                              error=f"worker {index} of {args.workers} exited with code {code}; "
                                    "the run stopped with it")
        print(f"run folder: {folder}  worker exit codes: {codes}", file=sys.stderr)
        return 1
    print(f"run folder: {folder}  {args.workers} workers finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
