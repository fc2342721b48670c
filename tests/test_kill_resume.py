"""SIGKILL at four random moments, then resume, twice more with the leftovers of a
kill in the middle of a checkpoint save planted beside the newest checkpoint: every
resume succeeds from the newest intact checkpoint and the finished run has every epoch
exactly once.

A kill inside a save cannot be timed from outside without a race (a save takes a few
milliseconds), so its leftovers are written deterministically instead: what TensorFlow
leaves when killed while writing shards (a ``ckpt-N_temp`` folder with a truncated
shard) and after writing the files but before the ``checkpoint`` index names them (a
truncated ``ckpt-N.index``/``.data`` pair)."""

import os
import random
import signal
import subprocess
import sys
import time


from conftest import ROOT, write_class_folders
from engine import runs
from engine.config import tiny_config

EPOCHS = 20
TRIALS = 4
DURING_SAVE = 2


def launch(args):
    return subprocess.Popen([sys.executable, "-m", "engine.train", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), start_new_session=True)


def step_records(folder) -> int:
    return len(runs.read_metrics(folder, "step"))


def kill_while_training(process, folder, rng, timeout=120.0) -> None:
    """SIGKILL at a random moment after this process has logged a training step."""
    seen = step_records(folder)
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None and step_records(folder) <= seen:
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 1.5))
    process.send_signal(signal.SIGKILL)


def plant_torn_save(folder) -> str:
    """The files a SIGKILL during the next checkpoint save leaves, for a run that has
    saved at least once; returns the step they pretend to be."""
    checkpoints = folder / "checkpoints"
    newest = max(int(p.name.split("-")[1].split(".")[0]) for p in checkpoints.glob("ckpt-*.index"))
    data = next(checkpoints.glob(f"ckpt-{newest}.data-*")).read_bytes()
    torn = newest + 1
    temp = checkpoints / f"ckpt-{torn}_temp"
    temp.mkdir(exist_ok=True)
    (temp / "part-00000-of-00001.data-00000-of-00001").write_bytes(data[: len(data) // 3])
    (checkpoints / f"ckpt-{torn}.index").write_bytes(b"\x00" * 17)
    (checkpoints / f"ckpt-{torn}.data-00000-of-00001").write_bytes(data[: len(data) // 2])
    return str(torn)


def test_random_sigkills_then_resume_lose_nothing_but_recent_work(tmp_path):
    data = write_class_folders(tmp_path / "data", per_class=24)
    config_file = tmp_path / "config.json"
    config_file.write_text(tiny_config(data_dir=str(data), epochs=EPOCHS, dedup_distance=-1).to_json())
    folder = tmp_path / "run"
    rng = random.Random(1234)
    for trial in range(TRIALS + DURING_SAVE):
        args = ["--config", config_file, "--run-dir", folder] if trial == 0 else ["--resume", folder]
        if trial >= TRIALS:
            plant_torn_save(folder)
        process = launch(args)
        kill_while_training(process, folder, rng)
        process.wait(timeout=30)
        status = runs.read_status(folder)
        if status["state"] == "finished":
            break  # it outran the kill: nothing left to resume
        assert status["state"] == "failed" and status["error"] == "process ended unexpectedly", status
    assert trial >= TRIALS, "the run finished before any torn save was planted: raise EPOCHS"
    final = launch(["--resume", folder])
    assert final.wait(timeout=300) == 0
    assert runs.read_status(folder)["state"] == "finished"
    epochs = [r["epoch"] for r in runs.read_metrics(folder, "epoch")]
    assert epochs == list(range(1, EPOCHS + 1)), epochs
    steps = [r["step"] for r in runs.read_metrics(folder, "epoch")]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    log = (folder / "train.log").read_text()
    assert "resumed from" in log

