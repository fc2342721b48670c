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
fail at their next collective (within engine.training.distribute.COLLECTIVE_TIMEOUT_SECONDS);
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


def without_workers_flag(argv: list[str]) -> list[str]:
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


def run_workers(worker_argv: list[str], workers: int, folder: Path) -> int:
    """Start ``workers`` local ``python -m engine.train`` processes on ``worker_argv``,
    forward SIGTERM/SIGINT to them, and end the rest when one fails. Returns the exit
    code: 0 when every worker finished, 1 otherwise (the run is then recorded as failed
    unless its chief already recorded why)."""
    ports = free_ports(workers)
    processes = [subprocess.Popen([sys.executable, "-m", "engine.train", *worker_argv],
                                  env=worker_env(ports, index),
                                  stdout=None if index == 0 else subprocess.DEVNULL)
                 for index in range(workers)]

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
                              error=f"worker {index} of {workers} exited with code {code}; "
                                    "the run stopped with it")
        print(f"run folder: {folder}  worker exit codes: {codes}", file=sys.stderr)
        return 1
    print(f"run folder: {folder}  {workers} workers finished")
    return 0

