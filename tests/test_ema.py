import numpy as np
import pytest
import tensorflow as tf

from engine.ema import WeightAverage
from engine.model import ResNet


def test_average_follows_the_warmed_up_decay_and_copies_statistics():
    model, average = ResNet("resnet10", 0.125, (4,), seed=1), ResNet("resnet10", 0.125, (4,), seed=2)
    tracker = WeightAverage(model, average, decay=0.5)
    start = model.classifier.bias.numpy().copy()
    np.testing.assert_array_equal(average.classifier.bias.numpy(), start)  # starts as a copy
    model.classifier.bias.assign_add([1.0])
    tracker.update(tf.constant(100))  # warm-up factor 101/110 > 0.5: decay = 0.5
    np.testing.assert_allclose(average.classifier.bias.numpy(), start + 0.5)
    model.classifier.bias.assign_add([1.0])
    tracker.update(tf.constant(0))  # warm-up: decay = 1/10
    np.testing.assert_allclose(average.classifier.bias.numpy(), 0.1 * (start + 0.5) + 0.9 * (start + 2.0))
    model(tf.random.uniform([2, 32, 32, 3]), training=True)
    tracker.copy_statistics()
    np.testing.assert_array_equal(average.stem_bn.moving_mean.numpy(), model.stem_bn.moving_mean.numpy())


def test_decay_must_be_a_fraction():
    model = ResNet("resnet10", 0.125, (4,))
    with pytest.raises(ValueError):
        WeightAverage(model, ResNet("resnet10", 0.125, (4,)), decay=1.0)
