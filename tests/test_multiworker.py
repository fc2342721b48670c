"""Several worker processes under MultiWorkerMirroredStrategy (python -m engine.launch),
on one machine over loopback: they train like one process on the same global batch,
only the chief writes the run folder, a SIGTERM to any worker stops them all cleanly
and resumes, and a killed worker fails the run within a bounded time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, write_class_folders
from engine import runs
from engine.config import tiny_config
from engine.training.distribute import worker_role


def test_worker_role_from_tf_config():
    assert worker_role({}).workers == 1 and worker_role({}).is_chief
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    second = worker_role({"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})})
    assert second.workers == 2 and not second.is_chief
    with_chief = {"chief": ["h:1"], "worker": ["h:2"]}
    worker0 = worker_role({"TF_CONFIG": json.dumps({"cluster": with_chief, "task": {"type": "worker", "index": 0}})})
    assert worker0.workers == 2 and not worker0.is_chief  # the named chief writes, not worker 0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_class_folders(tmp_path_factory.mktemp("mwdata"), per_class=24)


def _config_file(tmp_path: Path, data: Path, **changes) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.json"
    path.write_text(tiny_config(data_dir=str(data), dedup_distance=-1, log_every_steps=1, **changes).to_json())
    return path


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _worker_pid(launcher: subprocess.Popen, index: int) -> int:
    for child in _children(launcher.pid):
        environ = Path(f"/proc/{child}/environ").read_bytes()
        if f'"index": {index}}}'.encode() in environ:
            return child
    raise AssertionError(f"worker {index} not found among {_children(launcher.pid)}")


@pytest.fixture
def launch():
    """launch(config, folder): ``python -m engine.launch --workers 2`` in the background;
    whatever is left of the launchers a test started is killed afterwards."""
    started = []

    def start(config: Path, folder: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "engine.launch", "--workers", "2", "--config",
                                    str(config), "--run-dir", str(folder)], cwd=ROOT, env=_env(),
                                   start_new_session=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_for_steps(folder: Path, launcher: subprocess.Popen, count: int = 1, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while len(runs.read_metrics(folder, "step")) < count:
        assert launcher.poll() is None, "the launcher ended before training"
        assert time.time() < deadline, "no training step logged"
        time.sleep(0.2)


def test_two_workers_train_like_one_process_and_only_the_chief_writes(data, tmp_path):
    # One process holding both data shards builds each global batch from the same two
    # local batches the two workers contribute (engine.data.pipeline.concat_shards).
    config = _config_file(tmp_path, data, epochs=2, ema_decay=0.0, data_shards=2)
    two_workers = _config_file(tmp_path / "w2", data, epochs=2, ema_decay=0.0, workers=2)
    single, multi = tmp_path / "single", tmp_path / "multi"
    # The worker count is part of the request: python -m engine.train on a config that
    # asks for 2 workers goes through the one launcher, like the dashboard.
    for file, folder in ((config, single), (two_workers, multi)):
        out = subprocess.run([sys.executable, "-m", "engine.train", "--config", str(file), "--run-dir", str(folder)],
                             cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
    one = [r["train/loss"] for r in runs.read_metrics(single, "step")]
    two = [r["train/loss"] for r in runs.read_metrics(multi, "step")]
    # Same global batches (each worker's local batch from its own shard), synchronised batch
    # norm and summed gradients: only the order of float32 sums differs (ring all-reduce),
    # a relative 1e-6 per step that Adam carries along (seen: 6e-7 after 8 steps).
    assert len(one) == len(two) == 8
    assert two == pytest.approx(one, rel=1e-4)
    # Validation: the workers each score half of the val split (padded to equal steps)
    # and gather; the figures are those of one process scoring all of it.
    for key in ("val/loss", "val/accuracy", "val/auc"):
        assert ([r[key] for r in runs.read_metrics(multi, "epoch")]
                == pytest.approx([r[key] for r in runs.read_metrics(single, "epoch")], rel=1e-4, abs=1e-6)), key
    stored = runs.read_config_file(multi)
    assert stored["environment"]["workers"] == 2 and stored["derived"]["replicas"] == 2
    assert runs.read_status(multi)["state"] == "finished"
    # One writer: a single log, and no second worker's files in the folder.
    assert [p.name for p in multi.glob("*.log")] == ["train.log"]
    assert not list(multi.rglob("worker1*"))
    # The data were scanned once, by the launcher, before any worker started; the
    # workers trained on the folder's manifest.
    log = (multi / "train.log").read_text()
    assert log.count("scanning ") == 1 and "using the run's own manifest" in log
    assert log.index("scanning ") < log.index("using the run's own manifest")
    assert stored["config"]["workers"] == 2


def test_sigterm_to_one_worker_stops_all_and_the_run_resumes(data, tmp_path, launch):
    config = _config_file(tmp_path, data, epochs=60)
    folder = tmp_path / "run"
    launcher = launch(config, folder)
    _wait_for_steps(folder, launcher, count=3)
    os.kill(_worker_pid(launcher, 1), signal.SIGTERM)  # not the chief
    assert launcher.wait(timeout=180) == 0
    status = runs.read_status(folder)
    assert status["state"] == "stopped", status
    stopped_at = max(r["step"] for r in runs.read_metrics(folder, "step"))
    # Resume both workers from the chief's checkpoint, with a short total.
    done = len(runs.read_metrics(folder, "epoch"))
    out = subprocess.run([sys.executable, "-m", "engine.launch", "--workers", "2", "--resume", str(folder),
                          "--epochs", str(done + 1)], cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert runs.read_status(folder)["state"] == "finished"
    assert "resumed from" in (folder / "train.log").read_text()
    steps = [r["step"] for r in runs.read_metrics(folder, "step")]
    per_epoch = runs.read_config_file(folder)["derived"]["steps_per_epoch"]
    assert steps == sorted(steps) and steps[-1] == (done + 1) * per_epoch >= stopped_at
    assert [r["epoch"] for r in runs.read_metrics(folder, "epoch")] == list(range(1, done + 2))


def test_a_killed_worker_fails_the_run_within_the_timeout(data, tmp_path, launch):
    config = _config_file(tmp_path, data, epochs=200)
    folder = tmp_path / "run"
    launcher = launch(config, folder)
    _wait_for_steps(folder, launcher, count=3)
    killed = time.time()
    os.kill(_worker_pid(launcher, 1), signal.SIGKILL)
    # The chief's next collective fails (peer health check, or the collective timeout of
    # engine.training.distribute.COLLECTIVE_TIMEOUT_SECONDS = 120 s at worst), never a hang.
    assert launcher.wait(timeout=300) == 1
    assert time.time() - killed < 250
    status = runs.read_status(folder)
    assert status["state"] == "failed" and status["error"], status


def test_each_worker_decodes_only_its_shard_and_every_image_once_per_epoch(data, tmp_path):
    """Counted in the real worker processes (tests/decode_counter): with no cache, every
    training image and every val image is decoded exactly once per epoch, always by the
    same one worker, and the two workers split the training images and the val images
    in halves."""
    from collections import Counter

    from engine.data.manifest import read_manifest
    epochs = 2
    config = _config_file(tmp_path, data, epochs=epochs, ema_decay=0.0, cache="none", workers=2)
    folder, decode_log = tmp_path / "run", tmp_path / "decodes.jsonl"
    env = dict(_env(), DECODE_LOG=str(decode_log),
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "decode_counter"), str(ROOT)]))
    out = subprocess.run([sys.executable, "-m", "engine.launch", "--config", str(config), "--run-dir", str(folder)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    train = {r.path for r in read_manifest(folder / "manifest.csv") if r.usable and r.split == "train"}
    trained_until = runs.read_metrics(folder, "epoch")[-1]["time"]  # validated; then the chief evaluates
    decodes = [json.loads(line) for line in decode_log.read_text().splitlines()]
    during = [d for d in decodes if d["path"] in train and d["time"] <= trained_until]
    assert {d["worker"] for d in during} == {0, 1}
    shard = {w: {d["path"] for d in during if d["worker"] == w} for w in (0, 1)}
    assert not shard[0] & shard[1] and shard[0] | shard[1] == train
    assert abs(len(shard[0]) - len(shard[1])) <= 1
    assert set(Counter(d["path"] for d in during).values()) == {epochs}
    val = {r.path for r in read_manifest(folder / "manifest.csv") if r.usable and r.split == "val"}
    scored = [d for d in decodes if d["path"] in val and d["time"] <= trained_until]
    part = {w: {d["path"] for d in scored if d["worker"] == w} for w in (0, 1)}
    assert not part[0] & part[1] and part[0] | part[1] == val
    assert abs(len(part[0]) - len(part[1])) <= 1
    assert set(Counter(d["path"] for d in scored).values()) == {epochs}
    assert "data shards: " in (folder / "train.log").read_text()

