"""Starting a run, whatever it is: ``launch(folder)`` reads the run request in the
folder's config.json (the TrainConfig, its ``workers``, and a ``cv`` section for a
cross-validation) and runs it as one process, as N local worker processes, or as a
cross-validation. It is the one launcher: ``python -m engine.launch``, a multi-worker
``python -m engine.train`` and the dashboard (through engine.control, which starts
``python -m engine.launch``) all come here, for a fresh start and for a resume.

Several workers: the manifest is built once, here, before any worker starts; every
worker then reads the folder's manifest.csv (no worker scans the data again). Each
worker is ``python -m engine.train`` with a ``TF_CONFIG`` that names all N on free
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

from engine import layout, runs
from engine.config import TrainConfig
from engine.request import RequestError, RunRequest
from engine.training.progress import setup_logging

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


def run_workers(worker_argv: list[str], workers: int, folder: Path, *, module: str = "engine.train",
                on_signal=None) -> int:
    """Start ``workers`` local ``python -m <module>`` processes on ``worker_argv``,
    forward SIGTERM/SIGINT to them, and end the rest when one fails. Returns the exit
    code: 0 when every worker finished, 1 otherwise (the run is then recorded as failed
    unless its chief already recorded why). ``on_signal(signum)`` is told of a forwarded
    signal too (a cross-validation then starts no further fold)."""
    ports = free_ports(workers)
    processes = [subprocess.Popen([sys.executable, "-m", module, *worker_argv],
                                  env=worker_env(ports, index),
                                  stdout=None if index == 0 else subprocess.DEVNULL)
                 for index in range(workers)]

    def forward(signum, _frame):
        if on_signal:
            on_signal(signum)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    previous = {number: signal.signal(number, forward) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _wait_for_workers(processes, workers, folder)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _wait_for_workers(processes, workers: int, folder: Path) -> int:
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
        state = runs.read_json(folder / layout.STATUS, {}) or {}
        if state.get("state") not in (runs.FAILED, runs.STOPPED):
            runs.write_status(folder, runs.FAILED, ended=time.time(), phase=None,
                              error=f"worker {index} of {workers} exited with code {code}; "
                                    "the run stopped with it")
        print(f"run folder: {folder}  worker exit codes: {codes}", file=sys.stderr)
        return 1
    print(f"run folder: {folder}  {workers} workers finished")
    return 0


def fold_on_workers(workers: int):
    """A fold trainer for engine.training.cv.cross_validate: each fold as ``workers``
    local processes, ``python -m engine.cv --fold K`` under MultiWorkerMirroredStrategy
    (the chief writes the fold folder; the CV's manifest and the fold's were written
    before any worker starts, so no worker scans the data). Returns the fold's status."""
    from engine.training.cv import prepare_fold

    def train_fold(config, cv_dir, rows, fold, folds, stop) -> dict:
        folder, _ = prepare_fold(cv_dir, rows, fold, folds, config, where=f" on {workers} workers")
        argv = ["--config", str(Path(cv_dir) / layout.CONFIG), "--folds", str(folds), "--fold", str(fold),
                "--run-dir", str(cv_dir)]

        def note(signum):
            stop.requested, stop.signal_name = True, signal.Signals(signum).name
        run_workers(argv, workers, folder, module="engine.cv", on_signal=note)
        return runs.read_status(folder)
    return train_fold


def extend_request(folder: Path, epochs: int) -> None:
    """Continue a run to ``epochs`` in total: written into its config.json, so every
    process that resumes it (one, or each worker) reads the same longer schedule. The
    cosine schedule is stretched over the new total (a warm restart)."""
    problem = runs.extension_problem(folder, epochs)
    if problem:
        raise RequestError(problem)
    RunRequest.read(folder).replace(epochs=int(epochs)).write(folder)


def _prepare_once(config: TrainConfig, folder: Path) -> None:
    """Scan, hash, group and split the data once for all workers, into the folder."""
    from engine.training.loop import prepare_data
    if (folder / layout.MANIFEST).exists():
        return
    setup_logging(folder)
    runs.begin_segment(folder, resume=False, phase=runs.PHASE_PREPARING)
    prepare_data(config, folder, resume=False)


def launch_request(folder: str | os.PathLike, request: RunRequest) -> int:
    """Write ``request`` as the folder's config.json and launch it: what every entry
    main calls once it has parsed its flags into a request."""
    request.write(folder)
    return launch(folder)


def launch(folder: str | os.PathLike, *, resume: bool = False, epochs: int | None = None) -> int:
    """Run the request stored in ``folder``/config.json and return the exit code (0: it
    finished or was stopped cleanly). ``resume`` continues from the latest checkpoint
    (or a CV's unfinished fold); ``epochs`` first extends a run to that many epochs."""
    from engine.training.loop import StopRequested
    folder = Path(folder)
    request = RunRequest.read(folder)
    if epochs is not None:
        extend_request(folder, epochs)
        request = RunRequest.read(folder)
    workers, config = request.workers, request.config
    if request.is_cv:
        if workers > 1 and os.environ.get("TF_CONFIG"):
            raise RequestError("a cross-validation of several workers is launched once, not per worker; on "
                               "several hosts run each fold as a job: python -m engine.cv --fold K --run-dir DIR "
                               "on every host with its TF_CONFIG, then --collect DIR")
        from engine.training.cv import cross_validate
        stop = StopRequested().install()
        status = cross_validate(config, folder, request.cv.folds, stop=stop,
                                evaluate_test=request.cv.evaluate_test,
                                train_fold=fold_on_workers(workers) if workers > 1 else None)
    elif workers > 1 and not os.environ.get("TF_CONFIG"):
        if not resume:
            _prepare_once(config, folder)
        argv = (["--resume", str(folder)] if resume
                else ["--config", str(folder / layout.CONFIG), "--run-dir", str(folder)])
        return run_workers(argv, workers, folder)
    else:
        from engine.training.loop import train_and_evaluate
        status = train_and_evaluate(config, folder, resume=resume, stop=StopRequested().install())
    print(f"run folder: {folder}  status: {status['state']}"
          + (f"  error: {status.get('error')}" if status.get("error") else ""))
    return 0 if status["state"] in (runs.FINISHED, runs.STOPPED) else 1
