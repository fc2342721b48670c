import numpy as np
import pytest
import tensorflow as tf

from engine.training.ema import WeightAverage
from engine.model.resnet import ResNet


def test_average_follows_the_warmed_up_decay_and_copies_statistics():
    model, average = ResNet("resnet10", 0.125, (4,), seed=1), ResNet("resnet10", 0.125, (4,), seed=2)
    tracker = WeightAverage(model, average, decay=0.5)
    start = model.classifier.bias.numpy().copy()
    np.testing.assert_array_equal(average.classifier.bias.numpy(), start)  # starts as a copy
    model.classifier.bias.assign_add([1.0])
    tracker.update(tf.distribute.get_strategy(), tf.constant(100))  # warm-up factor 101/110 > 0.5: decay = 0.5
    np.testing.assert_allclose(average.classifier.bias.numpy(), start + 0.5)
    model.classifier.bias.assign_add([1.0])
    tracker.update(tf.distribute.get_strategy(), tf.constant(0))  # warm-up: decay = 1/10
    np.testing.assert_allclose(average.classifier.bias.numpy(), 0.1 * (start + 0.5) + 0.9 * (start + 2.0))
    model(tf.random.uniform([2, 32, 32, 3]), training=True)
    tracker.copy_statistics()
    np.testing.assert_array_equal(average.stem_bn.moving_mean.numpy(), model.stem_bn.moving_mean.numpy())


def test_decay_must_be_a_fraction():
    model = ResNet("resnet10", 0.125, (4,))
    with pytest.raises(ValueError):
        WeightAverage(model, ResNet("resnet10", 0.125, (4,)), decay=1.0)


def test_statistics_pass_measures_the_averaged_weights_own_statistics():
    """After the pass, the averaged model's stem batch-norm mean is the mean of its own
    stem convolution's output on the training batches, not the raw model's (which was
    measured on other weights: what copying alone would leave)."""
    from engine.training.ema import STATISTICS_BATCHES, make_statistics_pass
    model, average = ResNet("resnet10", 0.125, (4,), seed=1), ResNet("resnet10", 0.125, (4,), seed=2)
    tracker = WeightAverage(model, average, decay=0.5)
    average.stem_conv.kernel.assign(average.stem_conv.kernel * 3.0 + 0.05)  # weights unlike the raw ones
    images = tf.random.stateless_uniform([8, 32, 32, 3], [1, 2])
    model(images, training=True)
    tracker.copy_statistics()
    own_mean = tf.reduce_mean(average.stem_conv(2.0 * images - 1.0), axis=[0, 1, 2]).numpy()
    copied = average.stem_bn.moving_mean.numpy()
    assert np.abs(copied - own_mean).max() > 0.05  # copying alone is wrong
    batches = tf.data.Dataset.from_tensors((images, tf.zeros([8]))).repeat(STATISTICS_BATCHES)
    assert make_statistics_pass(tf.distribute.get_strategy(), average)(batches) == STATISTICS_BATCHES
    # Momentum 0.9 over 30 identical batches leaves 0.9**30 = 4.2% of the starting gap.
    gap = np.abs(copied - own_mean).max()
    np.testing.assert_allclose(average.stem_bn.moving_mean.numpy(), own_mean, atol=0.05 * gap + 1e-6)
