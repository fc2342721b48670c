"""Training metrics of the current epoch, accumulated on the device by the compiled
train step and fetched by the loop every ``log_every_steps`` steps.

Why: gathering every step's probabilities and labels to the host (for the train AUC)
and reading the loss after every step made each step a host round trip. Here a step
adds to a few running sums instead: the loss sum, the example count, the confusion
counts at 0.5 and, for the ROC AUC, two histograms of the logits (tumor and no-tumor
examples). The first step with a non-finite loss is recorded on the device too, so the
NaN check costs one element-wise op per step and is read at each fetch.

The train AUC from the histograms counts a tumor/no-tumor pair that falls in the same
bin (logit width 2 * LOGIT_RANGE / BINS = 0.01) as half right, like a tie; it differs
from the exact AUC by at most the share of such pairs (tests check it against
scikit-learn). Validation and test AUCs stay exact (engine.evaluation.metrics).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from engine.evaluation import metric_names as names
from engine.evaluation.metrics import confusion_metrics

BINS = 2400
LOGIT_RANGE = 12.0  # logits beyond +-12 (probabilities within 6e-6 of 0 or 1) share the end bins


class EpochMetrics(tf.Module):
    """Running sums; create inside ``strategy.scope()``, update in cross-replica context."""

    def __init__(self, name: str = "epoch_metrics"):
        super().__init__(name=name)
        zeros = dict(trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        with self.name_scope:
            self.loss_sum = tf.Variable(0.0, dtype=tf.float64, name="loss_sum", **zeros)
            # [count, true positives, false positives, true negatives, false negatives]
            self.counts = tf.Variable(tf.zeros([5], tf.int64), name="counts", **zeros)
            self.histograms = tf.Variable(tf.zeros([2, BINS], tf.int64), name="histograms", **zeros)
            self.first_non_finite_step = tf.Variable(tf.constant(-1, tf.int64),
                                                     name="first_non_finite_step", **zeros)
            self.first_non_finite_loss = tf.Variable(0.0, name="first_non_finite_loss", **zeros)

    def reset(self) -> None:
        self.loss_sum.assign(0.0)
        self.counts.assign(tf.zeros_like(self.counts))
        self.histograms.assign(tf.zeros_like(self.histograms))
        self.first_non_finite_step.assign(-1)
        self.first_non_finite_loss.assign(0.0)

    def update(self, mean_loss, sums, step) -> None:
        """``mean_loss``: the step's global mean loss; ``sums``: ``local_sums`` added up
        over replicas; ``step``: the optimizer's iteration count after the step."""
        count = sums[0]
        self.loss_sum.assign_add(tf.cast(mean_loss, tf.float64) * tf.cast(count, tf.float64))
        self.counts.assign_add(sums[:5])
        self.histograms.assign_add(tf.reshape(sums[5:], [2, BINS]))
        bad = tf.logical_and(self.first_non_finite_step < 0, tf.logical_not(tf.math.is_finite(mean_loss)))
        self.first_non_finite_step.assign(tf.where(bad, tf.cast(step, tf.int64), self.first_non_finite_step))
        self.first_non_finite_loss.assign(tf.where(bad, tf.cast(mean_loss, tf.float32), self.first_non_finite_loss))

    def fetch(self) -> dict:
        """Host copy: loss, count, confusion counts, histograms, first non-finite step."""
        counts = self.counts.numpy()
        count = int(counts[0])
        return {"count": count, "loss": float(self.loss_sum.numpy()) / count if count else None,
                "tp": int(counts[1]), "fp": int(counts[2]), "tn": int(counts[3]), "fn": int(counts[4]),
                "histograms": self.histograms.numpy(),
                "first_non_finite_step": int(self.first_non_finite_step.numpy()),
                "first_non_finite_loss": float(self.first_non_finite_loss.numpy())}


def local_sums(logits, labels):
    """One replica's contribution as one int64 vector (one all-reduce per step):
    count, tp, fp, tn, fn at probability 0.5 (logit 0), then the tumor and no-tumor
    logit histograms. Soft (mixup) labels count as the class they lean to."""
    positive = labels >= 0.5
    predicted = logits >= 0.0

    def total(mask):
        return tf.reduce_sum(tf.cast(mask, tf.int64))
    confusion = tf.stack([
        tf.cast(tf.size(labels), tf.int64),
        total(positive & predicted), total(~positive & predicted),
        total(~positive & ~predicted), total(positive & ~predicted)])
    value_range = tf.constant([-LOGIT_RANGE, LOGIT_RANGE], tf.float32)
    # The histogram op rejects NaN; a NaN step fails the run at the next fetch anyway.
    logits = tf.where(tf.math.is_nan(logits), tf.zeros_like(logits), logits)
    histograms = [tf.cast(tf.histogram_fixed_width(tf.boolean_mask(logits, mask), value_range, BINS), tf.int64)
                  for mask in (positive, ~positive)]
    return tf.concat([confusion] + histograms, axis=0)


def auc_from_histograms(histograms) -> float | None:
    """ROC AUC from per-class histograms of a score ([positives, negatives], same bins):
    P(score of a positive > score of a negative) + 0.5 P(same bin). None with one class."""
    positives, negatives = (np.asarray(h, np.float64) for h in histograms)
    n_pos, n_neg = positives.sum(), negatives.sum()
    if n_pos == 0 or n_neg == 0:
        return None
    negatives_below = np.cumsum(negatives) - negatives  # negatives in lower bins
    wins = np.sum(positives * negatives_below) + 0.5 * np.sum(positives * negatives)
    return float(wins / (n_pos * n_neg))


def summary(fetched: dict) -> dict:
    """The epoch's train metrics under the names metrics.jsonl uses."""
    counts = confusion_metrics(*(fetched[k] for k in ("tp", "fp", "tn", "fn")))
    return {names.TRAIN_LOSS: fetched["loss"],
            names.TRAIN_ACCURACY: counts["accuracy"],
            names.TRAIN_AUC: auc_from_histograms(fetched["histograms"]),
            names.TRAIN_SENSITIVITY: counts["sensitivity"],
            names.TRAIN_SPECIFICITY: counts["specificity"]}
