"""The processes behind run folders: start a run from its request, resume, stop or
delete one. The dashboard's only way to act on training; it never imports TensorFlow.

Every start and resume runs ``python -m engine.launch`` detached (its own session, so
it outlives the UI and a Stop reaches its whole process group); what runs, one
process, several workers or a cross-validation, is decided there from the request in
the folder's config.json (engine.training.launch), never here.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from engine import layout, runs
from engine.request import RequestError, RunRequest
from engine.runs import (
    ACTIVE_STATES, PROJECT_ROOT, QUEUED, STOPPED, RunError, active_runs, new_run_id, pid_alive, read_json, read_status,
    run_dir, validate_run_id, write_status
)


class RunActiveError(RunError):
    """Another run is training and a parallel run was not confirmed."""


def start_run(request: RunRequest, run_id: str | None = None, root: str | os.PathLike | None = None,
              python: str | None = None, env: dict | None = None,
              allow_parallel: bool = False) -> tuple[str, Path]:
    """Start the run ``request`` asks for (a RunRequest, or its stored dictionary: the
    config, plus a cv section for a cross-validation; the config's ``workers`` sets the
    worker processes) as a detached ``python -m engine.launch``. Returns (run_id, folder). The folder, its
    config.json and a queued status exist when this returns, so a reader sees the run
    at once, and what a form showed is exactly what trains.

    The check for an active run and the creation of the new one happen under a file
    lock, so two simultaneous submissions (two browser tabs) start one run, not two,
    unless ``allow_parallel``."""
    if not isinstance(request, RunRequest):
        try:
            request = RunRequest.from_dict(request)
        except RequestError as err:
            raise RunError(str(err)) from None
    root = Path(root or runs.DEFAULT_RUNS_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    run_id = validate_run_id(run_id or new_run_id())
    folder = run_dir(run_id, root)
    with _start_lock(root):
        if not allow_parallel:
            active = active_runs(root)
            if active:
                raise RunActiveError(
                    f"run {active[0].run_id} is still {active[0].state}; stop it first or "
                    "confirm that you want runs in parallel")
        try:
            folder.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise RunError(f"a run named {run_id} already exists") from None
        write_status(folder, QUEUED, pid=None, created=time.time())
        request.write(folder)
        _launch([python or sys.executable, "-m", "engine.launch", "--config", str(folder / layout.CONFIG),
                 "--run-dir", str(folder)], folder, env)
    return run_id, folder


class _start_lock:
    """An exclusive flock on ``<root>/.start.lock`` (released on exit or process death)."""

    def __init__(self, root: Path):
        self.path = root / ".start.lock"

    def __enter__(self):
        self.handle = open(self.path, "a")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def resume_run(folder: str | os.PathLike, python: str | None = None, env: dict | None = None,
               epochs: int | None = None) -> None:
    """Continue a stopped or failed run (or CV) from its latest checkpoint, on as many
    workers as it asked for; with ``epochs``, continue a run (finished or not) up to
    that many epochs in total. Refusals are raised here, before any process starts."""
    folder = Path(folder)
    status = read_status(folder)
    if status.get("state") in ACTIVE_STATES:
        raise RunError(f"run {folder.name} is already {status['state']}")
    extra = []
    if epochs is not None:
        problem = runs.extension_problem(folder, epochs)
        if problem:
            raise RunError(problem)
        extra = ["--epochs", str(int(epochs))]
    write_status(folder, QUEUED, pid=None, error=None)
    _launch([python or sys.executable, "-m", "engine.launch", "--resume", str(folder), *extra], folder, env)


def _launch(command: list[str], folder: Path, env: dict | None) -> None:
    environment = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(PROJECT_ROOT), environment.get("PYTHONPATH", "")] if p)
    with open(folder / layout.PROCESS_LOG, "ab") as log:
        process = subprocess.Popen(
            command, cwd=str(PROJECT_ROOT), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, env=environment)
    write_status(folder, QUEUED, pid=process.pid, launched=time.time())


STOPPING = "stopping"


def stop_run(folder: str | os.PathLike, grace_seconds: float = 60.0, *, wait: bool = True) -> str:
    """SIGTERM the run's process group (it saves a checkpoint and exits as stopped),
    then SIGKILL if it has not ended after the grace period. Returns the final state.

    ``wait=False`` (the dashboard's Stop) returns "stopping" at once: the request is
    recorded in status.json (``stop_requested``) for every reader to show, and a
    background thread of this process waits out the grace period and kills if needed."""
    folder = Path(folder)
    status = read_status(folder)
    pid = status.get("pid")
    if status.get("state") not in ACTIVE_STATES or not pid_alive(pid):
        return status.get("state", "unknown")
    _signal_group(pid, signal.SIGTERM)
    if not wait:
        write_status(folder, status["state"], stop_requested=time.time())
        threading.Thread(target=_wait_then_kill, args=(folder, pid, grace_seconds), daemon=True,
                         name=f"stop-{folder.name}").start()
        return STOPPING
    return _wait_then_kill(folder, pid, grace_seconds)


def _wait_then_kill(folder: Path, pid: int, grace_seconds: float) -> str:
    deadline = time.time() + grace_seconds
    while time.time() < deadline:
        if not pid_alive(pid):
            _reap(pid)
            final = read_json(folder / layout.STATUS, {}) or {}
            if final.get("state") in ACTIVE_STATES:
                # Stopped before its signal handler was installed (still starting up).
                write_status(folder, STOPPED, ended=time.time(), error=None,
                             stopped_by="SIGTERM before training started")
            return read_status(folder).get("state", "unknown")
        time.sleep(0.2)
    _signal_group(pid, signal.SIGKILL)
    write_status(folder, STOPPED, ended=time.time(),
                 error=f"killed after not stopping within {grace_seconds:.0f} s")
    return STOPPED


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    try:
        os.waitpid(int(pid), os.WNOHANG)
    except ChildProcessError:
        pass


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(os.getpgid(int(pid)), sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(int(pid), sig)
        except ProcessLookupError:
            pass


def delete_run(run_id: str, root: str | os.PathLike | None = None) -> None:
    """Remove one run folder inside the runs root; refuses active runs."""
    folder = run_dir(run_id, root)
    if not folder.is_dir():
        raise RunError(f"no run {run_id!r}")
    if read_status(folder).get("state") in ACTIVE_STATES:
        raise RunError(f"run {run_id} is still active: stop it first")
    shutil.rmtree(folder)
