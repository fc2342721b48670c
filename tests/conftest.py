"""Shared fixtures: tiny image data sets made by the tests, and a CPU split into two
logical devices (done here, before TensorFlow starts, so distribution is testable)."""

from __future__ import annotations

import io
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config):
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    except RuntimeError:
        pass


# The suite runs on three pytest-xdist workers (scripts/test.sh: -n 3 --dist loadgroup).
# Tests that share an expensive session or module fixture run on one worker, so it is
# built once: the finished cross-validation, the Streamlit server (browser and load
# tests) and Chromium.
_XDIST_GROUPS = {"cv_run": "cv"}
# A module whose tests share a module-scoped trained run is kept on one worker too:
# spread over three, each worker trained its own copy of the run (measured with
# --durations: test_evaluate's run was built twice, 121 s and 56 s).
_XDIST_MODULE_GROUPS = {"test_browser": "browser", "test_load": "browser", "test_multiworker": "multiworker",
                        "test_multiworker_cv": "multiworker_cv", "test_evaluate": "evaluate",
                        "test_small_data_rule": "small_data", "test_train": "train"}


# The longest units are handed out first (longest-processing-time-first scheduling), so
# that no worker starts one of them while the other has nothing left to do.
_LONG_FIRST = ("test_multiworker", "test_multiworker_cv", "test_browser", "test_small_data_rule", "test_kill_resume",
               "test_cv", "test_reproduce", "test_review", "test_evaluate", "test_runs", "test_train", "test_load",
               "test_cpu_isa")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    def module(item):
        return item.module.__name__.rpartition(".")[2]
    for item in items:
        group = _XDIST_MODULE_GROUPS.get(module(item))
        group = group or next((g for f, g in _XDIST_GROUPS.items() if f in item.fixturenames), None)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: _LONG_FIRST.index(module(item)) if module(item) in _LONG_FIRST
               else len(_LONG_FIRST))


def gradient_16bit(size: int) -> np.ndarray:
    """A smooth left-to-right 16-bit ramp with no brain in it: the out-of-distribution
    input the OOD tests expect to be flagged."""
    return (np.linspace(0, 65535, size)[None, :] * np.ones((size, 1))).astype(np.uint16)


def blob_image(rng: np.random.Generator, tumor: bool, size: int = 48) -> np.ndarray:
    """A noisy dark square; tumor images carry a bright blob at a random place."""
    image = (rng.random((size, size)) * 60).astype(np.uint8)
    if tumor:
        cx, cy = rng.integers(size // 4, 3 * size // 4, 2)
        radius = size // 8
        yy, xx = np.mgrid[:size, :size]
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = 230
    return image


def write_class_folders(root: Path, names=("yes", "no"), per_class: int = 40, seed: int = 0,
                        size: int = 48) -> Path:
    rng = np.random.default_rng(seed)
    for name, tumor in zip(names, (True, False)):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            Image.fromarray(blob_image(rng, tumor, size)).save(folder / f"{name}_{index}.png")
    return root


@pytest.fixture
def synthetic_data(tmp_path) -> Path:
    return write_class_folders(tmp_path / "data")


@pytest.fixture
def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(blob_image(np.random.default_rng(1), True)).save(buffer, "PNG")
    return buffer.getvalue()


# One finished cross-validation for every test that only reads one (engine tests and the
# dashboard's), built once per session: it is the most expensive fixture.
CV_FOLDS = 3


def _add_duplicates(root, count=6):
    """Exact and mirrored copies of some images, so duplicate groups exist."""
    for name in ("yes", "no"):
        sources = sorted((root / name).glob("*.png"))[:count]
        for index, source in enumerate(sources):
            image = Image.open(source)
            if index % 2:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            image.save(root / name / f"copy_{source.name}")


@pytest.fixture(scope="session")
def flipped_data(tmp_path_factory):
    """60 images per class; 12 of the 120 (10%) moved to the other class folder."""
    root = write_class_folders(tmp_path_factory.mktemp("cvdata"), per_class=60, seed=3)
    flipped = []
    for name, other in (("yes", "no"), ("no", "yes")):
        for source in sorted((root / name).glob("*.png"))[-6:]:
            target = root / other / f"flipped_{source.name}"
            shutil.move(source, target)
            flipped.append(str(target))
    _add_duplicates(root)
    return root, flipped


@pytest.fixture(scope="session")
def cv_run(flipped_data, tmp_path_factory):
    root, _ = flipped_data
    folder = tmp_path_factory.mktemp("cv")
    from engine.config import tiny_config
    config = tiny_config(data_dir=str(root), epochs=6, flip_tta=False)
    from engine.training.cv import cross_validate
    status = cross_validate(config, folder, CV_FOLDS)
    assert status["state"] == "finished", status
    return folder




@pytest.fixture(scope="session")
def finished_run_template(tmp_path_factory):
    """One finished tiny run on noisy data (ui_fixtures.make_finished_run), built once;
    tests that show it in the dashboard copy it into their own runs folder."""
    from ui_fixtures import make_finished_run
    root = tmp_path_factory.mktemp("template")
    return make_finished_run(root / "runs", root / "data")


def copy_run(template: Path, runs_root: Path, run_id: str = "fixture-run") -> Path:
    target = Path(runs_root) / run_id
    shutil.copytree(template, target)
    return target
