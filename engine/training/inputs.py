"""The training and validation inputs of a run: tf.data pipelines over the manifest's
rows, distributed over the strategy's replicas and, with several workers, sharded so
that each worker reads only its part of the data.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from engine.config import TrainConfig
from engine.data import pipeline
from engine.data.decoded_cache import choose_cache
from engine.training.preparation import loss_weights

log = logging.getLogger("engine.train")


@dataclass
class TrainInputs:
    """The training and validation input of this process, built once per run.

    Training images are dealt into data shards (engine.data.pipeline.shard_indices). A
    worker of a multi-worker run decodes, caches and shuffles only its own shard, and
    its local batches form its part of each global batch, so every training image is
    decoded by one worker. One process holds every shard and joins their local batches
    into the global batch (with one shard: the plain pipeline)."""
    config: TrainConfig
    strategy: object
    shards: list  # [(shard index, engine.data.pipeline.ImageSource, image count)] of this process
    shard_count: int
    global_batch: int
    val_batches: object
    multi_worker: bool

    def batches(self, seed: int, *, skip: int = 0, take: int | None = None):
        """One epoch's distributed training batches, shuffled and augmented with ``seed``."""
        local_batch = self.global_batch // self.shard_count
        per_shard = [pipeline.train_dataset(decoded, count, local_batch, self.config,
                                            seed=seed + pipeline.SHARD_SEED_STRIDE * index)
                     for index, decoded, count in self.shards]
        dataset = pipeline.concat_shards(per_shard).skip(skip)
        if take is not None:
            dataset = dataset.take(take)
        if not self.multi_worker:
            return self.strategy.experimental_distribute_dataset(dataset)
        return _distribute_local_batches(self.strategy, dataset, self.global_batch)


def resolve_shards(config: TrainConfig, workers: int) -> int:
    """Data shards of a run: ``config.data_shards``, or one per worker. Several workers
    need one shard each (raises ValueError otherwise)."""
    shards = config.data_shards or workers
    if workers > 1 and shards != workers:
        raise ValueError(f"data_shards={config.data_shards} with {workers} workers: "
                         "each worker reads one shard, so use 0 (one per worker)")
    if config.batch_size % shards:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by {shards} data shards")
    return shards


def build_inputs(config: TrainConfig, folder: Path, strategy, role, train_rows, val_rows) -> TrainInputs:
    """Decoded (and cached) datasets of this process's data shards and of the val split."""
    shard_count = resolve_shards(config, role.workers)
    weights = loss_weights(config, train_rows)
    parts = pipeline.shard_indices(len(train_rows), shard_count, config.seed)
    mine = range(shard_count) if role.workers == 1 else [role.task_index]
    # Several workers split the val split too (worker k takes every k-th image), so no
    # worker decodes what another one does.
    my_val = val_rows if role.workers == 1 else val_rows[role.task_index::role.workers]
    local_count = sum(len(parts[index]) for index in mine) + len(my_val)
    cache, reason = choose_cache(config.cache, local_count, config.image_size)
    log.info("decoded images: %s", reason)
    cache_dir = config.cache_dir or str(folder.resolve().parent / ".decoded_cache")
    local_batch = config.batch_size // shard_count
    shards = []
    for index in mine:
        rows = [train_rows[i] for i in parts[index]]
        if len(train_rows) >= config.batch_size and len(rows) < local_batch:
            raise ValueError(f"data shard {index} has {len(rows)} training images, fewer than its "
                             f"local batch of {local_batch}")
        source = pipeline.ImageSource(
            [r.path for r in rows], [r.label for r in rows], config.image_size, cache,
            crop_to_head=config.crop_to_head, cache_dir=cache_dir,
            weights=None if weights is None else weights[parts[index]])
        shards.append((index, source, len(rows)))
    if shard_count > 1:
        log.info("data shards: %d of %d training images in shard(s) %s of %d decoded by this process",
                 sum(count for _, _, count in shards), len(train_rows),
                 ", ".join(str(i) for i, _, _ in shards), shard_count)
    val_source = pipeline.ImageSource([r.path for r in my_val], [r.label for r in my_val],
                                      config.image_size, cache, crop_to_head=config.crop_to_head,
                                      cache_dir=cache_dir)
    if role.workers == 1:
        val_batches = strategy.experimental_distribute_dataset(
            _sharded(pipeline.eval_dataset(val_source, config.batch_size)))
    else:
        val_batches = _worker_val_batches(strategy, val_source, len(val_rows), role.workers, local_batch)
    return TrainInputs(config, strategy, shards, shard_count, config.batch_size, val_batches,
                       multi_worker=role.workers > 1)


def _worker_val_batches(strategy, source, total: int, workers: int, local_batch: int):
    """This worker's part of the val split as distributed batches: padded to the same
    whole number of local batches on every worker (the largest part, rounded up), so all
    workers run the same eval steps; _validate drops the padding after the gather."""

    length = math.ceil(math.ceil(total / workers) / local_batch) * local_batch
    dataset = pipeline.padded_eval_dataset(source, local_batch, length)
    return _distribute_local_batches(strategy, dataset, local_batch * workers)


def _distribute_local_batches(strategy, dataset, global_batch: int):
    """Distribute a dataset of this worker's own local batches (each worker reads its
    own data): split over the worker's replicas (GPUs) when it has several."""

    def worker_input(context):
        here = context.num_replicas_in_sync // context.num_input_pipelines
        if here <= 1:
            return dataset
        return dataset.unbatch().batch(context.get_per_replica_batch_size(global_batch), drop_remainder=True)
    return strategy.distribute_datasets_from_function(worker_input)


def _sharded(dataset):
    """Each worker takes its part of every global batch (auto-sharding by data: the
    pipeline reads file paths, not sharded files). A no-op on one worker."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
