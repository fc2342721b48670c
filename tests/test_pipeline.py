"""The training input pipeline's augmentation and mixup, on real tensors."""

import numpy as np
import tensorflow as tf

from engine.data import pipeline
from engine.config import tiny_config


def _decoded(count=16, size=8):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    labels = (np.arange(count) % 2).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((images, labels)), images, labels


def test_mixup_blends_images_and_labels_with_the_same_weight():
    images = tf.constant(np.random.default_rng(1).uniform(0, 1, (32, 4, 4, 3)).astype(np.float32))
    labels = tf.constant((np.arange(32) % 2).astype(np.float32))
    mixed, soft = pipeline.mix_batch(images, labels, tf.constant([3, 4], tf.int64), 0.4)
    mixed, soft = mixed.numpy(), soft.numpy()
    assert ((soft >= 0) & (soft <= 1)).all() and len(np.unique(np.round(soft, 4))) > 4
    # Each mixed image is w*x_i + (1-w)*x_j for some partner j, the label w*y_i + (1-w)*y_j.
    x, y = images.numpy(), labels.numpy()
    for i in range(32):
        fits = []
        for j in range(32):
            d = x[i] - x[j]
            if np.abs(d).max() < 1e-6:
                w = 1.0
            else:
                w = float(np.sum((mixed[i] - x[j]) * d) / np.sum(d * d))
            if np.abs(w * x[i] + (1 - w) * x[j] - mixed[i]).max() < 1e-5:
                fits.append(abs(w * y[i] + (1 - w) * y[j] - soft[i]) < 1e-5)
        assert any(fits), i
    again, _ = pipeline.mix_batch(images, labels, tf.constant([3, 4], tf.int64), 0.4)
    np.testing.assert_array_equal(again.numpy(), mixed)  # seeded: a resumed run sees the same


def test_train_dataset_with_mixup_gives_soft_labels_and_without_it_hard_ones():
    decoded, _, _ = _decoded()
    plain = tiny_config(rotation_degrees=0.0, zoom=0.0)
    for config, soft_expected in ((plain, False), (plain.replace(mixup=0.4), True)):
        labels = np.concatenate([y.numpy() for _, y in pipeline.train_dataset(decoded, 16, 8, config, seed=1)])
        soft = ((labels > 0.01) & (labels < 0.99)).any()
        assert soft == soft_expected
        assert labels.shape == (16,) and ((labels >= 0) & (labels <= 1)).all()


def _write_pngs(folder, count=12, size=20):
    from PIL import Image
    rng = np.random.default_rng(3)
    paths = []
    for index in range(count):
        path = folder / f"img{index}.png"
        Image.fromarray(rng.integers(0, 256, (size, size + index % 3, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_every_cache_gives_the_same_images_in_the_same_shuffled_order(tmp_path):
    """memory, disk and none are storage choices only: the same seed gives the same
    batches, pixel for pixel, labels and loss weights with them."""
    paths = _write_pngs(tmp_path)
    labels, weights = np.arange(12) % 2, np.linspace(0.5, 1.5, 12)
    batches = {}
    for cache in ("memory", "disk", "none"):
        source = pipeline.ImageSource(paths, labels, 16, cache, weights=weights, cache_dir=str(tmp_path / "c"))
        batches[cache] = [[t.numpy() for t in batch] for batch in source.batches(5, seed=7)]
        in_order = np.concatenate([b[0].numpy() for b in source.batches(5)])
        assert in_order.shape == (12, 16, 16, 3)
    for cache in ("disk", "none"):
        assert len(batches[cache]) == len(batches["memory"]) == 3
        for got, want in zip(batches[cache], batches["memory"]):
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b)
    order = np.concatenate([b[1] for b in batches["memory"]])
    assert sorted(order.tolist()) == sorted(labels.astype(np.float32).tolist())


def test_the_disk_cache_is_keyed_by_the_files_and_rebuilt_when_one_changes(tmp_path):
    from engine.data import decoded_cache
    paths = _write_pngs(tmp_path, count=4)
    first = decoded_cache.build(paths, 16, False, tmp_path / "c")
    assert decoded_cache.build(paths, 16, False, tmp_path / "c") == first  # reused
    assert decoded_cache.build(paths, 24, False, tmp_path / "c") != first  # another size
    import os
    os.utime(paths[2], ns=(1, 1))  # a changed file
    assert decoded_cache.build(paths, 16, False, tmp_path / "c") != first
    assert not list((tmp_path / "c").glob("*.partial-*"))


def test_auto_keeps_decoded_images_in_memory_only_while_they_fit():
    from engine.data.decoded_cache import choose_cache
    gib = 2**30
    assert choose_cache("auto", 3000, 128, memory=24 * gib)[0] == "memory"  # Br35H: 0.15 GB
    kind, reason = choose_cache("auto", 500_000, 224, memory=24 * gib)  # 75 GB
    assert kind == "disk" and "on disk" in reason
    assert choose_cache("none", 10, 32)[0] == "none" and choose_cache("file", 10, 32)[0] == "disk"


def test_data_shards_partition_the_training_images_and_join_into_global_batches():
    parts = pipeline.shard_indices(11, 3, seed=5)
    joined = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(joined, np.arange(11))  # every image in exactly one shard
    assert sorted(len(p) for p in parts) == [3, 4, 4]
    np.testing.assert_array_equal(pipeline.shard_indices(11, 1, seed=5)[0], np.arange(11))  # one: file order
    first = tf.data.Dataset.from_tensor_slices((np.zeros((4, 2), np.float32), np.zeros(4, np.float32))).batch(2)
    second = tf.data.Dataset.from_tensor_slices((np.ones((4, 2), np.float32), np.ones(4, np.float32))).batch(2)
    images, labels = next(iter(pipeline.concat_shards([first, second])))
    assert images.shape == (4, 2) and labels.numpy().tolist() == [0, 0, 1, 1]  # shard 0 first


def test_several_workers_need_one_shard_each():
    import pytest

    from engine.training.loop import resolve_shards
    assert resolve_shards(tiny_config(), 1) == 1 and resolve_shards(tiny_config(data_shards=2), 1) == 2
    assert resolve_shards(tiny_config(), 2) == 2
    with pytest.raises(ValueError, match="one shard"):
        resolve_shards(tiny_config(data_shards=4), 2)
    with pytest.raises(ValueError, match="not divisible"):
        resolve_shards(tiny_config(batch_size=9, data_shards=2), 1)


def test_a_workers_val_part_is_padded_to_whole_batches_with_blank_labelled_images(tmp_path):
    """Several workers score their own part of the val split in the same number of equal
    steps: every real image once in file order, then blank images labelled PADDING_LABEL."""
    import pytest
    paths = _write_pngs(tmp_path)[:5]
    for cache in ("memory", "none"):
        source = pipeline.ImageSource(paths, [1, 0, 1, 0, 1], 16, cache)
        batches = list(pipeline.padded_eval_dataset(source, 4, 8))
        assert [b[0].shape[0] for b in batches] == [4, 4]
        images = np.concatenate([b[0].numpy() for b in batches])
        labels = np.concatenate([b[1].numpy() for b in batches])
        assert labels.tolist() == [1, 0, 1, 0, 1] + [pipeline.PADDING_LABEL] * 3
        plain = np.concatenate([b[0].numpy() for b in pipeline.eval_dataset(source, 4)])
        np.testing.assert_array_equal(images[:5], plain)
        assert not images[5:].any()
        with pytest.raises(ValueError, match="cannot pad"):
            pipeline.padded_eval_dataset(source, 4, 4)


def test_resolution_jitter_and_gamma_keep_shape_range_and_repeat():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((4, 32, 32, 3)), tf.float32)
    seed = tf.constant([3, 1], tf.int64)
    kwargs = dict(flip=False, rotation_degrees=0.0, zoom=0.0, brightness=0.0, contrast=0.0,
                  resolution_jitter=0.6, gamma=0.5)
    first = pipeline.augment_batch(images, seed, **kwargs).numpy()
    again = pipeline.augment_batch(images, seed, **kwargs).numpy()
    assert first.shape == (4, 32, 32, 3) and first.min() >= 0 and first.max() <= 1
    assert np.array_equal(first, again)
    assert not np.allclose(first, images.numpy(), atol=0.05)  # something happened
    plain = pipeline.augment_batch(images, seed, **{**kwargs, "resolution_jitter": 0.0, "gamma": 0.0}).numpy()
    assert np.allclose(plain, images.numpy())
