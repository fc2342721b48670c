"""Write failures end a run cleanly; two simultaneous submissions start one run."""

import errno
import threading

import tensorflow as tf

from engine import control, runs
from engine.config import tiny_config
from engine.model.resnet import build_model
from engine.training.loop import train_and_evaluate


def test_disk_full_during_training_fails_the_run_and_keeps_earlier_checkpoints(
        synthetic_data, tmp_path, monkeypatch):
    real_append = runs.append_jsonl

    def failing_append(path, record):
        if record.get("kind") == "epoch" and record["epoch"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_append(path, record)

    monkeypatch.setattr(runs, "append_jsonl", failing_append)
    config = tiny_config(data_dir=str(synthetic_data), epochs=3, dedup_distance=-1)
    status = train_and_evaluate(config, tmp_path)
    assert status["state"] == "failed"
    assert "No space left on device" in status["error"]
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert latest is not None
    model = build_model(config)
    tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    assert runs.read_status(tmp_path)["state"] == "failed"


def test_two_simultaneous_submissions_start_one_run(synthetic_data, tmp_path):
    request = {"config": tiny_config(data_dir=str(synthetic_data), epochs=500, dedup_distance=-1).to_dict()}
    root = tmp_path / "runs"
    barrier = threading.Barrier(2)
    outcomes = []

    def submit(name):
        barrier.wait()
        try:
            outcomes.append(("started", control.start_run(request, name, root=root)))
        except control.RunActiveError as err:
            outcomes.append(("refused", str(err)))

    threads = [threading.Thread(target=submit, args=(f"tab{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert sorted(kind for kind, _ in outcomes) == ["refused", "started"]
        assert "confirm" in next(value for kind, value in outcomes if kind == "refused")
        # A confirmed parallel run is allowed.
        _, folder = control.start_run(request, "parallel", root=root, allow_parallel=True)
        assert folder.exists()
    finally:
        for run in runs.list_runs(root):
            control.stop_run(run.path, grace_seconds=30)
    assert not runs.active_runs(root)
