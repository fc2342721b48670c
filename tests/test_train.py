"""Whole-training tests on tiny synthetic data in temporary run folders."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, write_class_folders
from engine import runs
from engine.config import tiny_config
from engine.model.resnet import build_model
from engine.training.loop import StopRequested, train_and_evaluate


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_class_folders(tmp_path_factory.mktemp("data"), per_class=40)


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    config = tiny_config(data_dir=str(data_dir), epochs=4, dedup_distance=-1)
    status = train_and_evaluate(config, folder)
    return config, folder, status


def test_short_run_learns_a_separable_task(finished_run):
    _, folder, status = finished_run
    assert status["state"] == "finished", status.get("error")
    epochs = runs.read_metrics(folder, "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert epochs[-1]["val/accuracy"] > 0.9
    assert epochs[-1]["train/loss"] < epochs[0]["train/loss"]
    steps = runs.read_metrics(folder, "step")
    assert steps and all(s["lr"] > 0 and s["images_per_second"] > 0 for s in steps)
    # The train figures come from the step's device-side sums, fetched every
    # log_every_steps (2) steps and at each epoch's end (7 steps an epoch).
    for epoch in epochs:
        for name in ("train/accuracy", "train/auc", "train/sensitivity", "train/specificity"):
            assert 0.0 <= epoch[name] <= 1.0, (name, epoch)
    assert epochs[-1]["train/auc"] > epochs[0]["train/auc"] or epochs[0]["train/auc"] > 0.95
    assert [s["step"] for s in steps] == [n for n in range(1, 29) if n % 2 == 0 or n % 7 == 0]


def test_run_folder_has_everything_a_reader_needs(finished_run):
    config, folder, _ = finished_run
    stored = json.loads((folder / "config.json").read_text())
    assert stored["config"] == json.loads(config.to_json())
    assert stored["derived"]["steps_per_epoch"] == 56 // 8
    assert stored["environment"]["tensorflow"] == tf.__version__
    for name in ("manifest.csv", "data_summary.json", "metrics.jsonl", "status.json",
                 "train.log", "export/saved_model.pb", "model.json"):
        assert (folder / name).exists(), name
    assert list((folder / "tb").glob("events.out.tfevents.*"))
    assert tf.train.latest_checkpoint(str(folder / "checkpoints"))


def test_exported_saved_model_predicts_what_the_model_predicts(finished_run):
    config, folder, _ = finished_run
    model = build_model(config)
    best = tf.train.latest_checkpoint(str(folder / "checkpoints" / "best"))
    tf.train.Checkpoint(model=model).restore(best).expect_partial()
    images = tf.random.stateless_uniform([5, 32, 32, 3], seed=[1, 2])
    # The export averages each image with its mirror (flip test-time augmentation).
    plain, _ = model(images, training=False)
    mirrored, _ = model(tf.reverse(images, axis=[2]), training=False)
    expected = ((plain + mirrored) / 2).numpy()
    loaded = tf.saved_model.load(str(folder / "export"))
    out = loaded.signatures["serving_float"](images=images)
    # Eager ops vs the SavedModel's graph (fused and reordered float32 sums): logits of
    # order 1 through ~10 layers move by well under 1e-4.
    np.testing.assert_allclose(out["logit"].numpy(), expected, rtol=0, atol=1e-4)
    # Every signature applies the calibration stamped into the export (model.json's).
    info = json.loads((folder / "model.json").read_text())
    assert float(loaded.temperature.numpy()) == pytest.approx(info["temperature"], abs=1e-6)
    np.testing.assert_allclose(out["probability"].numpy(), tf.sigmoid(expected / info["temperature"]).numpy(),
                               rtol=0, atol=1e-5)
    pixels = tf.cast(tf.round(images * 255), tf.uint8)
    explained = loaded.signatures["explain"](pixels=pixels)
    assert explained["cam"].shape == (5, 32, 32)
    np.testing.assert_allclose(explained["probability"].numpy(),
                               loaded.signatures["serving_prepared"](pixels=pixels)["probability"].numpy(), atol=1e-5)


def test_resume_continues_at_the_right_epoch_and_optimizer_step(finished_run, tmp_path):
    config, folder, _ = finished_run
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    steps_per_epoch = json.loads((copy / "config.json").read_text())["derived"]["steps_per_epoch"]
    status = train_and_evaluate(config.replace(epochs=6), copy, resume=True)
    assert status["state"] == "finished", status.get("error")
    epochs = runs.read_metrics(copy, "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4, 5, 6]
    assert epochs[4]["step"] == 5 * steps_per_epoch
    assert epochs[-1]["step"] == 6 * steps_per_epoch
    log = (copy / "train.log").read_text()
    assert f"at epoch 4, step {4 * steps_per_epoch}" in log


def test_stop_request_saves_checkpoint_and_marks_stopped(data_dir, tmp_path):
    class AfterPreparation(StopRequested):
        """As if SIGTERM arrived during the first step: requested once the data are
        prepared (a stop during preparation ends the run before any checkpoint)."""
        @property
        def requested(self):
            return (tmp_path / "manifest.csv").exists()

        @requested.setter
        def requested(self, value):
            pass

    stop = AfterPreparation()
    status = train_and_evaluate(tiny_config(data_dir=str(data_dir), dedup_distance=-1), tmp_path, stop=stop)
    assert status["state"] == "stopped"
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-1")


def test_non_finite_loss_fails_the_run_naming_the_step(data_dir, tmp_path, monkeypatch):
    """A NaN learning rate at the second step makes the weights NaN, so the real
    compiled step's loss is NaN at step 3 on every CPU (provoking one through an
    absurd but finite learning rate overflows on some kernels and not on others). The
    device-side check records the step; the loop reads it at its next fetch."""
    import engine.training.steps
    real_make_train_step = engine.training.steps.make_train_step

    def make_faulty_train_step(strategy, model, optimizer, learning_rate_fn, **kwargs):
        def poisoned(step):  # NaN at the second step: NaN weights, so step 3's loss is NaN
            return tf.where(tf.equal(step, 1), tf.constant(float("nan")), learning_rate_fn(step))
        return real_make_train_step(strategy, model, optimizer, poisoned, **kwargs)

    import engine.training.epochs  # the epoch loop builds its step with the name it imported
    monkeypatch.setattr(engine.training.epochs, "make_train_step", make_faulty_train_step)
    config = tiny_config(data_dir=str(data_dir), dedup_distance=-1, epochs=3)
    status = train_and_evaluate(config, tmp_path)
    assert status["state"] == "failed"
    assert "non-finite loss (nan) at step 3 " in status["error"]
    # The checkpoint of the last good state is kept; nothing after the NaN was written.
    assert all(r["step"] < 3 for r in runs.read_metrics(tmp_path, "step"))


def test_sigterm_to_the_cli_process_stops_cleanly(data_dir, tmp_path):
    folder = tmp_path / "run"
    config_file = tmp_path / "config.json"
    config_file.write_text(tiny_config(data_dir=str(data_dir), epochs=200, dedup_distance=-1).to_json())
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.train", "--config", str(config_file), "--run-dir", str(folder)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    deadline = time.time() + 120
    while time.time() < deadline and not runs.read_metrics(folder, "epoch"):
        assert process.poll() is None, "training exited early"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    status = runs.read_status(folder)
    assert status["state"] == "stopped" and status["stopped_by"] == "SIGTERM"
    checkpoint = tf.train.latest_checkpoint(str(folder / "checkpoints"))
    model = build_model(tiny_config())
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial().assert_existing_objects_matched()


def test_disk_cache_and_two_logical_devices(data_dir, tmp_path):
    """Data that does not fit in memory is cached on disk (a memory-mapped file per
    shard and split, reused by the next run on the same files); devices=cpu:2 trains on
    two replicas (the CPU split by conftest); loss weights by duplicate group travel
    with the cached images to both replicas and into the weight average's pass."""
    config = tiny_config(data_dir=str(data_dir), epochs=1, dedup_distance=-1, cache="disk",
                         cache_dir=str(tmp_path / "decoded"), devices="cpu:2", group_weighting=1.0)
    status = train_and_evaluate(config, tmp_path / "run", final_evaluation=False)  # evaluation: other tests
    assert status["state"] == "finished", status.get("error")
    log = (tmp_path / "run" / "train.log").read_text()
    assert "group weighting 1: loss weights" in log and "decoded images: cache=disk as asked" in log
    caches = sorted((tmp_path / "decoded").glob("*.npy"))
    assert len(caches) == 2  # the train shard and val
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["derived"]["replicas"] == 2 and stored["derived"]["per_replica_batch_size"] == 4
    assert len(stored["environment"]["devices"]) == 2
    # A second run on the same files and size decodes nothing: it reuses both files.
    again = train_and_evaluate(config.replace(devices="cpu"), tmp_path / "again", final_evaluation=False)
    assert again["state"] == "finished"
    assert (tmp_path / "again" / "train.log").read_text().count("reused") == 2
    assert sorted((tmp_path / "decoded").glob("*.npy")) == caches


class _StopAfterSteps(StopRequested):
    """A stop request that arrives on the loop's ``asks + 1``-th question, as a SIGTERM
    would in the middle of an epoch. The loop asks once after each step and once at
    the end of each epoch."""

    def __init__(self, asks):
        super().__init__()
        self.signal_name, self._asked, self._asks = "SIGTERM", 0, asks

    @property
    def requested(self):
        self._asked += 1
        return self._asked > self._asks

    @requested.setter
    def requested(self, value):
        pass


def test_stop_mid_epoch_then_resume_trains_like_an_uninterrupted_run(data_dir, tmp_path):
    """Stopped after step 10 of 14 (7 steps in epoch 1, 3 in epoch 2) and resumed, the run trains on the
    batches it had not seen, in the same order: its final weights are the
    uninterrupted run's. Its progress never goes back, and its duration counts both
    segments of training."""
    config = tiny_config(data_dir=str(data_dir), epochs=2, dedup_distance=-1, ema_decay=0.0)
    whole = train_and_evaluate(config, tmp_path / "whole", final_evaluation=False)
    assert whole["state"] == "finished"
    folder = tmp_path / "split"
    stopped = train_and_evaluate(config, folder, stop=_StopAfterSteps(7 + 1 + 2), final_evaluation=False)
    assert stopped["state"] == "stopped"
    steps_before = [s["step"] for s in runs.read_metrics(folder, "step")]
    assert max(steps_before) == 10  # the step lines up to the stop checkpoint
    first_segment = runs.read_status(folder)["active_seconds"]
    time.sleep(1.5)  # idle time between stop and resume is not training time
    status = train_and_evaluate(config, folder, resume=True, final_evaluation=False)
    assert status["state"] == "finished", status.get("error")
    steps_after = [s["step"] for s in runs.read_metrics(folder, "step")]
    assert steps_after[: len(steps_before)] == steps_before  # kept, not dropped
    assert steps_after == sorted(steps_after) and steps_after[-1] == 14
    assert "at epoch 1, step 10" in (folder / "train.log").read_text()
    # Same batches in the same order: the weights agree up to float32 reordering in
    # the kernels (a replayed or skipped batch moves them by ~lr = 3e-3).
    restored = {}
    for name in ("whole", "split"):
        model = build_model(config)
        tf.train.Checkpoint(model=model).restore(
            tf.train.latest_checkpoint(str(tmp_path / name / "checkpoints"))).expect_partial()
        restored[name] = [v.numpy() for v in model.trainable_variables]
    for a, b in zip(restored["whole"], restored["split"]):
        np.testing.assert_allclose(a, b, atol=1e-4)
    summary = runs.summarize_run(folder)
    assert summary.status["started"] == stopped["started"]
    total = summary.duration_seconds
    assert first_segment < total < first_segment + (status["ended"] - status["segment_started"]) + 0.5


def test_tensorboard_holds_the_same_numbers_as_metrics_jsonl(finished_run):
    """One writer feeds both: every epoch's val accuracy and every logged step's
    train loss appear in the TensorBoard events with the same value and step."""
    _, folder, _ = finished_run
    from tensorflow.core.util import event_pb2
    scalars = {}
    for path in (folder / "tb").glob("events.out.tfevents.*"):
        for raw in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(raw.numpy())
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    for epoch in runs.read_metrics(folder, "epoch"):
        assert scalars[("val/accuracy", epoch["step"])] == pytest.approx(epoch["val/accuracy"])
    for step in runs.read_metrics(folder, "step"):
        assert scalars[("step/train/loss", step["step"])] == pytest.approx(step["train/loss"], rel=1e-6)
        assert scalars[("step/lr", step["step"])] == pytest.approx(step["lr"], rel=1e-6)
    for epoch in runs.read_metrics(folder, "epoch"):
        assert scalars[("train/loss", epoch["step"])] == pytest.approx(epoch["train/loss"], rel=1e-6)
