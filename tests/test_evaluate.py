"""Evaluation metrics, threshold and temperature choice, and the prediction CLI."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as skm

from conftest import ROOT
from engine.serving.calibration import choose_threshold, expected_calibration_error, fit_temperature
from engine.evaluation.evaluate import classification_report, full_report

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 1])
PROBS = np.array([0.1, 0.3, 0.6, 0.2, 0.8, 0.4, 0.9, 0.7, 0.05, 0.95])


def test_report_equals_scikit_learn_on_a_toy_set():
    report = classification_report(LABELS, PROBS, threshold=0.5)
    predicted = (PROBS >= 0.5).astype(int)
    assert report["accuracy"] == skm.accuracy_score(LABELS, predicted) == 0.8
    assert report["sensitivity"] == skm.recall_score(LABELS, predicted) == 0.8
    assert report["specificity"] == 0.8
    assert report["precision"] == skm.precision_score(LABELS, predicted)
    assert report["f1"] == skm.f1_score(LABELS, predicted)
    assert report["roc_auc"] == skm.roc_auc_score(LABELS, PROBS) == pytest.approx(0.96)
    assert report["pr_auc"] == skm.average_precision_score(LABELS, PROBS)
    assert report["brier"] == pytest.approx(np.mean((PROBS - LABELS) ** 2))
    assert report["confusion_matrix"] == {"tn": 4, "fp": 1, "fn": 1, "tp": 4}


def test_youden_threshold_separates_a_separable_set():
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([0.1, 0.2, 0.35, 0.4, 0.7, 0.9])
    threshold = choose_threshold(labels, probs, "youden")
    assert 0.35 < threshold < 0.4  # inside the separating interval, not on its edge
    assert threshold == pytest.approx(_logit_middle(0.35, 0.4))
    assert classification_report(labels, probs, threshold)["accuracy"] == 1.0


def _logit_middle(low, high):
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    return 1 / (1 + np.exp(-(logit(low) + logit(high)) / 2))


def test_a_small_separated_calibration_set_gives_a_usable_rule():
    """The tiny run of issue 21: 8 validation images, all separated, logits far apart.
    The temperature must stay off its bounds and the threshold strictly inside
    (0.02, 0.98), so that tumour images are called tumour."""
    from engine.serving.calibration import TEMPERATURE_BOUNDS, calibrated
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    logits = np.array([-31.0, -25.0, -28.0, -22.0, 18.0, 27.0, 35.0, 24.0])
    temperature = fit_temperature(labels, logits)
    assert TEMPERATURE_BOUNDS[0] * 1.01 < temperature < TEMPERATURE_BOUNDS[1] * 0.99
    probabilities = calibrated(logits, temperature)
    threshold = choose_threshold(labels, np.round(probabilities, 6))
    assert 0.02 < threshold < 0.98
    assert ((probabilities >= threshold) == labels).all()


def test_target_sensitivity_threshold_is_the_highest_that_reaches_it():
    threshold = choose_threshold(LABELS, PROBS, "sensitivity", target_sensitivity=1.0)
    # between the lowest-scored tumor (0.4) and the next lower score (0.3)
    assert threshold == pytest.approx(_logit_middle(0.3, 0.4))
    assert classification_report(LABELS, PROBS, threshold)["sensitivity"] == 1.0
    assert choose_threshold(LABELS, PROBS, "sensitivity", 0.8) == pytest.approx(_logit_middle(0.6, 0.7))


def test_temperature_undoes_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-true_logits))).astype(int)
    temperature = fit_temperature(labels, true_logits * 3.0)  # a 3x over-confident model
    assert temperature == pytest.approx(3.0, rel=0.1)
    report = full_report(labels, true_logits * 3.0, ["MRI"] * 4000, 0.5, temperature)
    assert report["ece"] < report["ece_before_temperature"]


def test_ece_is_zero_for_perfect_calibration_and_large_for_overconfidence():
    labels = np.array([1] * 70 + [0] * 30)
    assert expected_calibration_error(labels, np.full(100, 0.7)) == pytest.approx(0.0)
    assert expected_calibration_error(labels, np.full(100, 0.99)) == pytest.approx(0.29)


def test_per_modality_breakdown_when_there_are_two():
    modalities = ["CT"] * 5 + ["MRI"] * 5
    report = full_report(LABELS, np.log(PROBS / (1 - PROBS)), modalities, 0.5, 1.0)
    assert set(report["by_modality"]) == {"CT", "MRI"}
    assert report["by_modality"]["CT"]["count"] == 5


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from conftest import write_class_folders
    from engine.config import tiny_config
    from engine.training.loop import train_and_evaluate
    data = write_class_folders(tmp_path_factory.mktemp("d"), per_class=30)
    folder = tmp_path_factory.mktemp("run")
    status = train_and_evaluate(tiny_config(data_dir=str(data), epochs=3, dedup_distance=-1), folder)
    assert status["state"] == "finished"
    return folder, data


def test_finished_run_has_calibrated_evaluations(trained_run):
    folder, _ = trained_run
    for split in ("val", "test"):
        report = json.loads((folder / f"eval_{split}.json").read_text())
        assert report["count"] > 0 and 0 <= report["accuracy"] <= 1
        assert set(report["curves"]) == {"roc", "pr", "calibration"}
        rows = (folder / f"predictions_{split}.csv").read_text().splitlines()
        assert rows[0].startswith("path,label,modality,probability") and len(rows) == report["count"] + 1
    info = json.loads((folder / "model.json").read_text())
    assert info["temperature_fitted"] and 0 < info["threshold"] < 1
    # The run evaluates both splits with one loaded model: the test split is scored at the
    # threshold and temperature the val pass fitted, not the export's defaults.
    for split in ("val", "test"):
        report = json.loads((folder / f"eval_{split}.json").read_text())
        assert report["threshold"] == pytest.approx(info["threshold"])
        assert report["temperature"] == pytest.approx(info["temperature"])


def run_predict(*args):
    return subprocess.run([sys.executable, "-m", "engine.predict", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


def test_predict_cli_prints_a_probability(trained_run):
    folder, data = trained_run
    image = next((data / "yes").iterdir())
    out = run_predict("--model", folder, "--json", image)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0.0 <= record["probability"] <= 1.0
    assert record["predicted_class"] in ("tumor", "no tumor")


def test_predict_cli_reports_a_text_file_and_still_predicts_the_rest(trained_run, tmp_path):
    folder, data = trained_run
    fake = tmp_path / "scan.jpg"
    fake.write_text("this is not an image")
    image = next((data / "no").iterdir())
    out = run_predict("--model", folder, fake, image)
    assert out.returncode != 0
    assert "scan.jpg: error: not a recognised image" in out.stderr
    assert "tumor probability" in out.stdout and image.name in out.stdout


def test_a_single_run_gets_ood_statistics_and_reports_the_flagged_share(trained_run):
    """Training fits the OOD statistics of a single run (train features, threshold on
    val) and evaluation reports the share of the split flagged."""
    from engine.serving.inference import load_model
    folder, _ = trained_run
    assert (folder / "ood.npz").exists() and (folder / "appearance.npz").exists()
    model = load_model(folder)
    assert model.ood is not None and model.appearance is not None
    for split in ("val", "test"):
        share = json.loads((folder / f"eval_{split}.json").read_text())["ood_flagged_share"]
        assert share is not None and 0.0 <= share <= 1.0


def test_evaluating_the_shipped_model_never_rewrites_checkpoints(tmp_path, monkeypatch):
    from engine import runs
    from engine.evaluation.evaluate import evaluate
    from engine.runs import SHIPPED_MODEL_DIR
    monkeypatch.setattr(runs, "DEFAULT_RUNS_ROOT", tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in SHIPPED_MODEL_DIR.iterdir() if p.is_file()}
    report = evaluate(SHIPPED_MODEL_DIR, "test", limit=12)
    assert report["count"] == 12
    assert report["seen_in_training"]["of"] == 12 and report["seen_in_training"]["threshold"] > 0.9
    assert (tmp_path / "evaluations" / "shipped" / "eval_test.json").exists()
    after = {p.name: p.stat().st_mtime_ns for p in SHIPPED_MODEL_DIR.iterdir() if p.is_file()}
    assert after == before
    with pytest.raises(ValueError, match="part of the release"):
        evaluate(SHIPPED_MODEL_DIR, "test", recalibrate=True, limit=12)


def test_numpy_cross_entropy_equals_the_training_loss():
    """The fold loss in cv_summary.json and the loss logged in training are one
    definition: the NumPy form equals TensorFlow's on extreme and ordinary logits."""
    import tensorflow as tf
    from engine.evaluation.metrics import binary_cross_entropy_from_logits
    from engine.training.steps import per_example_loss
    logits = np.array([-80.0, -3.0, -0.1, 0.0, 0.2, 4.0, 90.0])
    labels = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    expected = float(tf.reduce_mean(per_example_loss(tf.constant(labels, tf.float32),
                                                     tf.constant(logits, tf.float32))))
    assert binary_cross_entropy_from_logits(labels, logits) == pytest.approx(expected, rel=1e-6)


def test_evaluation_leaves_the_loaded_model_as_it_was(trained_run, tmp_path):
    """A model shared by a page and an evaluation keeps its numbers: recalibrating
    writes model.json and scores with a calibrated copy, the caller's object is frozen."""
    import dataclasses

    from engine.evaluation.evaluate import evaluate
    from engine.serving.inference import load_model
    folder, _ = trained_run
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    info = json.loads((copy / "model.json").read_text())
    info["threshold"], info["temperature"] = 0.5, 1.0
    (copy / "model.json").write_text(json.dumps(info))
    model = load_model(copy)
    before = (model.threshold, model.temperature, model.ood, model.neighbours)
    report = evaluate(copy, "test", recalibrate=True, model=model)
    stored = json.loads((copy / "model.json").read_text())
    assert (stored["threshold"], stored["temperature"]) != (0.5, 1.0)
    assert report["threshold"] == pytest.approx(stored["threshold"])  # scored with the new rule
    assert (model.threshold, model.temperature, model.ood, model.neighbours) == before == (
        0.5, 1.0, before[2], before[3])
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.threshold = 0.3
