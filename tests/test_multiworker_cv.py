"""A cross-validation on several local workers (python -m engine.launch --workers N
--folds K): each fold runs as N worker processes under MultiWorkerMirroredStrategy, and
Stop and Resume reach them. Its own module (and xdist group) so it runs beside
tests/test_multiworker.py instead of after it."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, write_class_folders
from engine import runs
from engine.config import tiny_config
from test_multiworker import _env, _wait_for_steps


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_class_folders(tmp_path_factory.mktemp("mwcvdata"), per_class=24)


def test_a_cross_validation_on_two_workers_stops_resumes_and_summarises(data, tmp_path):
    """The data are scanned once, by the launcher; each fold runs as two worker
    processes (the chief writes the fold folder). SIGTERM to the launcher reaches both
    workers of the running fold: the fold stops with a checkpoint, the CV is recorded as
    stopped and starts no further fold; ``--resume`` continues that fold on two workers,
    trains the next and summarises the CV like any other, every pool image with exactly
    one out-of-fold prediction."""
    from engine.data.manifest import read_manifest
    config = tmp_path / "config.json"
    config.write_text(tiny_config(data_dir=str(data), dedup_distance=-1, log_every_steps=1, epochs=2).to_json())
    folder = tmp_path / "cv"
    launcher = subprocess.Popen([sys.executable, "-m", "engine.launch", "--workers", "2", "--folds", "2",
                                 "--config", str(config), "--run-dir", str(folder)], cwd=ROOT, env=_env(),
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_steps(folder / "fold_0", launcher, count=1)
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=180) == 0
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert runs.read_status(folder)["state"] == "stopped"
    assert runs.read_status(folder / "fold_0")["state"] == "stopped"
    assert not (folder / "fold_1" / "status.json").exists()
    out = subprocess.run([sys.executable, "-m", "engine.launch", "--resume", str(folder)], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert runs.read_status(folder)["state"] == "finished"
    assert "resumed from" in (folder / "fold_0" / "train.log").read_text()
    assert [r["epoch"] for r in runs.read_metrics(folder / "fold_0", "epoch")] == [1, 2]
    cv_log = (folder / "train.log").read_text()
    assert "fold 1/2: training on 2 workers" in cv_log and "fold 1/2: resuming on 2 workers" in cv_log
    assert "fold 2/2: training on 2 workers" in cv_log
    summary = json.loads((folder / "cv_summary.json").read_text())
    assert summary["folds_count"] == 2 and summary["config"]["workers"] == 2
    for fold in (0, 1):
        fold_folder = folder / f"fold_{fold}"
        assert runs.read_status(fold_folder)["state"] == "finished"
        stored = runs.read_config_file(fold_folder)
        assert stored["environment"]["workers"] == 2 and stored["derived"]["replicas"] == 2
        log = (fold_folder / "train.log").read_text()
        assert "using the run's own manifest" in log and "data shards: " in log and "scanning " not in log
        assert not list(fold_folder.rglob("worker1*"))
    pool = {r.path for r in read_manifest(folder / "manifest.csv") if r.usable and r.split != "test"}
    with open(folder / "oof_predictions.csv") as handle:
        predicted = [row["path"] for row in csv.DictReader(handle)]
    assert sorted(predicted) == sorted(pool)
