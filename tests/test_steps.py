"""The compiled distributed steps: graph equals eager, and 2 replicas equal 1."""

import numpy as np
import tensorflow as tf

from engine.training.epoch_metrics import EpochMetrics
from engine.model.resnet import ResNet, decay_mask
from engine.training.optim import Adam
from engine.training.steps import make_eval_step, make_train_step


def batch(seed=0, size=8):
    rng = np.random.default_rng(seed)
    images = rng.random((size, 32, 32, 3)).astype(np.float32)
    labels = (np.arange(size) % 2).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(size)


LEARNING_RATE = 0.01
# Adam's first update is lr * g / (|g| + eps). With the usual eps = 1e-8 that is
# lr * sign(g): a gradient that is ~0 flips sign under any reordering of its float32
# sum, and the weight moves by 2 * lr either way, so comparing two kernels' weights
# would compare rounding noise. With eps = 1 the update is ~lr * g, linear in the
# gradient, and the weight difference is lr times the gradient's rounding difference.
ADAM_EPSILON = 1.0
# A gradient entry here is a float32 sum over at most 8 images x 32 x 32 positions
# (n = 8192 terms) whose absolute values sum to well under 1. Reordering such a sum
# (oneDNN vs Eigen kernels, AVX2 vs AVX-512 blocking, graph fusions) changes it by at
# most n * 2**-24 * sum|terms| < 5e-4; so the weights may differ by lr * 5e-4.
WEIGHT_ATOL = LEARNING_RATE * 8192 * 2.0 ** -24 * 1.0
# The loss is a mean of 8 per-example losses, each from a forward pass of a few
# hundred thousand multiply-adds in float32 with logits of order 1: reordered sums
# move a logit by at most ~1e-5 relative at each of ~10 layers, so 1e-4 absolute.
LOSS_ATOL = 1e-4


def one_step(strategy, compile=True, size=8):
    with strategy.scope():
        model = ResNet("resnet10", 0.125, head_units=(8,), seed=3)
        optimizer = Adam(model.trainable_variables, decay_mask(model), weight_decay=0.01,
                         epsilon=ADAM_EPSILON)
        metrics = EpochMetrics()
    step = make_train_step(strategy, model, optimizer, lambda _: tf.constant(LEARNING_RATE),
                           metrics=metrics, compile=compile)
    data = strategy.experimental_distribute_dataset(batch(size=size))
    loss = step(next(iter(data)))
    weights = [v.numpy() for v in model.trainable_variables]
    stats = model.stem_bn.moving_mean.numpy()
    return float(loss), metrics.fetch(), weights, stats


def two_cpu_strategy():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest splits the CPU into two logical devices"
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


def test_compiled_step_equals_eager_step():
    strategy = tf.distribute.get_strategy()
    eager = one_step(strategy, compile=False)
    graph = one_step(strategy, compile=True)
    assert abs(eager[0] - graph[0]) < LOSS_ATOL
    for a, b in zip(eager[2], graph[2]):
        np.testing.assert_allclose(a, b, rtol=0, atol=WEIGHT_ATOL)


def test_two_replicas_match_one_on_the_same_global_batch():
    single = one_step(tf.distribute.get_strategy())
    double = one_step(two_cpu_strategy())
    assert abs(single[0] - double[0]) < LOSS_ATOL
    # The device-side epoch sums: all 8 examples counted once, the loss sum is 8 x the mean.
    assert single[1]["count"] == double[1]["count"] == 8
    assert double[1]["histograms"].sum() == 8
    assert abs(single[1]["loss"] - double[1]["loss"]) < LOSS_ATOL
    for a, b in zip(single[2], double[2]):
        np.testing.assert_allclose(a, b, rtol=0, atol=WEIGHT_ATOL)
    # Batch-norm moving means: 0.1 x a per-channel mean over 8 x 16 x 16 activations of
    # order 1, summed per replica then averaged: reordering error << 1e-5.
    np.testing.assert_allclose(single[3], double[3], rtol=0, atol=1e-5)


def test_partial_last_batch_is_averaged_over_its_true_size():
    """7 examples on 2 replicas: the loss is the plain mean over the 7."""
    strategy = two_cpu_strategy()
    with strategy.scope():
        model = ResNet("resnet10", 0.125, head_units=(8,), seed=3)
    rng = np.random.default_rng(1)
    images = rng.random((7, 32, 32, 3)).astype(np.float32)
    labels = (np.arange(7) % 2).astype(np.float32)
    data = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((images, labels)).batch(8))
    probs, labels_out, losses = make_eval_step(strategy, model)(next(iter(data)))
    assert probs.shape == (7,)
    logits, _ = model(images, training=False)
    expected = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits).numpy()
    np.testing.assert_allclose(np.sort(losses.numpy()), np.sort(expected), rtol=1e-4, atol=1e-6)
    with strategy.scope():
        optimizer = Adam(model.trainable_variables)
        metrics = EpochMetrics()
    step = make_train_step(strategy, model, optimizer, lambda _: tf.constant(0.0), metrics=metrics)
    loss = step(next(iter(data)))
    assert metrics.fetch()["count"] == 7
    # The loss of the step is the plain mean of the 7 per-example losses (the weights
    # are updated after the forward pass, so these are the same logits), not the sum
    # over 8 slots nor a mean of the two replicas' means (4 and 3 examples).
    train_logits, _ = model(images, training=True)  # lr 0: the weights did not move
    expected_train = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=train_logits)
    assert abs(float(loss) - float(np.mean(expected_train.numpy()))) < LOSS_ATOL


def test_synchronised_batch_norm_variance_is_exact_when_the_mean_is_large():
    """Across two replicas, the batch variance of values with a large mean (1000 plus
    noise of spread 0.01) equals the one-device two-pass variance: E[x^2] - E[x]^2 in
    float32 would lose it entirely (1e6 carries ~0.06 of rounding, the variance is 1e-4)."""
    from engine.model.resnet import BatchNorm
    rng = np.random.default_rng(5)
    values = (1000.0 + 0.01 * rng.standard_normal((8, 4, 4, 3))).astype(np.float32)
    expected = np.var(values.astype(np.float64), axis=(0, 1, 2))
    strategy = two_cpu_strategy()
    data = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(values).batch(8))

    @tf.function
    def moments(x):
        return strategy.run(BatchNorm._batch_moments, args=(x,))

    mean, variance = moments(next(iter(data)))
    variance = strategy.experimental_local_results(variance)[0].numpy()
    # float32 two-pass: deviations of ~0.01 are exact to ~1e-7 relative after
    # subtracting a mean known to 1000 * 2**-24 = 6e-5; squared and averaged, the
    # variance is right to a few percent at worst, against an error of 100% or more
    # for the one-pass formula.
    np.testing.assert_allclose(variance, expected, rtol=0.05)
