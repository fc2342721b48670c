"""SIGKILL at ten random moments (three of them during checkpoint saving), then resume: every
resume succeeds from the newest intact checkpoint and the finished run has every
epoch exactly once."""

import os
import random
import signal
import subprocess
import sys
import time


from conftest import ROOT, write_class_folders
from engine import runs
from engine.config import tiny_config

EPOCHS = 30
TRIALS = 7
DURING_SAVE = 3


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


def kill_when_saving(process, folder, timeout=120.0) -> bool:
    """SIGKILL as soon as a checkpoint is being written (TensorFlow's temp folder)."""
    deadline = time.time() + timeout
    checkpoints = folder / "checkpoints"
    while time.time() < deadline and process.poll() is None:
        if checkpoints.exists() and any("_temp" in p.name for p in checkpoints.iterdir()):
            process.send_signal(signal.SIGKILL)
            return True
        time.sleep(0.002)
    process.kill()
    return False


def test_random_sigkills_then_resume_lose_nothing_but_recent_work(tmp_path):
    data = write_class_folders(tmp_path / "data", per_class=24)
    config_file = tmp_path / "config.json"
    config_file.write_text(tiny_config(data_dir=str(data), epochs=EPOCHS, dedup_distance=-1).to_json())
    folder = tmp_path / "run"
    rng = random.Random(1234)
    caught_saving = 0
    for trial in range(TRIALS + DURING_SAVE):
        args = ["--config", config_file, "--run-dir", folder] if trial == 0 else ["--resume", folder]
        process = launch(args)
        if trial >= TRIALS:
            caught_saving += kill_when_saving(process, folder)
        else:
            kill_while_training(process, folder, rng)
        process.wait(timeout=30)
        status = runs.read_status(folder)
        if status["state"] == "finished":
            break  # it outran the kill: nothing left to resume
        assert status["state"] == "failed" and status["error"] == "process ended unexpectedly", status
    assert caught_saving >= 1, "no kill landed during a checkpoint save"
    final = launch(["--resume", folder])
    assert final.wait(timeout=300) == 0
    assert runs.read_status(folder)["state"] == "finished"
    epochs = [r["epoch"] for r in runs.read_metrics(folder, "epoch")]
    assert epochs == list(range(1, EPOCHS + 1)), epochs
    steps = [r["step"] for r in runs.read_metrics(folder, "epoch")]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    log = (folder / "train.log").read_text()
    assert "resumed from" in log

