"""tf.data input pipelines: parallel decode through the project's one decoder, a cache
of decoded and resized images (memory or file), shuffle, train-only augmentation,
batching by the global batch size, prefetch.

Images are cached as uint8 (a quarter of the memory of float32) and scaled to [0, 1]
after the cache. Augmentation runs on whole batches, with one random transform per
image, which keeps the per-element Python overhead out of the hot loop.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from engine.data import decoded_cache
from engine.data.imageio import ImageDecodeError, decode_path, prepare_rgb

AUTOTUNE = tf.data.AUTOTUNE


def _decode_to_uint8(path: bytes, size: int, crop: bool) -> np.ndarray:
    try:
        return prepare_rgb(decode_path(path.decode()), int(size), bool(crop))
    except ImageDecodeError:
        # The manifest already excluded unreadable files; a file that broke since
        # becomes a black image rather than a crashed run, and is logged by the caller.
        return np.zeros((int(size), int(size), 3), np.uint8)


def _decoded(path, size: int, crop: bool):
    """The graph op decoding one file (a string tensor) to uint8 [S, S, 3]. The file is
    read in Python, not tf.io.read_file: a manifest address may name one slice of a
    DICOM or NIfTI file (engine.data.scans)."""
    image = tf.numpy_function(_decode_to_uint8, [path, size, crop], tf.uint8, stateful=False)
    image.set_shape([size, size, 3])
    return image


def decoded_dataset(paths: list[str], labels: list[int], image_size: int,
                    cache: str = "memory", cache_path: str = "", *,
                    crop_to_head: bool = False, weights=None) -> tf.data.Dataset:
    """(uint8 image [S, S, 3], float32 label) per file, decoded in parallel (through
    imageio.prepare_rgb, as at inference), cached. With ``weights`` (one float per
    file, engine.data.sample_weights) each element carries its loss weight third."""
    files = tf.data.Dataset.from_tensor_slices(list(paths))
    targets = tf.data.Dataset.from_tensor_slices(np.asarray(labels, np.float32))
    extra = () if weights is None else (tf.data.Dataset.from_tensor_slices(np.asarray(weights, np.float32)),)

    images = files.map(lambda path: _decoded(path, image_size, crop_to_head),
                       num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = tf.data.Dataset.zip((images, targets, *extra))
    if cache == "memory":
        dataset = dataset.cache()
    elif cache == "file":
        dataset = dataset.cache(cache_path)
    return dataset


class ImageSource:
    """Decoded images for training or evaluation, wherever they are kept:

    - ``memory``: decoded once into tf.data's in-memory cache (fastest; needs the
      decoded size in RAM);
    - ``disk``: decoded once into a file (engine.data.decoded_cache), read through a
      memory map, reused by later runs on the same files and size;
    - ``none``: decoded again every epoch (no memory, no disk; costs the decode).

    Shuffling happens before the images are read (on indices) for ``disk`` and
    ``none``, so a shuffle never holds the decoded data set in its buffer."""

    def __init__(self, paths: list[str], labels, image_size: int, cache: str = "memory", *,
                 crop_to_head: bool = False, weights=None, cache_dir: str = ""):
        if cache not in ("memory", "disk", "none"):
            raise ValueError(f"unknown cache {cache!r}")
        self.paths, self.count, self.kind = list(paths), len(paths), cache
        self.image_size, self.crop_to_head = int(image_size), bool(crop_to_head)
        self.labels = np.asarray(labels, np.float32)
        self.weights = None if weights is None else np.asarray(weights, np.float32)
        self._cached = None
        self._array = None
        if cache == "memory":
            self._cached = decoded_dataset(self.paths, self.labels, image_size, "memory",
                                           crop_to_head=crop_to_head, weights=weights)
        elif cache == "disk":
            path = decoded_cache.build(self.paths, self.image_size, self.crop_to_head, cache_dir)
            self._array = decoded_cache.open_cache(path)

    def _extras(self, index):
        labels = tf.gather(tf.constant(self.labels), index)
        if self.weights is None:
            return (labels,)
        return labels, tf.gather(tf.constant(self.weights), index)

    def _read_rows(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self._array[np.asarray(indices)])

    def batches(self, batch: int, *, drop_remainder: bool = False, seed: int | None = None) -> tf.data.Dataset:
        """(uint8 images [B, S, S, 3], labels[, loss weights]) batches: in file order, or
        shuffled with ``seed`` (a new order each iteration)."""
        if self._cached is not None:
            dataset = self._cached
            if seed is not None:
                dataset = dataset.shuffle(max(self.count, 1), seed=seed, reshuffle_each_iteration=True)
            return dataset.batch(batch, drop_remainder=drop_remainder)
        indices = tf.data.Dataset.range(self.count)
        if seed is not None:
            indices = indices.shuffle(max(self.count, 1), seed=seed, reshuffle_each_iteration=True)
        size = self.image_size
        if self.kind == "none":
            paths = tf.constant(self.paths)

            def decode(index):
                return (_decoded(tf.gather(paths, index), size, self.crop_to_head), *self._extras(index))

            return indices.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True).batch(
                batch, drop_remainder=drop_remainder)

        def read(index):
            images = tf.numpy_function(self._read_rows, [index], tf.uint8, stateful=False)
            images.set_shape([None, size, size, 3])
            return (images, *self._extras(index))

        return indices.batch(batch, drop_remainder=drop_remainder).map(
            read, num_parallel_calls=AUTOTUNE, deterministic=True)


def _random_affine(batch: int, size: int, max_degrees: float, zoom: float, seed):
    """One rotation+zoom projective transform per image, about the image centre."""
    angles = tf.random.stateless_uniform([batch], seed, -1.0, 1.0) * (max_degrees * math.pi / 180)
    scales = 1.0 + tf.random.stateless_uniform([batch], seed + 1, -zoom, zoom)
    cos, sin = tf.cos(angles) / scales, tf.sin(angles) / scales
    centre = (size - 1) / 2.0
    a2 = centre - cos * centre + sin * centre
    b2 = centre - sin * centre - cos * centre
    zeros = tf.zeros_like(cos)
    return tf.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)


def augment_batch(images, seed, *, flip: bool, rotation_degrees: float, zoom: float,
                  brightness: float, contrast: float, resolution_jitter: float = 0.0,
                  gamma: float = 0.0):
    """Random left-right flip, rotation, zoom, resolution, brightness, contrast and gamma
    on a float batch in [0, 1]; ``seed`` is a shape-[2] int tensor so runs are repeatable."""
    shape = tf.shape(images)
    batch, size = shape[0], shape[1]
    if resolution_jitter > 0:
        # One factor per batch: down to a random lower resolution (area), back up
        # (bilinear), as a source of smaller pictures looks after the model's resize.
        factor = tf.random.stateless_uniform([], seed + 8, 1.0 - resolution_jitter, 1.0)
        small = tf.maximum(8, tf.cast(tf.cast(size, tf.float32) * factor, tf.int32))
        images = tf.image.resize(tf.image.resize(images, tf.stack([small, small]), method="area"),
                                 shape[1:3], method="bilinear")
    if flip:
        mask = tf.random.stateless_uniform([batch, 1, 1, 1], seed + 2) < 0.5
        images = tf.where(mask, tf.reverse(images, axis=[2]), images)
    if rotation_degrees > 0 or zoom > 0:
        transforms = _random_affine(batch, tf.cast(size, tf.float32), rotation_degrees, zoom, seed)
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=shape[1:3],
            fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    if brightness > 0:
        images += tf.random.stateless_uniform([batch, 1, 1, 1], seed + 3, -brightness, brightness)
    if contrast > 0:
        factor = tf.random.stateless_uniform([batch, 1, 1, 1], seed + 4, 1 - contrast, 1 + contrast)
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = (images - mean) * factor + mean
    images = tf.clip_by_value(images, 0.0, 1.0)
    if gamma > 0:
        exponent = tf.exp(tf.random.stateless_uniform([batch, 1, 1, 1], seed + 9, -gamma, gamma))
        images = tf.pow(images, exponent)
    return images


def mix_batch(images, labels, seed, alpha: float, loss_weights=None):
    """Mixup: each image blended with another of the same batch, its label likewise,
    with one Beta(alpha, alpha) weight per image (drawn as a ratio of Gamma draws).
    Soft labels train a smoother decision boundary from few distinct slices. Loss
    weights, if given, are blended like the labels and returned third."""
    batch = tf.shape(images)[0]
    a = tf.random.stateless_gamma([batch], seed + 5, alpha)
    b = tf.random.stateless_gamma([batch], seed + 6, alpha)
    weight = a / tf.maximum(a + b, 1e-12)
    partner = tf.argsort(tf.random.stateless_uniform([batch], seed + 7))
    w = tf.reshape(weight, [-1, 1, 1, 1])
    mixed = w * images + (1.0 - w) * tf.gather(images, partner)
    mixed_labels = weight * labels + (1.0 - weight) * tf.gather(labels, partner)
    if loss_weights is None:
        return mixed, mixed_labels
    return mixed, mixed_labels, weight * loss_weights + (1.0 - weight) * tf.gather(loss_weights, partner)


def _to_float(images, labels, *loss_weights):
    return (tf.cast(images, tf.float32) / 255.0, labels, *loss_weights)


def train_dataset(decoded, count: int, global_batch: int, config,
                  seed: int) -> tf.data.Dataset:
    """Shuffled, augmented, batched. ``decoded`` is an ImageSource (or a dataset of
    decoded elements, kept as is). Drops the last partial batch when there is at
    least one full one, as batch-norm statistics of a tiny batch are noise; the
    reshuffle each epoch means no image is dropped systematically."""
    drop = count >= global_batch
    if isinstance(decoded, ImageSource):
        dataset = decoded.batches(global_batch, drop_remainder=drop, seed=seed)
    else:
        dataset = decoded.shuffle(max(count, 1), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(global_batch, drop_remainder=drop)
    dataset = dataset.map(_to_float, num_parallel_calls=AUTOTUNE)
    if config.augment:
        counter = tf.data.Dataset.counter()
        dataset = tf.data.Dataset.zip((dataset, counter))

        def augment(batch, index):
            images, labels, *loss_weights = batch
            step_seed = tf.stack([tf.cast(seed, tf.int64), index])
            images = augment_batch(images, step_seed, flip=config.flip,
                                   rotation_degrees=config.rotation_degrees, zoom=config.zoom,
                                   brightness=config.brightness, contrast=config.contrast,
                                   resolution_jitter=config.resolution_jitter, gamma=config.gamma)
            if config.mixup > 0:
                return mix_batch(images, labels, step_seed, config.mixup, *loss_weights)
            return (images, labels, *loss_weights)

        dataset = dataset.map(augment, num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


# Each shard's shuffle and augmentation get their own seed, this far apart.
SHARD_SEED_STRIDE = 7919


def shard_indices(count: int, shards: int, seed: int) -> list[np.ndarray]:
    """The training images of each data shard: a seeded deal of ``range(count)`` into
    ``shards`` parts (sizes differ by at most one, each mixing classes and sources),
    each in file order. One shard keeps every image in file order. Pure.

    Why shards: with several workers, each decodes and caches only its own shard, so
    adding a worker adds decoding throughput and divides the memory a cache needs."""
    if shards <= 1:
        return [np.arange(count)]
    order = np.random.default_rng(seed).permutation(count)
    return [np.sort(order[index::shards]) for index in range(shards)]


def concat_shards(shard_batches: list[tf.data.Dataset]) -> tf.data.Dataset:
    """One global batch from each shard's local batch, side by side (shard 0 first):
    what the workers of a multi-worker run train on together, built in one process.
    This is what makes a one-process run with ``data_shards=N`` compute the same
    steps as N workers."""
    if len(shard_batches) == 1:
        return shard_batches[0]

    def join(*batches):
        return tuple(tf.concat(parts, axis=0) for parts in zip(*batches))

    return tf.data.Dataset.zip(tuple(shard_batches)).map(join, num_parallel_calls=AUTOTUNE)


def eval_dataset(decoded, global_batch: int) -> tf.data.Dataset:
    """In file order, every image once: the last batch may be partial."""
    batches = (decoded.batches(global_batch) if isinstance(decoded, ImageSource)
               else decoded.batch(global_batch))
    return batches.map(_to_float, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


PADDING_LABEL = -1.0  # a blank image that fills a worker's last evaluation batches


def padded_eval_dataset(source: ImageSource, batch: int, length: int) -> tf.data.Dataset:
    """Every image of ``source`` once in file order, then blank images labelled
    PADDING_LABEL up to ``length`` (not decoded), in batches of ``batch``. Workers that
    each evaluate their own part of a split must run the same number of steps of the
    same shape (each step's gather is a collective that needs every worker); whoever
    reads the results drops the padding by its label."""
    if length < source.count:
        raise ValueError(f"cannot pad {source.count} images to {length}")
    size = source.image_size
    blank = tf.data.Dataset.from_tensors((tf.zeros([size, size, 3], tf.uint8), tf.constant(PADDING_LABEL)))
    return eval_dataset(source.batches(batch).unbatch().concatenate(blank.repeat(length - source.count)), batch)


def steps_for(count: int, global_batch: int, *, drop_remainder: bool) -> int:
    if drop_remainder and count >= global_batch:
        return count // global_batch
    return max(1, math.ceil(count / global_batch))
