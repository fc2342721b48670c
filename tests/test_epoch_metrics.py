"""The device-side epoch sums the train step keeps (engine.training.epoch_metrics) against the
exact host-side metrics (scikit-learn) on the same logits."""

import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from engine.evaluation import metric_names as names
from engine.training.epoch_metrics import BINS, LOGIT_RANGE, EpochMetrics, auc_from_histograms, local_sums, summary
from engine.evaluation.metrics import binary_metrics


def _accumulate(logit_batches, label_batches, losses):
    metrics = EpochMetrics()
    for step, (logits, labels, loss) in enumerate(zip(logit_batches, label_batches, losses), start=1):
        sums = local_sums(tf.constant(logits, tf.float32), tf.constant(labels, tf.float32))
        metrics.update(tf.constant(loss, tf.float32), sums, tf.constant(step, tf.int64))
    return metrics.fetch()


def test_sums_over_an_epoch_match_the_exact_metrics():
    rng = np.random.default_rng(0)
    labels = [(rng.random(32) < 0.5).astype(np.float32) for _ in range(20)]
    # Overlapping classes, with a spread of logits wider than the histogram's range.
    logits = [(2.0 * y - 1.0) * 1.5 + 3.0 * rng.standard_normal(32) for y in labels]
    logits[3][:4] = [40.0, -40.0, 0.0, -1e-7]  # ends of the range, and exactly at the threshold
    losses = list(rng.random(20))
    fetched = _accumulate(logits, labels, losses)
    all_labels, all_logits = np.concatenate(labels), np.concatenate(logits)
    assert fetched["count"] == 640
    assert fetched["histograms"].sum() == 640
    assert abs(fetched["loss"] - np.mean(losses)) < 1e-6  # float32 losses, float64 sum
    exact = binary_metrics(all_labels, 1.0 / (1.0 + np.exp(-all_logits)))
    result = summary(fetched)
    for ours, theirs in ((names.TRAIN_ACCURACY, "accuracy"), (names.TRAIN_SENSITIVITY, "sensitivity"),
                         (names.TRAIN_SPECIFICITY, "specificity")):
        assert result[ours] == exact[theirs]  # the same counts: exactly equal
    # Pairs in one bin of width 24/2400 = 0.01 count half: with ~640 logits spread
    # over ~6 units the share of such pairs is ~1e-3, and so is the AUC's error.
    assert abs(result[names.TRAIN_AUC] - roc_auc_score(all_labels, all_logits)) < 2e-3
    assert fetched["first_non_finite_step"] == -1


def test_auc_from_histograms_is_exact_without_shared_bins():
    positives, negatives = np.zeros(BINS), np.zeros(BINS)
    positives[[10, 900, 2000]] = [1, 2, 1]
    negatives[[5, 950, 1999]] = [3, 1, 1]
    scores = [10] + [900] * 2 + [2000] + [5] * 3 + [950, 1999]
    labels = [1] * 4 + [0] * 5
    assert auc_from_histograms([positives, negatives]) == roc_auc_score(labels, scores)
    assert auc_from_histograms([positives, np.zeros(BINS)]) is None


def test_the_first_non_finite_step_and_its_loss_are_kept():
    labels = [np.array([0.0, 1.0], np.float32)] * 4
    logits = [np.array([-1.0, 1.0]), np.array([np.nan, 1.0]), np.array([-1.0, 1.0]), np.array([-1.0, 1.0])]
    fetched = _accumulate(logits, labels, [0.3, float("nan"), float("inf"), 0.3])
    assert fetched["first_non_finite_step"] == 2
    assert np.isnan(fetched["first_non_finite_loss"])
    metrics = EpochMetrics()
    metrics.update(tf.constant(0.5), local_sums(tf.constant([0.0]), tf.constant([1.0])), tf.constant(1, tf.int64))
    metrics.reset()
    assert metrics.fetch()["count"] == 0 and metrics.fetch()["loss"] is None


def test_logits_beyond_the_range_land_in_the_end_bins():
    sums = local_sums(tf.constant([-2 * LOGIT_RANGE, 2 * LOGIT_RANGE]), tf.constant([0.0, 1.0])).numpy()
    positives, negatives = sums[5:5 + BINS], sums[5 + BINS:]
    assert positives[-1] == 1 and negatives[0] == 1 and sums[:5].tolist() == [2, 1, 0, 1, 0]
