"""The training input pipeline's augmentation and mixup, on real tensors."""

import numpy as np
import tensorflow as tf

from engine.data import pipeline
from engine.config import tiny_config


def _decoded(count=16, size=8):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    labels = (np.arange(count) % 2).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((images, labels)), images, labels


def test_mixup_blends_images_and_labels_with_the_same_weight():
    images = tf.constant(np.random.default_rng(1).uniform(0, 1, (32, 4, 4, 3)).astype(np.float32))
    labels = tf.constant((np.arange(32) % 2).astype(np.float32))
    mixed, soft = pipeline.mix_batch(images, labels, tf.constant([3, 4], tf.int64), 0.4)
    mixed, soft = mixed.numpy(), soft.numpy()
    assert ((soft >= 0) & (soft <= 1)).all() and len(np.unique(np.round(soft, 4))) > 4
    # Each mixed image is w*x_i + (1-w)*x_j for some partner j, the label w*y_i + (1-w)*y_j.
    x, y = images.numpy(), labels.numpy()
    for i in range(32):
        fits = []
        for j in range(32):
            d = x[i] - x[j]
            if np.abs(d).max() < 1e-6:
                w = 1.0
            else:
                w = float(np.sum((mixed[i] - x[j]) * d) / np.sum(d * d))
            if np.abs(w * x[i] + (1 - w) * x[j] - mixed[i]).max() < 1e-5:
                fits.append(abs(w * y[i] + (1 - w) * y[j] - soft[i]) < 1e-5)
        assert any(fits), i
    again, _ = pipeline.mix_batch(images, labels, tf.constant([3, 4], tf.int64), 0.4)
    np.testing.assert_array_equal(again.numpy(), mixed)  # seeded: a resumed run sees the same


def test_train_dataset_with_mixup_gives_soft_labels_and_without_it_hard_ones():
    decoded, _, _ = _decoded()
    plain = tiny_config(rotation_degrees=0.0, zoom=0.0)
    for config, soft_expected in ((plain, False), (plain.replace(mixup=0.4), True)):
        labels = np.concatenate([y.numpy() for _, y in pipeline.train_dataset(decoded, 16, 8, config, seed=1)])
        soft = ((labels > 0.01) & (labels < 0.99)).any()
        assert soft == soft_expected
        assert labels.shape == (16,) and ((labels >= 0) & (labels <= 1)).all()
