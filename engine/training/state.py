"""What a run carries from step to step and across a restart: the model, optimiser and
weight average with their checkpoint managers, the stop request (SIGTERM/SIGINT), and
the agreement of several workers on stopping.
"""

from __future__ import annotations

import logging
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from engine import layout
from engine.config import TrainConfig
from engine.model.resnet import build_model, decay_mask
from engine.training.ema import WeightAverage
from engine.training.optim import Adam, DynamicLossScale

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


def build_state(config: TrainConfig, strategy, folder: Path, role, resume: bool) -> TrainingState:
    """Model, optimizer, weight average and checkpoints; restored from the latest
    checkpoint when resuming."""

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


def write_checkpoint(state: TrainingState, checkpoints, number: int) -> str:
    """Save; a worker other than the chief then drops its scratch copy."""
    path = checkpoints.save(checkpoint_number=number)
    if state.scratch is not None:
        shutil.rmtree(state.scratch, ignore_errors=True)
    return path


def make_stop_agreement(strategy):
    """Returns agree(requested) -> bool: True on every worker when any worker was asked
    to stop (a sum over replicas; one small collective per step)."""

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
