"""The engine's Core-API ResNet and its compiled train step compute what the Keras
reference (bench/keras_reference.py, the network a user would otherwise build) computes,
given the same weights, data and optimizer. The CV comparison with Keras
(bench/keras_cv.py) is only a comparison of recipes if this holds."""

import numpy as np
import pytest
import tensorflow as tf

keras = pytest.importorskip("keras")

from bench.keras_reference import copy_weights_into_keras, keras_resnet  # noqa: E402
from engine.model import ResNet, decay_mask  # noqa: E402
from engine.optim import Adam  # noqa: E402
from engine.steps import make_train_step  # noqa: E402

SIZE = 32


def _pair(preset):
    engine_model = ResNet(preset, 0.125, head_units=(16,), seed=3)
    reference = keras_resnet(preset, 0.125, (16,), SIZE)
    copy_weights_into_keras(engine_model, reference)
    return engine_model, reference


def _batch(rng, count=8):
    images = tf.constant(rng.uniform(0, 1, (count, SIZE, SIZE, 3)).astype(np.float32))
    labels = tf.constant((np.arange(count) % 2).astype(np.float32))
    return images, labels


@pytest.mark.parametrize("preset", ["resnet10", "resnet50"])
def test_forward_pass_equals_keras_with_the_same_weights(preset):
    engine_model, reference = _pair(preset)
    images, _ = _batch(np.random.default_rng(0))
    for training in (False, True):
        ours, _ = engine_model(images, training=training)
        theirs = reference(images, training=training)[:, 0]
        # Same convolution kernels; only the batch-norm arithmetic is written twice
        # (tf.nn.batch_normalization vs Keras's own), a few float32 roundings per
        # layer: 1e-4 of the logits' scale is far above that and far below any
        # difference of structure (a missing ReLU or shortcut moves logits by O(1)).
        scale = float(np.abs(theirs).max()) + 1.0
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=0, atol=1e-4 * scale)


def test_train_steps_equal_keras_adam_steps():
    """Same weights, same batches, Adam with the same constants and a constant learning
    rate: the engine's compiled step and Keras ``train_on_batch`` give the same losses,
    weights and batch-norm statistics after a few steps."""
    engine_model, reference = _pair("resnet10")
    learning_rate = 1e-3
    optimizer = Adam(engine_model.trainable_variables, decay_mask(engine_model), epsilon=1e-7)
    step = make_train_step(tf.distribute.get_strategy(), engine_model, optimizer,
                           lambda _: tf.constant(learning_rate))
    reference.compile(optimizer=keras.optimizers.Adam(learning_rate, epsilon=1e-7),
                      loss=keras.losses.BinaryCrossentropy(from_logits=True))
    rng = np.random.default_rng(1)
    for _ in range(4):
        images, labels = _batch(rng)
        ours = float(step((images, labels))[0])
        theirs = float(np.ravel(reference.train_on_batch(images, labels[:, None]))[0])
        # Losses of O(1) after a few updates of size ~lr: float32 rounding differences
        # between the two gradient graphs move them by ~1e-6 (seen: 3e-7).
        assert ours == pytest.approx(theirs, abs=1e-4)
    # After 4 Adam steps each weight moved by at most 4 * lr; a wrong update rule
    # (bias correction, epsilon placement, decay) or a missed batch-norm statistic
    # update differs by a sizeable fraction of that.
    classifier = reference.layers[-1]
    np.testing.assert_allclose(engine_model.classifier.kernel.numpy(), classifier.kernel.numpy(),
                               atol=0.05 * learning_rate)
    stem_bn = next(layer for layer in reference.layers
                   if isinstance(layer, keras.layers.BatchNormalization))
    np.testing.assert_allclose(engine_model.stem_bn.moving_mean.numpy(),
                               stem_bn.moving_mean.numpy(), rtol=1e-4, atol=1e-5)
    images, _ = _batch(np.random.default_rng(2))
    ours, _ = engine_model(images, training=False)
    theirs = reference(images, training=False)[:, 0]
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=0,
                               atol=1e-3 * (float(np.abs(theirs).max()) + 1.0))
