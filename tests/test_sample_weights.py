"""Loss weights by duplicate group: the pure function, the pipeline carrying them,
and the compiled train step using them."""

import numpy as np
import pytest
import tensorflow as tf

from engine.data import pipeline
from engine.config import tiny_config
from engine.model.resnet import ResNet, decay_mask
from engine.training.optim import Adam
from engine.data.sample_weights import group_weights
from engine.training.steps import make_train_step, per_example_loss


def test_power_one_counts_every_group_once_and_keeps_the_mean_at_one():
    groups = [7] * 40 + [3] + [5] * 4
    weights = group_weights(groups, 1.0)
    assert weights.dtype == np.float32 and weights.shape == (45,)
    assert weights.mean() == pytest.approx(1.0, rel=1e-6)
    total = {g: weights[np.array(groups) == g].sum() for g in (7, 3, 5)}
    # Each group's weights sum to the same amount whatever its number of copies.
    assert total[7] == pytest.approx(total[3], rel=1e-5) == pytest.approx(total[5], rel=1e-5)
    half = group_weights(groups, 0.5)
    assert half[40] / half[0] == pytest.approx(np.sqrt(40), rel=1e-5)
    np.testing.assert_array_equal(group_weights(groups, 0.0), np.ones(45, np.float32))
    with pytest.raises(ValueError):
        group_weights(groups, -1.0)


def test_pipeline_carries_weights_through_augmentation_and_mixup():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    labels = (np.arange(16) % 2).astype(np.float32)
    weights = np.linspace(0.25, 1.75, 16).astype(np.float32)
    decoded = tf.data.Dataset.from_tensor_slices((images, labels, weights))
    plain = tiny_config(rotation_degrees=0.0, zoom=0.0, flip=False)
    batches = list(pipeline.train_dataset(decoded, 16, 8, plain, seed=1))
    assert all(len(b) == 3 for b in batches)
    # Shuffled, but each image keeps its own label and weight.
    for image, label, weight in zip(*[np.concatenate([b[k].numpy() for b in batches]) for k in range(3)]):
        index = int(np.argmin(np.abs(images.astype(np.float32) / 255.0 - image).sum(axis=(1, 2, 3))))
        assert label == labels[index] and weight == weights[index]
    mixed = list(pipeline.train_dataset(decoded, 16, 8, plain.replace(mixup=0.4), seed=1))
    blended = np.concatenate([b[2].numpy() for b in mixed])
    assert blended.shape == (16,) and (blended >= 0.25 - 1e-6).all() and (blended <= 1.75 + 1e-6).all()
    assert not np.isin(np.round(blended, 5), np.round(weights, 5)).all()  # blended, not copied


def _one_step(weights):
    strategy = tf.distribute.get_strategy()
    model = ResNet("resnet10", 0.125, head_units=(8,), seed=3)
    optimizer = Adam(model.trainable_variables, decay_mask(model), weight_decay=0.0)
    step = make_train_step(strategy, model, optimizer, lambda _: tf.constant(0.01))
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((8, 32, 32, 3)).astype(np.float32))
    labels = tf.constant((np.arange(8) % 2).astype(np.float32))
    logits, _ = model(images, training=True)  # the same forward pass the step's loss sees
    per_example = per_example_loss(labels, logits).numpy()
    before = [v.numpy() for v in model.trainable_variables]
    loss = float(step((images, labels, tf.constant(weights, tf.float32))))
    moved = max(float(np.abs(v.numpy() - b).max()) for v, b in zip(model.trainable_variables, before))
    return loss, per_example, moved


def test_train_step_weights_each_example_and_a_zero_weight_batch_changes_nothing():
    weights = np.array([0, 2, 0, 2, 1, 1, 0.5, 1.5], np.float32)
    loss, per_example, moved = _one_step(weights)
    # The mean over the batch of weight x loss (batch-norm batch statistics make the
    # forward pass the same in both calls; 1e-4 covers float32 reordering).
    assert loss == pytest.approx(float(np.mean(weights * per_example)), abs=1e-4)
    assert moved > 1e-4
    loss, _, moved = _one_step(np.zeros(8, np.float32))
    assert loss == 0.0 and moved == 0.0


def test_cue_balancing_weights_make_the_label_independent_of_the_cue_score():
    from engine.evaluation.shortcuts import balancing_weights
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    # A cue that agrees with the label 85% of the time.
    score = np.where(rng.random(2000) < 0.85, labels, 1 - labels) * 0.8 + rng.random(2000) * 0.2
    weights = balancing_weights(score, labels)
    assert abs(weights.mean() - 1) < 1e-5
    which = np.searchsorted(np.quantile(score, [0.2, 0.4, 0.6, 0.8]), score, side="right")
    for part in (which == b for b in range(5)):
        tumor_share = weights[part & (labels == 1)].sum() / weights[part].sum()
        assert abs(tumor_share - labels.mean()) < 0.02  # was 0.85 or 0.15 unweighted
    conflicting = (score >= 0.5) != (labels == 1)
    assert weights[conflicting].mean() > 3 * weights[~conflicting].mean()
    assert np.all(balancing_weights(score, np.ones(2000, int)) == 1)
