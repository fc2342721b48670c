"""A run folder's config.json is the whole run request: passed back to the engine it
reproduces the run's manifest (splits, groups, folds) and its first epoch's loss."""

import csv
import json
import subprocess
import sys

import pytest

from conftest import ROOT, write_class_folders


def _manifest(folder):
    with open(folder / "manifest.csv", newline="") as handle:
        return [(r["path"], r["label"], r["split"], r["group"], r["fold"]) for r in csv.DictReader(handle)]


def _first_epoch_loss(folder):
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "epoch":
            return record["train/loss"]
    raise AssertionError(f"no epoch record in {folder}")


def test_a_runs_config_json_alone_reproduces_its_manifest_and_first_epoch(tmp_path):
    from engine.config import tiny_config
    data = write_class_folders(tmp_path / "data", per_class=12, seed=8)
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"config": tiny_config(data_dir=str(data), epochs=1).to_dict()}))
    first, again = tmp_path / "first", tmp_path / "again"
    for source, target in ((request, first), (first / "config.json", again)):
        done = subprocess.run([sys.executable, "-m", "engine.train", "--config", str(source), "--run-dir", str(target)],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    assert _manifest(again) == _manifest(first)
    # Same seeds, same data, same process layout: float32 sums in the same order.
    assert _first_epoch_loss(again) == pytest.approx(_first_epoch_loss(first), rel=1e-5)


def test_a_cv_folders_config_json_carries_its_folds(cv_run, tmp_path):
    again = tmp_path / "cv-again"
    done = subprocess.run([sys.executable, "-m", "engine.cv", "--config", str(cv_run / "config.json"),
                           "--fold", "0", "--run-dir", str(again)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    stored = json.loads((cv_run / "config.json").read_text())
    assert json.loads((again / "config.json").read_text())["cv"] == stored["cv"]  # no --folds given
    assert _manifest(again) == _manifest(cv_run)
    assert _first_epoch_loss(again / "fold_0") == pytest.approx(_first_epoch_loss(cv_run / "fold_0"), rel=1e-5)
