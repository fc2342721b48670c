"""engine.runs: the run-folder reader/launcher the UI relies on (no TensorFlow)."""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from engine import control, runs
from engine.request import RunRequest


def test_half_written_last_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    runs.append_jsonl(path, {"kind": "epoch", "epoch": 1})
    with open(path, "a") as handle:
        handle.write('{"kind": "epoch", "ep')  # a writer caught mid-line
    assert runs.read_jsonl(path) == [{"kind": "epoch", "epoch": 1}]


def test_status_is_written_atomically_and_merged(tmp_path):
    runs.write_status(tmp_path, runs.RUNNING, pid=os.getpid(), epoch=1)
    runs.write_status(tmp_path, runs.RUNNING, epoch=2)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["epoch"] == 2 and status["pid"] == os.getpid()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_dead_process_is_reported_as_failed_not_running(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "print('boom')"])
    child.wait()
    (tmp_path / "process.log").write_text("Traceback: something broke\n")
    runs.write_status(tmp_path, runs.RUNNING, pid=child.pid)
    status = runs.read_status(tmp_path)
    assert status["state"] == "failed"
    assert status["error"] == "process ended unexpectedly"
    assert "something broke" in status["log_tail"]


@pytest.mark.parametrize("bad", ["../evil", "/etc", "a/b", "", ".hidden", "x" * 200, "..", "a b"])
def test_run_ids_cannot_escape_the_runs_folder(tmp_path, bad):
    with pytest.raises(runs.RunError):
        runs.run_dir(bad, tmp_path)


def test_list_and_delete_runs(tmp_path):
    for index, state in enumerate([runs.FINISHED, runs.FAILED]):
        folder = tmp_path / f"run{index}"
        folder.mkdir()
        runs.write_json_atomic(folder / "config.json", {"config": {"preset": "resnet10"}, "derived": {}})
        runs.write_status(folder, state, started=time.time() - 10, ended=time.time())
        runs.append_jsonl(folder / "metrics.jsonl", {"kind": "epoch", "epoch": 1, "val/auc": 0.5 + index / 10})
    listed = runs.list_runs(tmp_path)
    assert {r.run_id for r in listed} == {"run0", "run1"}
    assert all(r.duration_seconds and r.duration_seconds >= 9 for r in listed)
    assert {r.run_id: r.best["val/auc"] for r in listed} == {"run0": 0.5, "run1": 0.6}
    control.delete_run("run0", tmp_path)
    assert not (tmp_path / "run0").exists() and (tmp_path / "run1").exists()
    with pytest.raises(runs.RunError):
        control.delete_run("../run1", tmp_path)


def test_runs_module_does_not_import_tensorflow():
    code = "import sys, engine.runs, engine.config, engine.evaluation.metric_names; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.stdout.strip() == "False", out.stderr


def test_start_and_stop_a_detached_training(synthetic_data, tmp_path):
    from engine.config import tiny_config
    request = {"config": tiny_config(data_dir=str(synthetic_data), epochs=500, dedup_distance=-1).to_dict()}
    run_id, folder = control.start_run(request, root=tmp_path / "runs")
    assert runs.read_config_file(folder) == json.loads(json.dumps(request))  # the request, as it trains
    assert runs.read_status(folder)["state"] in ("queued", "running")
    deadline = time.time() + 120
    while time.time() < deadline and not runs.read_metrics(folder, "step"):
        assert runs.read_status(folder)["state"] in ("queued", "running"), runs.tail(folder / "process.log")
        time.sleep(0.3)
    pid = runs.read_status(folder)["pid"]
    assert control.stop_run(folder, grace_seconds=60) == "stopped"
    assert not runs.pid_alive(pid)
    assert [r.run_id for r in runs.active_runs(tmp_path / "runs")] == []
    # Continue it with a new total of 2 epochs (the Train page's "Continue training"):
    # python -m engine.launch --resume DIR --epochs N in its own process.
    done = len(runs.read_metrics(folder, "epoch"))
    control.resume_run(folder, epochs=done + 1)
    deadline = time.time() + 400  # a generous bound: evaluation and the shortcut audit follow training
    while time.time() < deadline and runs.read_status(folder)["state"] in runs.ACTIVE_STATES:
        time.sleep(0.5)
    assert runs.read_status(folder)["state"] == "finished", runs.tail(folder / "process.log")
    assert runs.read_config_file(folder)["config"]["epochs"] == done + 1
    assert [e["epoch"] for e in runs.read_metrics(folder, "epoch")] == list(range(1, done + 2))
    with pytest.raises(runs.RunError, match="already trained"):
        control.resume_run(folder, epochs=done + 1)


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path):
    code = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(120)")
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                               stdout=subprocess.PIPE, text=True)
    # Handshake: SIGTERM is ignored only once the child says so (no race with start-up).
    assert process.stdout.readline().strip() == "ready"
    runs.write_status(tmp_path, runs.RUNNING, pid=process.pid)
    assert control.stop_run(tmp_path, grace_seconds=1.0) == "stopped"
    assert process.wait(timeout=10) == -9
    assert "killed after not stopping" in runs.read_status(tmp_path)["error"]


def test_the_dashboards_stop_returns_at_once_and_says_stopping_until_the_run_has_stopped(tmp_path):
    """Stop from the dashboard (wait=False) does not hold the page: it answers "stopping",
    status.json says a stop was asked for, and the run's own SIGTERM handler ends it."""
    code = ("import signal, sys, time; from engine import runs\n"
            "def stop(*_):\n"
            "    time.sleep(1.5)  # saving a checkpoint\n"
            f"    runs.write_status({str(tmp_path)!r}, 'stopped', stopped_by='SIGTERM'); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, stop); print('ready', flush=True); time.sleep(120)")
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    runs.begin_segment(tmp_path, resume=False)
    runs.write_status(tmp_path, runs.RUNNING, pid=process.pid)
    assert control.stop_run(tmp_path, wait=False) == control.STOPPING
    status = runs.read_status(tmp_path)
    assert status["state"] == runs.RUNNING and status["stop_requested"]  # what the panel shows
    assert process.wait(timeout=30) == 0
    deadline = time.time() + 30
    while runs.read_status(tmp_path)["state"] != runs.STOPPED and time.time() < deadline:
        time.sleep(0.1)
    final = runs.read_status(tmp_path)
    assert final["state"] == runs.STOPPED and "stop_requested" not in final
    runs.begin_segment(tmp_path, resume=True)  # a resumed run is not "stopping"
    assert not runs.read_status(tmp_path).get("stop_requested")


@pytest.mark.parametrize("setup,message", [
    (lambda root: None, "does not exist"),
    (lambda root: (root / "cats").mkdir(parents=True), "Understood layouts"),
    (lambda root: ((root / "yes").mkdir(parents=True), (root / "no").mkdir()), "no tumor images"),
])
def test_cli_refuses_bad_data_folders_before_starting(tmp_path, setup, message):
    data = tmp_path / "data"
    setup(data)
    out = subprocess.run([sys.executable, "-m", "engine.train", "--data-dir", str(data),
                          "--run-dir", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 2
    assert message in out.stderr
    assert runs.read_status(tmp_path / "run")["state"] == "failed"


def test_estimate_uses_the_newest_run_of_the_same_network_and_size(tmp_path):
    def summary(run_id, size, seconds, images):
        config = {"preset": "resnet10", "width": 0.5, "image_size": size, "devices": "auto", "epochs": 9}
        return runs.RunSummary(run_id, tmp_path / run_id, {}, config, {"train_images": images},
                               last_epoch={"epoch_seconds": seconds})
    history = [summary("new", 128, 20.0, 2000), summary("old", 128, 99.0, 2000), summary("big", 224, 60.0, 2000)]
    wanted = {"preset": "resnet10", "width": 0.5, "image_size": 128, "devices": "auto", "epochs": 10}
    seconds, based_on = runs.estimate_seconds(history, wanted, 1000)
    assert based_on == "new" and seconds == pytest.approx(20.0 / 2000 * 1000 * 10)
    assert runs.estimate_seconds(history, dict(wanted, image_size=64), 1000) is None


def test_estimate_counts_the_fixed_cost_of_every_process(tmp_path):
    """A finished run of 3 epochs of 2 s that took 14 s in all spent 8 s outside its
    epochs (start-up, scan, export, evaluation); a 5-fold CV pays that five times."""
    config = {"preset": "resnet10", "width": 0.5, "image_size": 64, "devices": "auto", "epochs": 3}
    done = runs.RunSummary("tiny", tmp_path / "tiny", {"state": runs.FINISHED, "active_seconds": 14.0}, config,
                           {"train_images": 100}, last_epoch={"epoch_seconds": 2.0, "epoch": 3})
    seconds, _ = runs.estimate_seconds([done], config, 400, processes=5)
    assert seconds == pytest.approx(2.0 / 100 * 400 * 3 + 8.0 * 5)


def test_every_start_and_resume_goes_through_the_one_launcher(tmp_path, monkeypatch):
    """The dashboard never picks a module: a run, a multi-worker run and a CV all start
    as python -m engine.launch on the folder's request, and resume the same way."""
    launched = []
    monkeypatch.setattr(control, "_launch", lambda command, folder, env: launched.append(command))
    requests = [{"config": {"workers": 1}}, {"config": {"workers": 3}},
                {"config": {}, "cv": {"folds": 5, "evaluate_test": True}}]
    for index, request in enumerate(requests):
        _, folder = control.start_run(request, f"r{index}", root=tmp_path, allow_parallel=True)
        assert RunRequest.read(folder) == RunRequest.from_dict(request)  # the whole request, defaults filled
        assert launched[-1][1:] == ["-m", "engine.launch", "--config", str(folder / "config.json"),
                                    "--run-dir", str(folder)]
        runs.write_status(folder, "stopped")
        control.resume_run(folder)
        assert launched[-1][1:] == ["-m", "engine.launch", "--resume", str(folder)]
    runs.write_status(folder, "stopped")
    with pytest.raises(runs.RunError, match="cannot be extended"):
        control.resume_run(folder, epochs=9)
    with pytest.raises(runs.RunError, match="config"):
        control.start_run({"cv": {"folds": 2}}, "bad", root=tmp_path, allow_parallel=True)


def test_the_launcher_reads_workers_from_the_request_and_from_older_folders():
    assert RunRequest.from_dict({"config": {"workers": 2}}).workers == 2
    # Written before workers were part of the config: the count the run recorded.
    assert RunRequest.from_dict({"config": {}, "environment": {"workers": 3}}).workers == 3
    assert RunRequest.from_dict({"config": {}}).workers == 1