"""Issue 21 item 1: the decision rule of a user's own tiny data set. A tiny run (24
synthetic slices per class, 64 px, resnet10 at width 0.0625, 6 epochs, then continued
to 9) must store a usable threshold and temperature, and Train, Evaluate and Errors must
report the test confusion matrix that eval_test.json holds."""

import json
import os

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT, write_class_folders

APP = str(ROOT / "streamlit_app.py")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from engine.config import tiny_config
    from engine.serving.calibration import THRESHOLD_RANGE  # noqa: F401 - the module under test
    from engine.training.loop import train_and_evaluate
    root = tmp_path_factory.mktemp("small")
    data = write_class_folders(root / "data", per_class=24, seed=11, size=64)
    folder = root / "runs" / "tiny-own-data"
    config = tiny_config(data_dir=str(data), image_size=64, width=0.0625, epochs=6)
    assert train_and_evaluate(config, folder)["state"] == "finished"
    # "Continue training to 9": resume with a longer schedule
    assert train_and_evaluate(config.replace(epochs=9), folder, resume=True)["state"] == "finished"
    return folder


def test_the_tiny_run_stores_a_usable_threshold_and_temperature(tiny_run):
    from engine.serving.calibration import TEMPERATURE_BOUNDS
    info = json.loads((tiny_run / "model.json").read_text())
    assert 0.02 < info["threshold"] < 0.98
    low, high = TEMPERATURE_BOUNDS
    assert low * 1.01 < info["temperature"] < high * 0.99
    assert info["calibration_images"] < 30  # and the page says so (below)
    predictions = pd.read_csv(tiny_run / "predictions_test.csv")
    assert (predictions["predicted"] == (predictions["probability"] >= info["threshold"]).astype(int)).all()
    report = json.loads((tiny_run / "eval_test.json").read_text())
    cm = report["confusion_matrix"]
    wrong = predictions["predicted"] != predictions["label"]
    assert cm["fn"] + cm["fp"] == int(wrong.sum())


def _page(folder, page):
    os.environ["BRAIN_RUNS_DIR"] = str(folder.parent)
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["model_choice"] = f"run {folder.name}"
    at.session_state["watch_run"] = folder.name
    at.run()
    at.switch_page(f"app_pages/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_train_evaluate_and_errors_report_the_same_confusion_matrix(tiny_run):
    report = json.loads((tiny_run / "eval_test.json").read_text())
    cm = report["confusion_matrix"]
    old = os.environ.get("BRAIN_RUNS_DIR")
    try:
        evaluate = _page(tiny_run, "evaluate")
        assert any(f"{cm['fn']} missed tumors (false negatives), {cm['fp']} false alarms" in c.value
                   for c in evaluate.caption)
        metrics = {m.label: m.value for m in evaluate.metric}
        sensitivity = report["sensitivity"]
        assert metrics["sensitivity"] == (f"{100 * sensitivity:.2f}%" if sensitivity is not None else "n/a")
        assert any("validation images" in w.value and "rough" in w.value for w in evaluate.warning)
        errors = _page(tiny_run, "errors")
        wrong = cm["fn"] + cm["fp"]
        if wrong:
            assert any(m.value.startswith(f"**{wrong}** of {report['count']} test images") for m in errors.markdown)
        else:
            assert any("No misclassified" in s.value or "0** of" in s.value for s in list(errors.success) + list(errors.markdown))
        train = _page(tiny_run, "train")
        shown = {m.label: m.value for m in train.metric}
        assert shown["test sensitivity"] == metrics["sensitivity"]
    finally:
        if old is None:
            os.environ.pop("BRAIN_RUNS_DIR", None)
        else:
            os.environ["BRAIN_RUNS_DIR"] = old
