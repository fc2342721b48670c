"""The engine's Core-API ResNet and its compiled train step compute what the Keras
reference (bench/keras_reference.py, the network a user would otherwise build) computes,
given the same weights, data and optimizer. The CV comparison with Keras
(bench/keras_cv.py) is only a comparison of recipes if this holds."""

import numpy as np
import pytest
import tensorflow as tf

import keras  # noqa: E402 - TensorFlow installs it; a missing reference must fail, not skip

from bench.keras_reference import copy_weights_into_keras, keras_resnet  # noqa: E402
from engine.model.resnet import ResNet, decay_mask  # noqa: E402
from engine.training.optim import Adam  # noqa: E402
from engine.training.steps import make_train_step  # noqa: E402

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


def _float64_reference(preset, reference):
    """The Keras network again in float64 with the same weights: the exact answer both
    float32 evaluations approximate."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        exact = keras_resnet(preset, 0.125, (16,), SIZE)
    finally:
        keras.config.set_dtype_policy(policy)
    for target, source in zip(exact.weights, reference.weights):
        target.assign(tf.cast(source, tf.float64))
    return exact


@pytest.mark.parametrize("preset", ["resnet10", "resnet50"])
def test_forward_pass_equals_keras_with_the_same_weights(preset):
    engine_model, reference = _pair(preset)
    exact = _float64_reference(preset, reference)
    images, _ = _batch(np.random.default_rng(0))
    for training in (False, True):
        ours, _ = engine_model(images, training=training)
        theirs = reference(images, training=training)[:, 0]
        truth = exact(tf.cast(images, tf.float64), training=training)[:, 0].numpy()
        scale = float(np.abs(truth).max()) + 1.0
        # The two float32 evaluations (TensorFlow's fused batch-norm kernel here, Keras's
        # element-wise ops there) round differently. In inference mode that is a few
        # roundings per layer. In training mode each batch norm divides by the spread of
        # its batch, which in resnet50's last stages at 32 px is 8 values per channel,
        # some nearly constant after a ReLU: rounding is amplified layer after layer, and
        # both float32 results land up to ~1e-3 of the logits' scale from the float64
        # answer (measured: 6e-4 engine, 9e-4 Keras). So each is compared with the
        # float64 answer at 3e-3 of the scale, and with each other at 1e-4 in inference
        # mode; a difference of structure (a missing ReLU or shortcut) moves logits by O(1).
        tolerance = (3e-3 if training else 1e-4) * scale
        np.testing.assert_allclose(ours.numpy(), truth, rtol=0, atol=tolerance)
        np.testing.assert_allclose(theirs.numpy(), truth, rtol=0, atol=tolerance)
        if not training:
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
        ours = float(step((images, labels)))
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
