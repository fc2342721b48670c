"""The epoch loop: compiled steps over the inputs, validation after every epoch, the
best checkpoint kept by the run's metric, metrics.jsonl and the log written as it
goes, and a clean stop at a step boundary.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import layout, runs
from engine.config import Derived, TrainConfig
from engine.data.pipeline import PADDING_LABEL
from engine.evaluation import metric_names as names
from engine.evaluation.metrics import binary_metrics
from engine.files import atomic_open
from engine.training.ema import STATISTICS_BATCHES, make_statistics_pass
from engine.training.epoch_metrics import EpochMetrics, summary
from engine.training.inputs import TrainInputs
from engine.training.metrics_log import MetricsLog
from engine.training.optim import learning_rate_at
from engine.training.preparation import class_weights
from engine.training.progress import format_metric, format_seconds, progress_bar
from engine.training.state import NonFiniteLoss, StopRequested, TrainingState, make_stop_agreement, write_checkpoint
from engine.training.steps import make_eval_step, make_train_step

log = logging.getLogger("engine.train")


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


def build_epoch_loop(config: TrainConfig, folder: Path, strategy, role, state: TrainingState,
                      derived: Derived, train_rows, stop: StopRequested, status) -> "EpochLoop":
    """The compiled step functions, the metrics log and the stop agreement."""

    def lr_fn(step):
        return learning_rate_at(step, base_lr=config.learning_rate, total_steps=derived.total_steps,
                                warmup_steps=derived.warmup_steps, schedule=config.schedule,
                                steps_per_epoch=derived.steps_per_epoch,
                                decay_every_epochs=config.step_decay_every,
                                decay_factor=config.step_decay_factor)

    with strategy.scope():
        epoch_metrics = EpochMetrics()
    train_step = make_train_step(strategy, state.model, state.optimizer, lr_fn,
                                 class_weights=class_weights(config, [r.label for r in train_rows]),
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


def run_epochs(loop: "EpochLoop", state: TrainingState, inputs: TrainInputs, derived: Derived,
                stop: StopRequested) -> bool:
    """Train from the state's epoch to the last; returns True when a stop ended it."""
    config, folder, optimizer = loop.config, loop.folder, state.optimizer

    def save_checkpoint():
        log.info("saved checkpoint %s", write_checkpoint(state, state.manager, int(optimizer.iterations.numpy())))

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
            write_checkpoint(state, state.best_manager, epoch + 1)
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


def _validate(eval_step, val_batches) -> dict:
    """Val loss and metrics of the evaluated model, in inference mode, every image once."""
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
        format_metric(record.get(names.TRAIN_ACCURACY)), record[names.VAL_LOSS],
        record[names.VAL_ACCURACY], format_metric(record[names.VAL_AUC]),
        format_metric(record[names.VAL_SENSITIVITY]), format_metric(record[names.VAL_SPECIFICITY]),
        record[names.EPOCH_SECONDS], format_seconds(record[names.ETA_SECONDS]),
        "  *best*" if record["best"] else "")


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


def _split_metrics(split: str, labels, probabilities) -> dict:
    return {names.split_metric(split, k): v for k, v in binary_metrics(labels, probabilities).items()}
