"""Training: ``train_and_evaluate(config, workdir)`` and the ``python -m engine.train``
command line over it.

The loop writes everything a reader needs into the run folder (see engine.runs):
config.json, manifest.csv, metrics.jsonl, status.json, train.log, checkpoints and,
at the end, the best model exported as a SavedModel. SIGTERM or SIGINT finishes the
current step, saves a checkpoint and ends the run as stopped; a non-finite loss ends
it as failed, naming the step.

One function per phase, each in its own module: ``preparation`` (scan, split, label
review, loss weights), ``state`` (model, optimiser, checkpoints, stop), ``inputs``
(tf.data over the manifest, sharded across workers), ``epochs`` (the compiled step loop
and validation) and ``finish`` (export, final evaluation, shortcut audit). This module
runs them in order.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import tensorflow as tf

from engine import layout, runs
from engine.config import Derived, TrainConfig
from engine.data.manifest import ScanStopped, rows_for_split, rows_for_training
from engine.data.pipeline import steps_for
from engine.model.resnet import count_parameters
from engine.request import RunRequest
from engine.training.distribute import make_strategy, worker_role
from engine.training.epochs import build_epoch_loop, run_epochs
from engine.training.finish import environment_record, finish_run, write_shortcut_audit
from engine.training.inputs import build_inputs, resolve_shards
from engine.training.preparation import apply_label_review, prepare_data, scan
from engine.training.progress import format_seconds, setup_logging
from engine.training.state import NonFiniteLoss, StopRequested, build_state

# Callers import these from here (the entry points, the CV, the launcher, the tests).
__all__ = ["NonFiniteLoss", "StopRequested", "apply_label_review", "derive", "prepare_data", "resolve_shards",
           "scan", "train_and_evaluate", "write_shortcut_audit"]

log = logging.getLogger("engine.train")


def train_and_evaluate(config: TrainConfig, workdir: str | os.PathLike, *, resume: bool = False,
                       stop: StopRequested | None = None, final_evaluation: bool = True) -> dict:
    """Train ``config`` in run folder ``workdir`` (created if needed) and return the
    final status. With ``resume`` the run continues from its latest checkpoint, with
    the config and manifest stored in the folder. ``final_evaluation`` calibrates on
    the val split and evaluates val and test at the end; engine.cv turns it off, as a
    fold's val split must not calibrate its own score."""
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


def _train(config: TrainConfig, folder: Path, resume: bool, stop: StopRequested,
           final_evaluation: bool = True, status=runs.write_status) -> dict:
    """The run's phases: strategy, data, model state, inputs and step functions, the
    epochs, then export and evaluation (finish_run)."""
    strategy = make_strategy(config.devices, config.collective)
    role = worker_role()
    chief = role.is_chief
    if role.workers > 1 and stop.installed:
        # MultiWorkerMirroredStrategy's coordination service takes SIGTERM over for its
        # preemption notice; take it back so a stop request reaches this loop.
        stop.install()



    tf.random.set_seed(config.training_seed)
    rows, _ = prepare_data(config, folder, resume, write=chief, stop=stop)
    train_rows, val_rows = rows_for_training(rows, "train"), rows_for_training(rows, "val")
    derived = derive(config, len(train_rows), len(val_rows), len(rows_for_split(rows, "test")),
                     strategy.num_replicas_in_sync)
    state = build_state(config, strategy, folder, role, resume)
    params = count_parameters(state.model)
    if chief:
        RunRequest(config).write(folder, derived={**derived.__dict__, "parameters": params},
                                 environment={**environment_record(strategy), "workers": role.workers})
    log.info("model %s width %.3g: %s parameters; %d replica(s), global batch %d, %d steps/epoch",
             config.preset, config.width, f"{params:,}", derived.replicas, derived.global_batch_size,
             derived.steps_per_epoch)
    inputs = build_inputs(config, folder, strategy, role, train_rows, val_rows)
    loop = build_epoch_loop(config, folder, strategy, role, state, derived, train_rows, stop, status)
    stopping = run_epochs(loop, state, inputs, derived, stop)
    if not chief:  # the chief exports and evaluates; nothing else needs this worker
        return status(folder, runs.STOPPED if stopping else runs.FINISHED)
    if not stopping:
        log.info("finished in %s", format_seconds(time.time() - loop.started))
    return finish_run(config, folder, derived, state.best_manager, status, final_evaluation and not stopping,
                   (stop.signal_name or "a stop on another worker") if stopping else None)


def derive(config: TrainConfig, train_images: int, val_images: int, test_images: int,
           replicas: int) -> Derived:
    """The values a run computes from its config and data (pure); raises ValueError
    for a split or batch size that cannot train."""
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
