"""Run folders: the only interface between a training process and any reader.

``runs/<run_id>/`` holds config.json, manifest.csv, data_summary.json, metrics.jsonl,
status.json, train.log, process.log, checkpoints/, export/ and tb/ (TensorBoard).
This module names those files, lists runs and reads their state and metrics; starting,
stopping and resuming the processes behind them is engine.control's. It never imports
TensorFlow, so UI pages stay fast.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from engine import files, layout

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODEL_DIR = PROJECT_ROOT / "checkpoints"  # the shipped model: the one place it is named
DEFAULT_RUNS_ROOT = Path(os.environ.get("BRAIN_RUNS_DIR", PROJECT_ROOT / "runs"))


QUEUED, RUNNING, FINISHED, FAILED, STOPPED = "queued", "running", "finished", "failed", "stopped"
ACTIVE_STATES = (QUEUED, RUNNING)
# What a running run is doing (status.json "phase"), for readers to show.
PHASE_PREPARING = "preparing data"
PHASE_TRAINING = "training"
PHASE_EXPORTING = "exporting the model"
PHASE_EVALUATING = "final evaluation on val and test"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class RunError(ValueError):
    """A run id or request that cannot be honoured; the message says why."""


# ---------------------------------------------------------------- files

write_json_atomic = files.write_json_atomic  # the one atomic writer (engine.files)


def read_json(path: str | os.PathLike, default=None):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return default


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON object as one line, flushed, so a live reader sees it now."""
    with open(path, "a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every complete line; a half-written last line (a writer mid-flush) is skipped."""
    records = []
    try:
        with open(path) as handle:
            for line in handle:
                if not line.endswith("\n"):
                    break
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
    except OSError:
        pass
    return records


def tail(path: str | os.PathLike, lines: int = 40) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64_000))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    text = text.replace("\r", "\n")
    return "\n".join([l for l in text.splitlines() if l.strip()][-lines:])


# ---------------------------------------------------------------- ids and paths

def validate_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id) or ".." in run_id:
        raise RunError(
            f"invalid run id {run_id!r}: use letters, digits, '-', '_' and '.', "
            "starting with a letter or digit"
        )
    return run_id


def new_run_id(name: str = "") -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40]
    return f"{stamp}-{slug}" if slug else stamp


def run_dir(run_id: str, root: str | os.PathLike | None = None) -> Path:
    root = Path(root or DEFAULT_RUNS_ROOT).resolve()
    path = (root / validate_run_id(run_id)).resolve()
    if path.parent != root:
        raise RunError(f"run id {run_id!r} escapes the runs folder")
    return path


# ---------------------------------------------------------------- state

def write_status(folder: str | os.PathLike, state: str, **fields) -> dict:
    """Merge ``fields`` into status.json and set the state, atomically. While a run is
    running, each write also brings ``active_seconds`` (time spent training over all
    of its segments, see begin_segment) up to date, so a run killed without warning
    still knows how long it had trained."""
    folder = Path(folder)
    current = read_json(folder / layout.STATUS, {}) or {}
    was_running = current.get("state") == RUNNING
    current.update(fields)
    now = time.time()
    if was_running and current.get("segment_started") and "active_seconds" not in fields:
        current["active_seconds"] = (float(current.get("seconds_before") or 0.0)
                                     + now - float(current["segment_started"]))
    current["state"] = state
    current["updated"] = now
    if state not in ACTIVE_STATES:
        current.pop("stop_requested", None)  # a Stop asked for has been answered
    write_json_atomic(folder / layout.STATUS, current)
    return current


def begin_segment(folder: str | os.PathLike, *, resume: bool, **fields) -> dict:
    """Mark the run as running in this process. A resumed run keeps its first start
    time and the training time of its earlier segments, so its duration is the time
    it trained, not the time since the last resume nor the idle time between."""
    previous = read_json(Path(folder) / layout.STATUS, {}) or {}
    now = time.time()
    before = float(previous.get("active_seconds") or 0.0) if resume else 0.0
    started = (previous.get("started") if resume else None) or now
    return write_status(folder, RUNNING, pid=os.getpid(), started=started, segment_started=now,
                        seconds_before=before, active_seconds=before, ended=None, error=None,
                        stop_requested=None, **fields)


def preparation_progress(folder: str | os.PathLike, every_seconds: float = 1.0):
    """A ``progress(done, total)`` callback for a manifest build (engine.data.manifest)
    that records ``files_inspected`` and ``files_found`` in status.json, at most once per
    ``every_seconds`` and always at the end: what the Train page's progress bar reads
    while a large folder is scanned."""
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.time()
        if done < total and now - last[0] < every_seconds:
            return
        last[0] = now
        current = read_json(Path(folder) / layout.STATUS, {}) or {}
        write_status(folder, current.get("state", RUNNING), files_inspected=int(done), files_found=int(total))

    return progress


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is dead for our purposes
        with open(f"/proc/{int(pid)}/stat") as handle:
            if handle.read().split(")")[-1].split()[0] == "Z":
                return False
    except OSError:
        pass
    return True


def read_status(folder: str | os.PathLike) -> dict:
    """status.json, with a run whose process vanished reported as failed."""
    folder = Path(folder)
    status = read_json(folder / layout.STATUS, None)
    if status is None:
        return {"state": "unknown", "error": "no status.json"}
    if status.get("state") in ACTIVE_STATES and not pid_alive(status.get("pid")):
        # A queued run without a pid yet is being launched; give it a minute.
        if status.get("pid") or time.time() - status.get("updated", 0) > 60:
            status = dict(status)
            status["state"] = FAILED
            status["error"] = "process ended unexpectedly"
            status["log_tail"] = tail(folder / layout.PROCESS_LOG, 20) or tail(folder / layout.TRAIN_LOG, 20)
    return status


@dataclass
class RunSummary:
    run_id: str
    path: Path
    status: dict
    config: dict
    derived: dict
    best: dict = field(default_factory=dict)
    last_epoch: dict = field(default_factory=dict)

    @property
    def state(self) -> str:
        return self.status.get("state", "unknown")

    @property
    def duration_seconds(self) -> float | None:
        """Training time over every segment of the run (see begin_segment)."""
        status = self.status
        if self.state == RUNNING and status.get("segment_started"):
            return float(status.get("seconds_before") or 0.0) + time.time() - float(status["segment_started"])
        if status.get("active_seconds") is not None:
            return float(status["active_seconds"])
        start = status.get("started")  # folders written before segments were recorded
        if not start:
            return None
        end = status.get("ended") or (time.time() if self.state == RUNNING else None)
        return None if end is None else float(end) - float(start)


def read_config_file(folder: str | os.PathLike) -> dict:
    return read_json(Path(folder) / layout.CONFIG, {}) or {}


def read_metrics(folder: str | os.PathLike, kind: str | None = None) -> list[dict]:
    records = read_jsonl(Path(folder) / layout.METRICS)
    return [r for r in records if kind is None or r.get("kind") == kind]


def best_epoch(epochs: list[dict], metric: str = "val/auc") -> dict:
    if metric == "last":  # a fixed epoch budget: the exported model is the last epoch's
        return epochs[-1] if epochs else {}
    scored = [e for e in epochs if e.get(metric) is not None]
    if not scored:
        return {}
    lower_is_better = metric.endswith("loss")
    return (min if lower_is_better else max)(scored, key=lambda e: e[metric])


def summarize_run(folder: str | os.PathLike) -> RunSummary:
    folder = Path(folder)
    config_file = read_config_file(folder)
    config = config_file.get("config", {})
    epochs = read_metrics(folder, "epoch")
    return RunSummary(
        run_id=folder.name, path=folder, status=read_status(folder), config=config,
        derived=config_file.get("derived", {}),
        best=best_epoch(epochs, config.get("best_metric", "val/auc")),
        last_epoch=epochs[-1] if epochs else {},
    )


def list_runs(root: str | os.PathLike | None = None) -> list[RunSummary]:
    """Every run folder under root, newest first."""
    root = Path(root or DEFAULT_RUNS_ROOT)
    if not root.is_dir():
        return []
    folders = [p for p in root.iterdir() if p.is_dir() and (p / layout.STATUS).exists()]
    folders.sort(key=lambda p: (p / layout.STATUS).stat().st_mtime, reverse=True)
    return [summarize_run(p) for p in folders]


def estimate_seconds(history: list[RunSummary], config: dict, train_images: int,
                     processes: int = 1) -> tuple[float, str] | None:
    """Expected wall time of ``config`` on ``train_images`` images (summed over
    ``processes`` training processes: the K folds of a cross-validation), from earlier
    runs of the same network, input size and devices on this machine: (seconds, id of
    the run it is based on), or None with no such run.

    Two parts, both measured on the newest matching finished run: the time per image
    and epoch (its epoch time), and its fixed cost (its whole duration minus its epochs:
    start-up, data scan, export, final evaluation), paid once per process. Counting only
    epochs put a 13.5 s cross-validation at "0m 01s". Pure: summaries in, a number out."""
    keys = ("preset", "width", "image_size", "devices")
    matching = [r for r in history
                if all(r.config.get(k) == config.get(k) for k in keys)
                and r.last_epoch.get("epoch_seconds") and r.derived.get("train_images")]
    if not matching:
        return None
    newest = matching[0]  # list_runs is newest first
    per_image = newest.last_epoch["epoch_seconds"] / newest.derived["train_images"]
    epochs_done = int(newest.last_epoch.get("epoch") or 0)
    total = newest.duration_seconds if newest.state == FINISHED else None
    fixed = max(0.0, total - newest.last_epoch["epoch_seconds"] * epochs_done) if total and epochs_done else 0.0
    return (per_image * train_images * int(config.get("epochs", 1)) + fixed * max(1, processes),
            newest.run_id)


def active_runs(root: str | os.PathLike | None = None) -> list[RunSummary]:
    return [run for run in list_runs(root) if run.state in ACTIVE_STATES]



def is_cv(folder: str | os.PathLike) -> bool:
    """A cross-validation folder (engine.cv, or the shipped fold ensemble): engine.layout.kind."""
    return layout.kind(folder) == layout.CV


def read_cv_summary(folder: str | os.PathLike) -> dict | None:
    return read_json(Path(folder) / layout.CV_SUMMARY)


def extension_problem(folder: str | os.PathLike, epochs: int) -> str:
    """Why a run cannot be continued to ``epochs`` in total ("" if it can): asked by the
    dashboard before any process starts, and by the launcher that extends it."""
    folder = Path(folder)
    if is_cv(folder):
        return "a cross-validation cannot be extended; start a new one with more epochs"
    done = len(read_metrics(folder, "epoch"))
    if epochs <= done:
        return f"run {folder.name} has already trained {done} epochs; ask for more"
    return ""


def can_resume(folder: str | os.PathLike) -> bool:
    """A stopped or failed run (or CV) with something to continue from; a run stopped
    during data preparation continues from its request (config.json), the inspection
    cache making the scan quick."""
    folder = Path(folder)
    if (folder / layout.CONFIG).exists() and read_status(folder).get("state") == STOPPED:
        return True
    if is_cv(folder):
        return (folder / layout.MANIFEST).exists()
    return (folder / layout.CHECKPOINTS / "checkpoint").exists()
