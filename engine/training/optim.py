"""Adam with decoupled weight decay and the learning-rate schedules, in TensorFlow Core
(tf.Variable, tf.math), after TensorFlow's "optimizers with Core APIs" guide.

Slots are created in ``__init__`` (call it inside ``strategy.scope()``), so
``CheckpointManager`` saves and restores the full optimizer state. ``apply`` is called
in replica context on gradients that were already all-reduced and applies the update
in cross-replica context, the same on every device's copy.
"""

from __future__ import annotations

import functools
import math

import tensorflow as tf

_FIRST = dict(trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


def learning_rate_at(step, *, base_lr: float, total_steps: int, warmup_steps: int,
                     schedule: str, steps_per_epoch: int = 1, decay_every_epochs: int = 10,
                     decay_factor: float = 0.1):
    """Learning rate for a (0-based) step: linear warm-up, then cosine to zero, step
    decay, or constant. Pure function of its arguments (works on Python ints and
    tensors alike)."""
    step = tf.cast(step, tf.float32)
    base = tf.constant(base_lr, tf.float32)
    warm = tf.cast(max(warmup_steps, 0), tf.float32)
    warm_lr = base * (step + 1.0) / tf.maximum(warm, 1.0)
    if schedule == "cosine":
        span = tf.cast(max(total_steps - warmup_steps, 1), tf.float32)
        progress = tf.clip_by_value((step - warm) / span, 0.0, 1.0)
        after = base * 0.5 * (1.0 + tf.cos(math.pi * progress))
    elif schedule == "step":
        period = tf.cast(max(decay_every_epochs * steps_per_epoch, 1), tf.float32)
        after = base * tf.pow(decay_factor, tf.floor(step / period))
    elif schedule == "constant":
        after = base
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return tf.where(step < warm, warm_lr, after)


class Adam(tf.Module):
    """Adam (Kingma & Ba) with bias correction and AdamW-style decoupled decay.

    ``apply`` is called in replica context (inside ``strategy.run``) and makes one
    ``merge_call`` per step; in cross-replica context ``strategy.extended.update`` then
    applies each variable's update on each device's copy with TensorFlow's fused
    ``ResourceApplyAdam`` kernel (one op per variable instead of eight), the pattern of
    TensorFlow's own distributed optimizers. Assigning ``ONLY_FIRST_REPLICA``
    variables in replica context instead costs a cross-replica merge per assignment
    (three per variable)."""

    def __init__(self, variables, decay_mask=None, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 weight_decay=0.0, name="adam"):
        super().__init__(name=name)
        if not 0.0 <= beta_1 < 1.0 or not 0.0 <= beta_2 < 1.0:
            raise ValueError("beta_1 and beta_2 must be in [0, 1)")
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.weight_decay = weight_decay
        self._variables = list(variables)
        self.decay_mask = list(decay_mask) if decay_mask is not None else [True] * len(self._variables)
        if len(self.decay_mask) != len(self._variables):
            raise ValueError("decay_mask must have one entry per variable")
        with self.name_scope:
            self.iterations = tf.Variable(0, dtype=tf.int64, name="iterations", **_FIRST)
            self.m = [tf.Variable(tf.zeros_like(v), name=f"m_{i}", **_FIRST)
                      for i, v in enumerate(self._variables)]
            self.v = [tf.Variable(tf.zeros_like(v), name=f"v_{i}", **_FIRST)
                      for i, v in enumerate(self._variables)]

    def apply(self, gradients, learning_rate, finite=None, after=None):
        """One update of the variables given to ``__init__``, from ``gradients`` already
        summed over replicas (every replica holds the same values). With ``finite`` (a
        boolean tensor, from DynamicLossScale) a step whose gradients overflowed leaves
        weights and moments as they were; the step still counts. ``after(strategy)``
        runs in the same cross-replica context once the weights are updated (the
        weight average), with ``step`` the new iteration count as a float tensor."""
        step = tf.cast(self.iterations + 1, tf.float32)  # read before the merge: same on every replica
        merge = functools.partial(self._apply_cross_replica, after=after)
        args = (list(gradients), learning_rate, step) + (() if finite is None else (finite,))
        tf.distribute.get_replica_context().merge_call(merge, args=args)

    def _apply_cross_replica(self, strategy, gradients, learning_rate, step, finite=None, *, after):
        extended = strategy.extended
        extended.update(self.iterations, lambda it: it.assign_add(1), group=False)
        for grad, var, m, v, decay in zip(gradients, self._variables, self.m, self.v, self.decay_mask):
            if grad is None:
                continue
            decay = decay and self.weight_decay > 0
            extended.update(var, self._update_one, args=(grad, m, v, learning_rate, step, finite),
                            kwargs={"decay": decay}, group=False)
        if after is not None:
            after(strategy, step)

    def _update_one(self, var, grad, m, v, learning_rate, step, finite, *, decay: bool):
        """One device's copy of one variable (runs inside ``extended.update``)."""
        if decay:  # decoupled decay from the weight before the Adam step (AdamW)
            shrink = learning_rate * self.weight_decay * var
            var.assign_sub(shrink if finite is None else tf.where(finite, shrink, tf.zeros_like(shrink)))
        if finite is None:
            return tf.raw_ops.ResourceApplyAdam(
                var=var.handle, m=m.handle, v=v.handle,
                beta1_power=tf.pow(self.beta_1, step), beta2_power=tf.pow(self.beta_2, step),
                lr=learning_rate, beta1=tf.constant(self.beta_1, tf.float32),
                beta2=tf.constant(self.beta_2, tf.float32),
                epsilon=tf.constant(self.epsilon, tf.float32), grad=grad)
        # Loss scaling: the same rule written out, masked by the step's verdict.
        grad = tf.where(tf.math.is_finite(grad), grad, tf.zeros_like(grad))
        correction = tf.sqrt(1.0 - tf.pow(self.beta_2, step)) / (1.0 - tf.pow(self.beta_1, step))
        new_m = self.beta_1 * m + (1.0 - self.beta_1) * grad
        new_v = self.beta_2 * v + (1.0 - self.beta_2) * tf.square(grad)
        update = learning_rate * correction * new_m / (tf.sqrt(new_v) + self.epsilon)
        m.assign(tf.where(finite, new_m, m))
        v.assign(tf.where(finite, new_v, v))
        return var.assign_sub(tf.where(finite, update, tf.zeros_like(update)))


class DynamicLossScale(tf.Module):
    """Loss scaling for float16 compute (mixed_float16): the loss is multiplied by
    ``scale`` so small gradients survive float16, the gradients divided back. A step
    whose gradients overflow is skipped and the scale halved; after ``growth_interval``
    good steps it doubles. The policy of Keras's LossScaleOptimizer."""

    def __init__(self, initial: float = 2.0 ** 15, growth_interval: int = 2000, name="loss_scale"):
        super().__init__(name=name)
        self.growth_interval = growth_interval
        with self.name_scope:
            self.scale = tf.Variable(initial, dtype=tf.float32, name="scale", **_FIRST)
            self.good_steps = tf.Variable(0, dtype=tf.int64, name="good_steps", **_FIRST)

    def unscale(self, gradients):
        """Gradients of the scaled loss -> true gradients, and whether all are finite."""
        gradients = [None if g is None else g / self.scale for g in gradients]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients if g is not None])
        return gradients, finite

    def update(self, finite):
        grow = tf.logical_and(finite, self.good_steps + 1 >= self.growth_interval)
        self.scale.assign(tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale),
                                   tf.maximum(self.scale / 2.0, 1.0)))
        self.good_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)),
                                        self.good_steps + 1, tf.zeros_like(self.good_steps)))
