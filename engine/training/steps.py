"""The compiled, distributed train and eval steps.

Each is one ``tf.function`` wrapping ``strategy.run`` and ``strategy.reduce``, after
TensorFlow's custom-training guide. The per-example loss is reduced with
``tf.nn.compute_average_loss`` over the number of examples actually in the global
batch (all-reduced), so the loss and the update are the same whatever the number of
replicas, and a last partial batch is averaged over its true size. A batch may carry
per-example loss weights third (engine.data.sample_weights, mean 1 over the training part);
the loss then, and the train loss logged, is the weighted mean.

The steps are compiled with ``autograph=False``: no branch in them, the model or the
optimizer depends on a tensor's value (each ``if`` is decided by Python values when the
step is traced), so AutoGraph's conversion of some 470 functions bought nothing and cost
about 3 seconds of every run's start-up (measured on a tiny run on 2 cores with another
job beside it: the first epoch went from 6 s to 3 s).
"""

from __future__ import annotations

import tensorflow as tf

from engine.training.epoch_metrics import local_sums


def per_example_loss(labels, logits, class_weights=(1.0, 1.0), label_smoothing: float = 0.0,
                     sample_weights=None):
    """Binary cross-entropy from logits, optionally class-weighted, smoothed and
    weighted per example (engine.data.sample_weights)."""
    targets = labels * (1.0 - label_smoothing) + 0.5 * label_smoothing
    losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    weights = tf.where(labels > 0.5, class_weights[1], class_weights[0])
    if sample_weights is not None:
        weights = weights * tf.cast(sample_weights, weights.dtype)
    return losses * weights


def _global_count(labels):
    """Examples in this global batch, summed over replicas (a sync point)."""
    local = tf.cast(tf.shape(labels)[0], tf.float32)
    total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local)
    return tf.cast(tf.round(total), tf.int64)


def make_train_step(strategy, model, optimizer, learning_rate_fn, *, class_weights=(1.0, 1.0),
                    label_smoothing: float = 0.0, weight_average=None, metrics=None,
                    compile: bool = True):
    """Returns step(distributed_batch) -> the global mean loss (a device tensor; the
    loop reads it only when it logs). With ``metrics`` (an EpochMetrics) the step also
    adds its loss, confusion counts and logit histograms to the epoch's running sums,
    one all-reduce of a small vector per step, nothing gathered to the host."""
    variables = model.trainable_variables
    if len(variables) != len(optimizer.m):
        raise ValueError("the optimizer was built for other variables")

    def replica_step(images, labels, *sample_weights):
        replica = tf.distribute.get_replica_context()
        count = _global_count(labels)
        lr = learning_rate_fn(optimizer.iterations)
        loss_scale = getattr(optimizer, "loss_scale", None)  # set for mixed_float16
        with tf.GradientTape() as tape:
            logits, _ = model(images, training=True)
            losses = per_example_loss(labels, logits, class_weights, label_smoothing,
                                      sample_weights[0] if sample_weights else None)
            loss = tf.nn.compute_average_loss(losses, global_batch_size=count)
            scaled = loss * loss_scale.scale if loss_scale is not None else loss
        gradients = tape.gradient(scaled, variables)
        # Sum of per-replica gradients of (local sum / global count) = global mean.
        gradients = replica.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        after = None if weight_average is None else weight_average.update
        if loss_scale is None:
            optimizer.apply(gradients, lr, after=after)
        else:  # the summed gradients are the same on every replica: so is the verdict
            gradients, finite = loss_scale.unscale(gradients)
            optimizer.apply(gradients, lr, finite=finite, after=after)
            loss_scale.update(finite)
        sums = local_sums(tf.stop_gradient(logits), labels) if metrics is not None else tf.zeros([0], tf.int64)
        return loss, sums

    def step(batch):
        # (images, labels) or (images, labels, per-example loss weights)
        loss, sums = strategy.run(replica_step, args=tuple(batch))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        if metrics is not None:
            metrics.update(loss, strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None),
                           optimizer.iterations)
        return loss

    return tf.function(step, autograph=False) if compile else step


def make_eval_step(strategy, model, *, compile: bool = True):
    """Returns step(distributed_batch) -> (probabilities, labels, per-example losses)."""

    def replica_step(images, labels):
        logits, _ = model(images, training=False)
        losses = per_example_loss(labels, logits)  # unweighted, unsmoothed: the true loss
        return tf.sigmoid(logits), labels, losses

    def step(batch):
        images, labels = batch
        probs, labels_out, losses = strategy.run(replica_step, args=(images, labels))
        return (strategy.gather(probs, axis=0), strategy.gather(labels_out, axis=0),
                strategy.gather(losses, axis=0))

    return tf.function(step, autograph=False) if compile else step
