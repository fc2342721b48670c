"""Grad-CAM points at the part of the image that makes it a tumor image."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import write_class_folders
from engine.config import tiny_config
from engine.serving.explain import grad_cam
from engine.serving.overlay import overlay
from engine.model.resnet import build_model
from engine.training.loop import train_and_evaluate

SIZE = 128


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = write_class_folders(tmp_path_factory.mktemp("blobs"), per_class=40, size=SIZE, seed=11)
    folder = tmp_path_factory.mktemp("run")
    config = tiny_config(data_dir=str(data), image_size=SIZE, epochs=5, dedup_distance=-1,
                         flip=False, brightness=0.0, contrast=0.0)
    status = train_and_evaluate(config, folder, final_evaluation=False)  # only the checkpoint is used
    assert status["state"] == "finished"
    model = build_model(config)
    tf.train.Checkpoint(model=model).restore(
        tf.train.latest_checkpoint(str(folder / "checkpoints" / "best"))).expect_partial()
    return model


def blob_at(cx: int, cy: int, radius: int = SIZE // 8):
    rng = np.random.default_rng(cx * 1000 + cy)
    image = (rng.random((SIZE, SIZE)) * 60).astype(np.float32)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    image[mask] = 230
    return np.repeat(image[..., None], 3, axis=2) / 255.0, mask


@pytest.mark.parametrize("cx,cy", [(40, 40), (90, 40), (40, 90), (88, 88)])
def test_heat_map_is_hottest_on_the_blob(trained, cx, cy):
    image, mask = blob_at(cx, cy)
    logits, cam = grad_cam(trained, tf.constant(image[None]))
    cam = cam.numpy()[0]
    assert cam.shape == (SIZE, SIZE) and cam.min() >= 0.0 and cam.max() <= 1.0
    assert float(tf.sigmoid(logits)[0]) > 0.5, "the model should call the blob a tumor"
    # The last feature map is 4x4 at 128 px, so the map is coarse: the blob must still
    # be clearly hotter than the rest, and the peak must sit near it.
    assert cam[mask].mean() > 1.4 * cam[~mask].mean()
    peak = np.unravel_index(np.argmax(cam), cam.shape)
    assert abs(peak[0] - cy) < SIZE // 4 and abs(peak[1] - cx) < SIZE // 4


def test_overlay_keeps_the_image_size_and_blends():
    rgb = np.full((50, 60, 3), 100, np.uint8)
    cam = np.zeros((7, 7), np.float32)
    cam[3, 3] = 1.0
    out = overlay(rgb, cam, opacity=0.5)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert not np.array_equal(out[25, 30], rgb[25, 30])  # the hot centre is tinted
