"""Shared fixtures: tiny image data sets made by the tests, and a CPU split into two
logical devices (done here, before TensorFlow starts, so distribution is testable)."""

from __future__ import annotations

import io
import os
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
