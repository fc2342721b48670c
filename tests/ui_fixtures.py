"""A real, finished run folder for the UI tests: a tiny model trained on synthetic
data with some deliberately wrong labels, so the Errors page has mistakes to show."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import write_class_folders


def make_noisy_data(root: Path, per_class: int = 36) -> Path:
    data = write_class_folders(root, per_class=per_class, seed=5)
    # Mislabel a few tumor images as "no": whatever the model learns, these become
    # false positives or the model's fit suffers elsewhere; either way there are errors.
    for index in range(0, per_class, 4):
        source = data / "yes" / f"yes_{index}.png"
        shutil.move(source, data / "no" / f"mislabelled_{index}.png")
    return data


def make_finished_run(runs_root: Path, data_root: Path, run_id: str = "fixture-run") -> Path:
    from engine.config import tiny_config
    from engine.training.loop import train_and_evaluate
    data = make_noisy_data(data_root)
    folder = runs_root / run_id
    status = train_and_evaluate(tiny_config(data_dir=str(data), epochs=3, dedup_distance=-1), folder)
    assert status["state"] == "finished", status.get("error")
    return folder
