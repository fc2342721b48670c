"""Exponential moving average of the weights, evaluated and exported instead of the
raw weights, with batch-norm statistics measured for the averaged weights.

Why: with a few hundred distinct training slices, validation accuracy swings by
several points from one epoch to the next; the average of recent weights is a
smoother, better-generalising model at no training cost. The decay warms up as
``min(decay, (1 + t) / (10 + t))`` (as tf.train.ExponentialMovingAverage does with
num_updates) so early averages are not dominated by the random initialisation.

Batch-norm moving statistics cannot be averaged like weights: the raw model's were
measured on activations of other weights. Before the averaged model is evaluated,
``make_statistics_pass`` runs it in training mode over training batches, which
re-estimates its statistics for its own weights (as stochastic weight averaging does).
"""

from __future__ import annotations

import tensorflow as tf


class WeightAverage(tf.Module):
    def __init__(self, model: tf.Module, average_model: tf.Module, decay: float):
        super().__init__(name="weight_average")
        if not 0.0 < decay < 1.0:
            raise ValueError("decay must be in (0, 1)")
        self.decay = decay
        self._pairs = list(zip(model.trainable_variables, average_model.trainable_variables))
        self._statistics = list(zip(_non_trainable(model), _non_trainable(average_model)))
        for source, target in self._pairs:
            target.assign(source)

    def update(self, strategy, step):
        """Blend the current weights in. Cross-replica context (Adam.apply's ``after``):
        each device's copy of the average blends in that device's copy of the weights;
        ``step`` (the new iteration count) may hold one value per replica."""

        def blend(target, source, step):
            t = tf.cast(step, tf.float32)
            decay = tf.minimum(self.decay, (1.0 + t) / (10.0 + t))
            return target.assign(decay * target + (1.0 - decay) * source)
        for source, target in self._pairs:
            strategy.extended.update(target, blend, args=(source, step), group=False)

    def copy_statistics(self):
        """Start the averaged model's statistics from the raw model's (close to the
        answer, so a short statistics pass converges); call in cross-replica context."""
        for source, target in self._statistics:
            target.assign(source.read_value())


STATISTICS_BATCHES = 30  # momentum 0.9: the starting values weigh 0.9**30 = 4% after the pass


def make_statistics_pass(strategy, average_model: tf.Module):
    """Returns ``run(distributed_batches)``: forward passes of the averaged model in
    training mode, which only updates its batch-norm moving statistics (no gradient,
    no weight changes). Costs about a third of a training step per batch."""

    def replica(images):
        average_model(images, training=True)
        return tf.constant(0.0)

    @tf.function(autograph=False)
    def one(batch):
        images = batch[0]  # (images, labels[, loss weights])
        strategy.run(replica, args=(images,))

    def run(batches) -> int:
        count = 0
        for batch in batches:
            one(batch)
            count += 1
        return count

    return run


def _non_trainable(model: tf.Module):
    trainable = {id(v) for v in model.trainable_variables}
    return [v for v in model.variables if id(v) not in trainable]
