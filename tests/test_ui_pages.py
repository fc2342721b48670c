"""Every dashboard page rendered by Streamlit's AppTest against a real run folder."""

import io
import os

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import ROOT, blob_image, copy_run

APP = str(ROOT / "streamlit_app.py")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, finished_run_template):
    root = tmp_path_factory.mktemp("runs")
    folder = copy_run(finished_run_template, root)
    old = os.environ.get("BRAIN_RUNS_DIR")
    os.environ["BRAIN_RUNS_DIR"] = str(root)
    yield folder
    if old is None:
        os.environ.pop("BRAIN_RUNS_DIR")
    else:
        os.environ["BRAIN_RUNS_DIR"] = old


def app_on(page: str, model_choice: str = "run fixture-run") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["model_choice"] = model_choice
    at.run()
    if page != "home":
        at.switch_page(f"app_pages/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def png(tumor: bool) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(blob_image(np.random.default_rng(9), tumor)).save(buffer, "PNG")
    return buffer.getvalue()


def test_home_shows_model_metrics_data_summary_and_the_leak(run_folder):
    at = app_on("home")
    assert "Research software, not a medical device" in at.warning[0].value
    labels = [m.label for m in at.metric]
    assert {"accuracy", "sensitivity", "specificity", "ROC AUC"} <= set(labels)
    # Red only for a real leak (at least 1% of val or test), a plain note otherwise.
    leak_boxes = [e for e in at.error if "Duplicate leak" in e.value] + [i for i in at.info if "Duplicate leak" in i.value]
    assert len(leak_boxes) == 1
    assert at.dataframe[0].value["split"].tolist() == ["train", "val", "test"]
    assert "patients or volumes" not in at.dataframe[0].value.columns  # pictures only


def test_home_counts_patients_per_split_for_scanner_data(run_folder, tmp_path, monkeypatch):
    import json
    import shutil
    folder = tmp_path / "scan-run"
    shutil.copytree(run_folder, folder, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    summary = json.loads((folder / "data_summary.json").read_text())
    summary["patients"] = {"train": 7, "val": 2, "test": 3}
    (folder / "data_summary.json").write_text(json.dumps(summary))
    monkeypatch.setenv("BRAIN_RUNS_DIR", str(tmp_path))
    at = app_on("home", model_choice="run scan-run")
    assert at.dataframe[0].value["patients or volumes"].tolist() == [7, 2, 3]


def test_predict_shows_a_probability_for_an_upload_and_an_error_for_a_bad_file(run_folder):
    at = app_on("predict")
    at.file_uploader[0].set_value([("scan.png", png(True), "image/png"),
                                   ("broken.jpg", b"\xff\xd8\xff garbage", "image/jpeg")])
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    good = table[table["file"] == "scan.png"].iloc[0]
    assert 0.0 <= float(good["tumor probability"]) <= 1.0 and good["predicted class"] in ("tumor", "no tumor")
    bad = table[table["file"] == "broken.jpg"].iloc[0]
    assert bad["error"] and bad["tumor probability"] == ""  # an empty cell, not "None"
    assert "slice" not in table.columns  # pictures only: no empty slice column
    assert any("broken.jpg" in e.value for e in at.error)
    assert len(at.get("image")) >= 1  # the Grad-CAM overlay


def test_train_page_shows_curves_and_status_of_a_finished_run(run_folder):
    import json
    from engine import runs
    at = app_on("train")
    assert any("finished" in m.value for m in at.markdown)
    assert at.get("plotly_chart"), "training curves"
    assert "Start training" in [b.label for b in at.button]
    # The finished panel shows the exported epoch (best val AUC), not the last one,
    # and the test split's result from the final evaluation.
    epochs = runs.read_metrics(run_folder, "epoch")
    best = runs.best_epoch(epochs, "val/auc")
    assert any(c.value.startswith(f"Exported model: epoch {best['epoch']} of the {len(epochs)} trained, best val/auc")
               for c in at.caption)
    test = json.loads((run_folder / "eval_test.json").read_text())
    assert next(m.value for m in at.metric if m.label == "test accuracy") == f"{100 * test['accuracy']:.2f}%"
    assert next(m.value for m in at.metric if m.label == "val accuracy") == f"{100 * best['val/accuracy']:.2f}%"


def test_train_page_labels_the_final_evaluation(run_folder, tmp_path, monkeypatch):
    """A run past its last step, exporting and evaluating, says so instead of showing
    a full bar with no words."""
    import shutil
    from engine import runs
    folder = tmp_path / "evaluating-run"
    shutil.copytree(run_folder, folder, ignore=shutil.ignore_patterns("checkpoints", "export", "tb"))
    runs.write_status(folder, runs.RUNNING, pid=os.getpid(), phase=runs.PHASE_EVALUATING, ended=None)
    monkeypatch.setenv("BRAIN_RUNS_DIR", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["watch_run"] = "evaluating-run"
    at.run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    texts = [p.proto.text for p in at.get("progress")]
    assert texts == ["training done · final evaluation on val and test ..."]


def test_train_form_refuses_a_folder_outside_the_allowed_roots(run_folder, tmp_path):
    at = app_on("train")
    at.text_input[0].set_value(str(tmp_path))
    next(b for b in at.button if b.label == "Start training").click().run()
    assert any("outside the folders the dashboard may read" in e.value for e in at.error)


def test_runs_page_lists_the_run_with_best_metrics(run_folder):
    import json
    at = app_on("runs")
    table = at.dataframe[0].value
    row = table[table["run"] == "fixture-run"].iloc[0]
    assert row["status"] == "finished" and 0 <= row["best val accuracy"] <= 1
    test = json.loads((run_folder / "eval_test.json").read_text())
    assert row["test accuracy"] == pytest.approx(test["accuracy"])
    assert row["test AUC"] == pytest.approx(test["roc_auc"])


def test_runs_page_shows_the_settings_that_differ_between_two_runs(run_folder, tmp_path, monkeypatch):
    import json
    import shutil
    for name, rate in (("run-a", 0.001), ("run-b", 0.003)):
        shutil.copytree(run_folder, tmp_path / name, ignore=shutil.ignore_patterns("checkpoints", "export", "tb"))
        stored = json.loads((tmp_path / name / "config.json").read_text())
        stored["config"]["learning_rate"] = rate
        (tmp_path / name / "config.json").write_text(json.dumps(stored))
    monkeypatch.setenv("BRAIN_RUNS_DIR", str(tmp_path))
    at = app_on("runs")
    next(m for m in at.multiselect if m.label == "Runs to overlay").set_value(["run-a", "run-b"]).run()
    differences = next(d.value for d in at.dataframe if "setting" in d.value.columns)
    assert differences["setting"].tolist() == ["learning_rate"]
    assert differences[["run-a", "run-b"]].iloc[0].tolist() == ["0.001", "0.003"]


def test_evaluate_page_threshold_slider_updates_the_confusion_matrix(run_folder):
    at = app_on("evaluate")
    sensitivity = lambda: next(m.value for m in at.metric if m.label == "sensitivity")
    at.slider[0].set_value(0.0).run()
    assert sensitivity() == "100.00%"
    assert "0 missed tumors" in at.caption[-1].value or any("0 missed tumors" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) >= 4  # confusion matrix, ROC, PR, calibration
    at.slider[0].set_value(1.0).run()  # nothing called tumor: precision is undefined
    assert next(m.value for m in at.metric if m.label == "precision") == "—"
    import json
    stored = json.loads((run_folder / "eval_test.json").read_text())["threshold"]
    next(b for b in at.button if b.label == "Reset to the stored threshold").click().run()
    assert at.slider[0].value == pytest.approx(round(stored, 3))  # 3 decimals, not 0.80 for 0.804
    # The operating point at the slider's threshold is drawn on the ROC curve.
    roc = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "ROC" in c.proto.spec)
    marker = next(t for t in roc["data"] if t.get("mode") == "markers")
    live_specificity = float(next(m.value for m in at.metric if m.label == "specificity").rstrip("%")) / 100
    assert marker["x"][0] == pytest.approx(1 - live_specificity, abs=1e-4)
    assert marker["name"] == f"threshold {round(stored, 3):.3f}"
    labels = [b.label for b in at.get("download_button")]
    assert "Download the per-image predictions (test, CSV)" in labels
    assert "Download the evaluation (test, JSON)" in labels


def test_errors_page_shows_the_gallery_of_mistakes(run_folder):
    at = app_on("errors")
    text = " ".join(m.value for m in at.markdown)
    assert "misclassified" in text
    assert len(at.get("image")) >= 1
    assert any(c.value.startswith(("false positive", "false negative")) for c in at.caption)


def test_runs_page_with_50_runs_does_not_load_tensorflow(tmp_path):
    import json
    import subprocess
    import sys
    import time

    from engine import runs
    for index in range(50):
        folder = tmp_path / f"run{index:02d}"
        folder.mkdir()
        runs.write_json_atomic(folder / "config.json", {"config": {"preset": "resnet10", "epochs": 3}})
        runs.write_status(folder, runs.FINISHED, started=time.time() - 60, ended=time.time())
        for epoch in (1, 2, 3):
            runs.append_jsonl(folder / "metrics.jsonl", {"kind": "epoch", "epoch": epoch,
                                                         "val/accuracy": 0.5 + epoch / 10, "val/auc": 0.9})
    code = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({json.dumps(APP)}, default_timeout=60)\n"
        "at.run(); at.switch_page('app_pages/runs.py'); at.run()\n"
        "assert not at.exception, [e.value for e in at.exception]\n"
        "print(len(at.dataframe[0].value), 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, BRAIN_RUNS_DIR=str(tmp_path), PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["50", "False"]


@pytest.fixture(scope="module")
def cv_folder(run_folder, cv_run):
    """The session's finished cross-validation, copied into this module's runs folder
    as "fixture-cv", with its label audit."""
    import shutil
    from engine.evaluation.audit import audit
    folder = run_folder.parent / "fixture-cv"
    shutil.copytree(cv_run, folder)
    audit(folder)
    return folder


def test_runs_and_evaluate_show_the_per_fold_table_and_mean_std(cv_folder):
    import json
    summary = json.loads((cv_folder / "cv_summary.json").read_text())
    at = app_on("runs")
    table = at.dataframe[0].value
    cv_row = table[table["run"] == "fixture-cv"].iloc[0]
    mean, std = summary["mean"]["accuracy"], summary["std"]["accuracy"]
    assert cv_row["CV accuracy (mean ± std)"] == f"{100 * mean:.1f} ± {100 * std:.1f}"
    run_box = next(s for s in at.selectbox if s.label == "Run")
    run_box.set_value("fixture-cv").run()
    assert not at.exception
    folds_table = next(d.value for d in at.dataframe if "fold" in d.value.columns)
    assert folds_table["fold"].tolist() == [0, 1, 2]
    assert folds_table["accuracy"].tolist() == pytest.approx([f["accuracy"] for f in summary["folds"]])
    assert "CV accuracy (%)" in [m.label for m in at.metric]

    at = app_on("evaluate", model_choice="run fixture-cv")
    assert "CV ROC AUC" in [m.label for m in at.metric]
    assert any("fold" in d.value.columns for d in at.dataframe)


def test_runs_use_its_model_switches_the_sidebar_model(run_folder):
    at = app_on("runs", model_choice="Shipped model (checkpoints/)")
    next(s for s in at.selectbox if s.label == "Run").set_value("fixture-run").run()
    next(b for b in at.button if b.label.startswith("Use its model")).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["model_choice"] == "run fixture-run"
    assert next(s for s in at.sidebar.selectbox if s.label == "Model").value == "run fixture-run"


def test_label_review_records_a_decision_for_every_image_of_the_group(cv_folder, tmp_path, monkeypatch):
    from engine.data.manifest import read_manifest
    from engine.evaluation.review import read_review
    from engine.serving.inference import LoadedModel
    calls = []
    original = LoadedModel.explain_all
    monkeypatch.setattr(LoadedModel, "explain_all", lambda self, images: calls.append(len(images))
                        or original(self, images))
    feature_calls = []
    original_outputs = LoadedModel.predict_pixels
    monkeypatch.setattr(LoadedModel, "predict_pixels", lambda self, images: feature_calls.append(len(images))
                        or original_outputs(self, images))
    at = app_on("label_review")
    next(s for s in at.selectbox if s.label == "Audit of").set_value("cross-validation fixture-cv").run()
    next(t for t in at.text_input if t.label == "Review name").set_value("fixture-review").run()
    review_file = cv_folder.parent / "label_reviews" / "fixture-review.csv"  # under the runs folder only
    next(c for c in at.checkbox if c.label.startswith("Only images flagged")).uncheck().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.get("imgs") or at.get("image"), "images with Grad-CAM"
    first_radio = at.radio[0]
    group = int(first_radio.key.rsplit("_", 1)[1])
    first_radio.set_value("relabel")
    at.text_input(key=first_radio.key.replace("decision", "note")).set_value("looks like a lesion")
    drawn, looked_up = len(calls), len(feature_calls)  # 0 when an earlier test drew the same
    next(b for b in at.button if b.label == "Save decision").click().run()
    assert not at.exception, [e.value for e in at.exception]
    # The click reruns the page: its heat maps and nearest images come from the cache,
    # not the model again.
    assert len(calls) == drawn and len(feature_calls) == looked_up
    decisions = read_review(review_file)
    members = [r for r in read_manifest(cv_folder / "manifest.csv") if r.usable and r.group == group]
    assert {r.path for r in members} == set(decisions)
    assert all(d["decision"] == "relabel" and d["note"] == "looks like a lesion" for d in decisions.values())


def test_train_form_writes_the_whole_config_it_shows_and_trains_it(run_folder, monkeypatch):
    import json
    from engine import runs
    from engine.config import RECIPES, TrainConfig
    at = app_on("train")
    recipe_name = next(n for n in RECIPES if n.startswith("Tiny"))
    next(s for s in at.selectbox if s.label == "Recipe").set_value(recipe_name).run()
    form_values = {"Epochs": 50, "Image size (px)": 48, "Weight averaging decay (0 = off)": 0.5,
                   "Duplicate-group weighting (power, 0 = off)": 0.75}
    for label, value in form_values.items():
        next(n for n in at.number_input if n.label == label).set_value(value)
    next(c for c in at.checkbox if c.label == "Crop to the head").check()
    data_dir = runs.read_config_file(run_folder)["config"]["data_dir"]
    from pathlib import Path
    monkeypatch.setenv("BRAIN_DATA_ROOTS", str(Path(data_dir).parent))
    next(t for t in at.text_input if t.label == "Data folder").set_value(data_dir)
    next(t for t in at.text_input if t.label == "Run name").set_value("formrun")
    next(c for c in at.checkbox if c.label.startswith("Allow a run in parallel")).check()
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    # 48 px: no earlier run of that size to time it by (the fixture run is 32 px).
    assert any("No earlier run of this network and image size" in m.value for m in at.success)
    started = [r for r in runs.list_runs(run_folder.parent) if r.run_id.endswith("formrun")]
    assert len(started) == 1
    folder = started[0].path
    try:
        saved = TrainConfig.from_dict(json.loads((folder / "config.json").read_text())["config"])
        expected = RECIPES[recipe_name]().replace(
            data_dir=data_dir, epochs=50, image_size=48, ema_decay=0.5, crop_to_head=True,
            group_weighting=0.75)
        for field, value in expected.to_dict().items():
            assert getattr(saved, field) == value or (
                isinstance(value, float) and getattr(saved, field) == pytest.approx(value)), field
    finally:
        from engine import control
        control.stop_run(folder, grace_seconds=30)


def test_train_page_watching_a_cv_shows_fold_progress_and_the_summary(cv_folder):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["watch_run"] = "fixture-cv"
    at.run()
    at.switch_page("app_pages/train.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    progress = next(d.value for d in at.dataframe if "state" in d.value.columns and "fold" in d.value.columns)
    assert progress["state"].tolist() == ["finished"] * 3
    assert "CV accuracy (%)" in [m.label for m in at.metric]


def test_predict_warns_when_an_upload_does_not_look_like_the_training_slices(run_folder):
    gradient = (np.linspace(0, 65535, 96)[None, :] * np.ones((96, 1))).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(gradient).save(buffer, "PNG")
    at = app_on("predict")
    at.file_uploader[0].set_value([("gradient.png", buffer.getvalue(), "image/png")]).run()
    assert not at.exception, [e.value for e in at.exception]
    row = at.dataframe[0].value.iloc[0]
    assert row["out of distribution"].startswith("yes")
    assert row["predicted class"] == "not assessed"  # no verdict on such an input
    assert 0.0 <= float(row["tumor probability"]) <= 1.0  # the probability stays available
    assert any(w.value.startswith("**Not assessed**") and "does not look like the brain slices" in w.value
               for w in at.warning)
    assert any(e.label == "Show the probability anyway" for e in at.expander)
    assert not any(":material/warning: tumor" in m.value or "check_circle: no tumor" in m.value
                   for m in at.markdown)
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert "gradient.png: Grad-CAM for the tumor class, scaled per image" in captions


def test_train_page_continues_a_finished_run_for_more_epochs(run_folder, monkeypatch):
    from engine import control, runs
    calls = []
    monkeypatch.setattr(control, "resume_run", lambda folder, **kw: calls.append((folder.name, kw)))
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["watch_run"] = "fixture-run"  # other tests add newer runs to this root
    at.run()
    at.switch_page("app_pages/train.py").run()
    done = len(runs.read_metrics(run_folder, "epoch"))
    box = next(n for n in at.number_input if n.label == "Train on to epoch")
    assert box.value == done + 10
    box.set_value(done + 4).run()
    next(b for b in at.button if b.label == "Continue training").click().run()
    assert calls == [("fixture-run", {"epochs": done + 4})]


def test_square_pads_without_resampling():
    from ui.common import square
    tall = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3)
    padded = square(tall)
    assert padded.shape == (6, 6, 3)
    assert (padded[:, 1:5] == tall).all() and padded[:, 0].max() == 0 and padded[:, 5].max() == 0


def test_predict_takes_dicom_and_nifti_and_never_shows_identifiers(run_folder, tmp_path):
    import pydicom  # noqa: F401 - in requirements.txt: a missing decoder must fail, not skip
    from scan_fixtures import FAKE_IDENTIFIERS, head_slice, write_dicom, write_nifti
    dicom = write_dicom(tmp_path / "scan", head_slice(64, tumor=True).astype(np.uint8)).read_bytes()
    volume = np.zeros((64, 64, 12), np.float32)
    for k in range(3, 9):
        volume[:, :, k] = head_slice(64, tumor=k == 5, seed=k)
    nifti = write_nifti(tmp_path / "vol.nii.gz", volume).read_bytes()
    at = app_on("predict")
    at.file_uploader[0].set_value([("scan", dicom, "application/octet-stream"),
                                   ("vol.nii.gz", nifti, "application/gzip")])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert table[table["file"] == "scan"]["tumor probability"].astype(float).between(0, 1).all()
    volume_rows = table[table["file"] == "vol.nii.gz"]
    assert volume_rows["slice"].tolist() == [str(k) for k in range(3, 9)]
    assert (table[table["file"] == "scan"]["slice"] == "").all()  # one picture: empty, not "None"
    assert any("carries patient identifiers" in i.value for i in at.info), [i.value for i in at.info] + [e.value for e in at.error]
    slider = next(s for s in at.select_slider if s.label == "Slice")
    slider.set_value(7).run()
    row = table[(table["file"] == "vol.nii.gz") & (table["slice"] == "7")].iloc[0]
    if row["out of distribution"].startswith("yes"):
        # No verdict for a slice the model does not assess, as for pictures (issue 32).
        assert any(m.value.startswith("slice 7: **not assessed**") for m in at.markdown), [m.value for m in at.markdown]
        assert not any(m.value.startswith("probability **") for m in at.markdown)
    else:
        assert any(m.value.startswith(f"probability **{float(row['tumor probability']):.3f}**") for m in at.markdown)
    ood_rows = volume_rows[volume_rows["out of distribution"].str.startswith("yes")]
    counted = next(m.value for m in at.markdown if "assessed slices at or above the threshold" in m.value)
    assert f"of {len(volume_rows) - len(ood_rows)}" in counted
    assert len(at.get("image")) >= 2  # the chosen slice's Grad-CAM and the DICOM's
    page_text = " ".join(str(e.value) for kind in ("markdown", "caption", "info", "error", "warning")
                         for e in at.get(kind))
    page_text += table.to_csv()
    for secret in FAKE_IDENTIFIERS:
        assert secret not in page_text


def test_train_form_writes_the_whole_request_with_its_workers(run_folder, monkeypatch):
    """Workers travel in the request (config.json), not as a flag beside it: the form
    hands engine.control one request, and the launcher decides from it."""
    from engine import control
    calls = []

    def fake_start(request, run_id, **kw):
        calls.append(request.to_dict())  # a RunRequest, as it will be written
        return run_id, run_folder
    monkeypatch.setattr(control, "start_run", fake_start)
    at = app_on("train")
    next(n for n in at.number_input if n.label == "Workers (processes)").set_value(2)
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(calls) == 1 and calls[0]["config"]["workers"] == 2 and "cv" not in calls[0]
    next(n for n in at.number_input if n.label == "Workers (processes)").set_value(1)
    next(n for n in at.number_input if n.label.startswith("Cross-validate")).set_value(3)
    next(b for b in at.button if b.label == "Start training").click().run()
    assert calls[1]["cv"] == {"folds": 3, "evaluate_test": True}
    assert calls[1]["config"]["best_metric"] == "last" and calls[1]["config"]["workers"] == 1
    # A cross-validation on several workers: each fold runs as that many processes.
    next(n for n in at.number_input if n.label == "Workers (processes)").set_value(2)
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.error, [e.value for e in at.error]
    assert calls[2]["cv"]["folds"] == 3 and calls[2]["config"]["workers"] == 2


def test_data_page_shows_the_health_report_and_a_gallery(run_folder):
    assert (run_folder / "data_health.json").exists(), "every run folder gets its data health"
    at = app_on("data")
    labels = [m.label for m in at.metric]
    assert {"usable images", "need a look", "tumor share", "distinct slices", "random-split leak"} <= set(labels)
    issues = at.dataframe[0].value
    assert {"conflicting_labels", "blurry", "unreadable", "near_duplicate"} <= set(issues["issue"])


def test_data_page_measures_a_folder_that_predates_the_report(run_folder, tmp_path, monkeypatch):
    import shutil
    root = tmp_path / "runs"
    folder = root / "old-run"
    shutil.copytree(run_folder, folder, ignore=shutil.ignore_patterns("checkpoints", "tb", "data_health.json",
                                                                       "data_issues.csv"))
    monkeypatch.setenv("BRAIN_RUNS_DIR", str(root))
    at = app_on("data", model_choice="run old-run")
    assert any("predates" in i.value for i in at.info)
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert (folder / "data_health.json").exists() and (folder / "data_issues.csv").exists()
    at.run()
    assert "need a look" in [m.label for m in at.metric]


def test_label_review_queue_accepts_a_suggestion_in_one_click_and_retrains(cv_folder, monkeypatch):
    from engine.data.manifest import read_manifest
    from engine.evaluation.review import read_review
    at = app_on("label_review")
    next(s for s in at.selectbox if s.label == "Audit of").set_value("cross-validation fixture-cv").run()
    next(t for t in at.text_input if t.label == "Review name").set_value("queue-review").run()
    assert not at.exception, [e.value for e in at.exception]
    progress = at.get("progress")[0].proto.text
    assert progress.startswith("0 of ") and "flagged groups decided" in progress
    accept = [b for b in at.button if b.label.startswith("Accept the suggestion")]
    assert accept, "a flagged group offers its suggestion"
    group = int(accept[0].key.rsplit("_", 1)[1])
    accept[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    review_file = cv_folder.parent / "label_reviews" / "queue-review.csv"
    decisions = read_review(review_file)
    members = [r for r in read_manifest(cv_folder / "manifest.csv") if r.usable and r.group == group]
    assert {r.path for r in members} == set(decisions)
    assert {d["decision"] for d in decisions.values()} == {"relabel"}
    assert all(int(d["reviewed_label"]) == 1 - int(d["original_label"]) for d in decisions.values())
    assert at.get("progress")[0].proto.text.startswith("1 of ")
    assert not any(b.key == accept[0].key for b in at.button), "a decided group leaves the queue"
    assert any(b.label == "Download the review (CSV)" for b in at.get("download_button"))
    from engine import control
    from engine.config import shipped_config
    started = []
    monkeypatch.setattr(control, "start_run", lambda request, *a, **kw: started.append(request) or ("cv-x", None))
    next(b for b in at.button if b.label == "Retrain with these decisions").click().run()
    assert not at.exception, [e.value for e in at.exception]
    request = started[0].to_dict()
    assert request["cv"]["folds"] == 5
    from engine.request import CrossValidation, RunRequest
    assert request == RunRequest(shipped_config(label_review=str(review_file)), CrossValidation(5)).to_dict()
    assert request["config"]["best_metric"] == "last"


def test_label_review_refuses_a_review_name_that_leaves_the_runs_folder(cv_folder):
    at = app_on("label_review")
    next(s for s in at.selectbox if s.label == "Audit of").set_value("cross-validation fixture-cv").run()
    next(t for t in at.text_input if t.label == "Review name").set_value("../../etc/x").run()
    assert any("letters, digits" in e.value for e in at.error)


def test_train_form_offers_only_review_files_and_refuses_folders_without_images(run_folder, tmp_path):
    """The label review is chosen among runs/label_reviews/ (no free path that reads any
    file of the server); a broken review file and a folder of non-images are refused
    before a run folder exists (issue 32 #9, #16)."""
    from engine import runs
    reviews = run_folder.parent / "label_reviews"
    reviews.mkdir(exist_ok=True)
    (reviews / "broken.csv").write_text("not,a,review\n1,2,3\n")
    before = {r.run_id for r in runs.list_runs(run_folder.parent)}
    at = app_on("train")
    assert not any("review" in t.label.lower() for t in at.text_input)
    choice = next(s for s in at.selectbox if s.label == "Label review (optional)")
    # Only files of runs/label_reviews (other tests of this module add their own there).
    assert choice.options[0] == "none" and "broken.csv" in choice.options
    assert all(option.endswith(".csv") for option in choice.options[1:])
    choice.set_value("broken.csv")
    next(b for b in at.button if b.label == "Start training").click().run()
    assert any("Not started" in e.value for e in at.error), [e.value for e in at.error]
    junk = tmp_path / "data"
    for name in ("yes", "no"):
        (junk / name).mkdir(parents=True)
        for k in range(3):
            (junk / name / f"{k}.png").write_text("this is not an image")
    os.environ["BRAIN_DATA_ROOTS"] = str(tmp_path)
    try:
        at = app_on("train")
        next(t for t in at.text_input if t.label == "Data folder").set_value(str(junk))
        next(b for b in at.button if b.label == "Start training").click().run()
        assert any("Not started" in e.value and "no readable image" in e.value for e in at.error), \
            [e.value for e in at.error]
    finally:
        os.environ.pop("BRAIN_DATA_ROOTS")
    assert {r.run_id for r in runs.list_runs(run_folder.parent)} == before


def test_evaluate_scores_any_model_with_a_chosen_review_file(run_folder):
    import pandas as pd
    from engine.evaluation.review import record_decision
    predictions = pd.read_csv(run_folder / "predictions_test.csv")
    wrong = predictions[predictions["predicted"] != predictions["label"]]
    chosen = (wrong if len(wrong) else predictions).head(2)
    excluded = predictions[~predictions["path"].isin(chosen["path"])].head(1)
    review = run_folder.parent / "label_reviews" / "eval-review.csv"
    record_decision(review, [(p, 0, int(y)) for p, y in zip(chosen["path"], chosen["label"])], "relabel")
    record_decision(review, [(p, 0, int(y)) for p, y in zip(excluded["path"], excluded["label"])], "exclude")
    at = app_on("evaluate")
    next(s for s in at.selectbox if s.label == "Score with a label review too").set_value("eval-review.csv").run()
    assert not at.exception, [e.value for e in at.exception]
    side = next(d.value for d in at.dataframe if "with reviewed labels" in d.value.columns)
    row = dict(zip(side["metric"], side["with reviewed labels"]))
    assert row["images"] == len(predictions) - 1
    labels = predictions["label"].to_numpy().copy()
    flip = predictions["path"].isin(chosen["path"]).to_numpy()
    labels[flip] = 1 - labels[flip]
    keep = ~predictions["path"].isin(excluded["path"]).to_numpy()
    expected = float((predictions["predicted"].to_numpy()[keep] == labels[keep]).mean())
    assert row["accuracy"] == pytest.approx(expected)
    assert any("2 relabelled, 1 excluded" in c.value for c in at.caption)


def test_home_puts_the_cv_figures_beside_the_test_figures_and_explains_the_gap(run_folder):
    import json
    from conftest import ROOT as root
    at = app_on("home", model_choice="Shipped model (checkpoints/)")
    metrics = {m.label: m.value for m in at.metric}
    cv = json.loads((root / "checkpoints" / "cv_summary.json").read_text())
    test = json.loads((root / "checkpoints" / "eval_test.json").read_text())
    assert metrics["CV accuracy"] == f"{100 * cv['mean']['accuracy']:.1f} ± {100 * cv['std']['accuracy']:.1f}%"
    gap = 100 * (cv["mean"]["accuracy"] - test["accuracy"])
    assert any(f"{abs(gap):.1f} points" in m.value and "the range of the folds" in m.value for m in at.markdown)
    # The explanation points the way the test figure lies: above every fold, easier groups;
    # below every fold, harder ones.
    folds = [f["accuracy"] for f in cv["folds"]]
    where = ("above the range" if test["accuracy"] > max(folds) else "below the range"
             if test["accuracy"] < min(folds) else "inside the range")
    explained = next(m.value for m in at.markdown if "the range of the folds" in m.value)
    assert where in explained, explained
    assert ("easier groups" in explained) == (where == "above the range")
    assert ("harder groups" in explained) == (where == "below the range")
    # What the split promises is what the model's own neighbour check finds on it.
    seen = test["seen_in_training"]
    assert seen["images"] > 0
    assert any(f"marks {seen['images']} of its {seen['of']} test images" in c.value for c in at.caption)
    # The shipped split kept an earlier manifest's groups and a pair confirmed by eye.
    assert any("the groups of checkpoints/manifest.csv kept" in c.value and "confirmed by eye" in c.value
               for c in at.caption)
    # A split dealt before the flip-aware copy test is called optimistic; one dealt after is not.
    dealt_with_flips = "dedup_flips" in json.loads((root / "checkpoints" / "data_summary.json").read_text())
    warned = any("dealt before copies turned upside down" in c.value for c in at.caption)
    assert warned != dealt_with_flips
    assert not any("dealt before copies turned upside down" in c.value for c in app_on("home").caption)


def test_twins_are_described_in_each_of_their_summary_forms():
    from ui.common import describe_twins
    model = {"model": "checkpoints", "min_similarity": 0.98811, "pairs": 5398}
    kept = {"groups_from": "m.csv", "pairs": 2533, "matched_images": 3000}
    assert describe_twins(model) == "5,398 pairs at feature similarity ≥ 0.988 in model checkpoints"
    assert describe_twins(kept) == "the groups of m.csv kept, 2,533 pairs"
    assert describe_twins({"pairs": 7931, "sources": [model, kept]}) == (
        "5,398 pairs at feature similarity ≥ 0.988 in model checkpoints; the groups of m.csv kept, 2,533 pairs")


def test_errors_page_shows_the_nearest_training_images_on_request(run_folder):
    assert (run_folder / "neighbours.npz").exists(), "a single run stores its training pool too"
    at = app_on("errors")
    before = len(at.get("imgs") or at.get("image"))
    next(t for t in at.toggle if t.label.startswith("Show the nearest training images")).set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(m.value.startswith("**Most similar images it learnt from**") for m in at.markdown)
    assert len(at.get("imgs") or at.get("image")) > before


def test_pages_that_show_heat_maps_draw_before_importing_tensorflow():
    """Predict, Errors and Label review imported TensorFlow (seconds, cold) before drawing
    anything, so a direct visit showed a blank page. Their module-level imports must not
    load it; the model loads later, behind a spinner."""
    import subprocess
    import sys
    code = (
        "import ast, importlib, sys\n"
        "for page in ('predict', 'errors', 'label_review', 'data', 'evaluate', 'home'):\n"
        "    tree = ast.parse(open(f'app_pages/{page}.py').read())\n"
        "    for node in tree.body:\n"
        "        if isinstance(node, ast.ImportFrom) and node.module:\n"
        "            importlib.import_module(node.module)\n"
        "        elif isinstance(node, ast.Import):\n"
        "            for alias in node.names: importlib.import_module(alias.name)\n"
        "    assert 'tensorflow' not in sys.modules, page\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_runs_page_shows_a_cv_by_its_folds_and_overlays_their_curves(cv_folder):
    at = app_on("runs")
    table = at.dataframe[0].value
    cv_row = table[table["run"] == "fixture-cv"].iloc[0]
    assert cv_row["epochs"].startswith("3/3 folds")
    assert cv_row["CV accuracy (mean ± std)"] and list(table.columns).index("CV accuracy (mean ± std)") == 2
    assert pd_isna(cv_row["best val accuracy"])
    next(m for m in at.multiselect if m.label == "Runs to overlay").set_value(["fixture-cv", "fixture-run"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not any("No finished epoch yet" in c.value for c in at.caption)
    chart = at.get("plotly_chart")[0]
    import json as _json
    names_drawn = {trace["name"] for trace in _json.loads(chart.proto.spec)["data"]}
    assert {"fixture-cv fold 0", "fixture-cv fold 1", "fixture-cv fold 2", "fixture-run"} <= names_drawn
    differences = next(d.value for d in at.dataframe if "setting" in d.value.columns)
    assert "cv folds" in set(differences["setting"])
    assert any(b.label == "Download this table (CSV)" for b in at.get("download_button"))


def pd_isna(value) -> bool:
    import pandas as pd
    return bool(pd.isna(value))


def test_the_chosen_model_lives_in_the_url_and_survives_a_reload(run_folder):
    at = app_on("evaluate")
    assert at.query_params["model"] in ("fixture-run", ["fixture-run"])
    next(s for s in at.selectbox if s.label == "Model").set_value("Shipped model (checkpoints/)").run()
    assert "model" not in at.query_params
    reloaded = AppTest.from_file(APP, default_timeout=120)
    reloaded.query_params["model"] = "fixture-run"  # a reload, or a shared link
    reloaded.run()
    assert reloaded.session_state["model_choice"] == "run fixture-run"
    assert next(s for s in reloaded.selectbox if s.label == "Model").value == "run fixture-run"


def test_try_samples_draws_from_the_chosen_models_own_test_split(run_folder):
    from engine.data.manifest import read_manifest, rows_for_split
    at = app_on("predict")
    next(b for b in at.button if b.label == "Try samples from the test split").click().run()
    assert not at.exception, [e.value for e in at.exception]
    own_test = {r.path for r in rows_for_split(read_manifest(run_folder / "manifest.csv"), "test")}
    drawn = [path for path, _ in at.session_state["samples"]]
    assert drawn and set(drawn) <= own_test
    assert any("this model's test split" in c.value for c in at.caption)


def test_runs_page_compares_cross_validations_image_by_image(cv_folder):
    """Two CVs on the same folds side by side (what bench/oof_compare.py prints): each
    one's errors, how many images k of them get wrong, the shared errors and a CSV; a CV
    of other images is refused with the reason."""
    import csv
    import shutil

    from engine.evaluation.oof import fold_summary, out_of_fold_errors
    other = cv_folder.parent / "fixture-cv-other"
    if not other.exists():
        shutil.copytree(cv_folder, other)
        with open(cv_folder / "oof_predictions.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        for index, row in enumerate(rows):
            if index % 4 == 0:  # a worse model: a quarter of the images turned around
                row["logit"] = str(-float(row["logit"]))
        with open(other / "oof_predictions.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    at = app_on("runs")
    box = next(m for m in at.multiselect if m.label == "Cross-validations")
    box.set_value(["cross-validation fixture-cv", "cross-validation fixture-cv-other"]).run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(d.value for d in at.dataframe if "out-of-fold errors" in d.value.columns)

    def errors_of(folder):
        with open(folder / "oof_predictions.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        labels = np.array([int(r["label"]) for r in rows])
        folds = np.array([int(r["fold"]) for r in rows])
        logits = np.array([float(r["logit"]) for r in rows])
        return out_of_fold_errors(fold_summary(labels, logits, folds, int(folds.max()) + 1))
    assert table["out-of-fold errors"].tolist() == [errors_of(cv_folder), errors_of(other)]
    assert errors_of(other) > errors_of(cv_folder)
    assert any("wrong in all 2" in m.value for m in at.markdown)
    shared = next(d.value for d in at.dataframe if "wrong_in" in d.value.columns)
    assert set(shared["wrong_in"]) <= {1, 2} and len(shared) >= errors_of(other)
    assert any(b.label == "Download these errors (CSV)" for b in at.get("download_button"))
    box.set_value(["cross-validation fixture-cv", "shipped model (checkpoints/)"]).run()
    assert any(w.value.startswith("Not comparable") for w in at.warning)


def test_train_page_shows_how_far_a_large_scan_has_got(run_folder):
    import json
    from engine import runs
    from engine.config import tiny_config
    folder = run_folder.parent / "scanning-run"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"config": tiny_config().to_dict()}))
    runs.write_status(folder, runs.RUNNING, pid=os.getpid(), phase=runs.PHASE_PREPARING,
                      files_found=120_000, files_inspected=48_000)
    try:
        at = AppTest.from_file(APP, default_timeout=120)
        at.session_state["watch_run"] = "scanning-run"
        at.run()
        at.switch_page("app_pages/train.py").run()
        assert not at.exception, [e.value for e in at.exception]
        bars = [p.proto for p in at.get("progress")]
        assert any("48,000 of 120,000 files" in p.text and abs(p.value - 40) <= 1 for p in bars), \
            [(p.text, p.value) for p in bars]
    finally:
        runs.write_status(folder, runs.STOPPED)


def test_predict_gives_no_verdict_on_a_grey_photograph_and_says_why(run_folder):
    """Issue 21, item 3, on the page: a grey photograph passed the feature flag (0.92);
    the shipped model's appearance statistics stop it, with the reason in words, while a
    Br35H test slice beside it gets its verdict."""
    from pathlib import Path

    from sklearn.datasets import load_sample_images

    from engine.data.manifest import read_manifest, rows_for_split
    flower = Image.fromarray(load_sample_images().images[1]).convert("L")
    buffer = io.BytesIO()
    flower.save(buffer, "PNG")
    from engine.serving.inference import load_model, predict_files
    test_rows = rows_for_split(read_manifest(ROOT / "checkpoints" / "manifest.csv"), "test")[:6]
    candidates = [(r.path, Path(r.path).read_bytes()) for r in test_rows]
    predicted = predict_files(load_model(ROOT / "checkpoints"), candidates)
    slice_bytes = next(data for (_, data), p in zip(candidates, predicted) if not p.out_of_distribution)
    at = app_on("predict", model_choice="Shipped model (checkpoints/)")
    at.file_uploader[0].set_value([("grey_flower.png", buffer.getvalue(), "image/png"),
                                   ("slice.jpg", slice_bytes, "image/jpeg")]).run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value.set_index("file")
    assert table.loc["grey_flower.png", "predicted class"] == "not assessed"
    assert table.loc["slice.jpg", "predicted class"] in ("tumor", "no tumor")
    warning = next(w.value for w in at.warning if w.value.startswith("**Not assessed**"))
    assert "grey_flower.png" in warning and "its pixels" in warning


def test_label_review_cards_show_the_out_of_fold_probability_and_other_slices_as_neighbours():
    """The shipped model (a fold ensemble without fold folders): each card shows the
    out-of-fold probability that raised its flag, names the ensemble's figure in-sample,
    and its nearest images leave its own duplicate group out (issue 32 #3, #4)."""
    from engine.evaluation.audit import read_issues
    at = app_on("label_review", model_choice="Shipped model (checkpoints/)")
    issues = read_issues(ROOT / "checkpoints" / "label_issues.csv")
    captions = [i.caption for image in at.get("image") for i in image.proto.imgs]
    shown = " ".join(captions) + " ".join(c.value for c in at.caption)
    flagged = [i for i in issues if i["flagged"]]
    assert any(f"P(tumor) {i['probability']:.3f} (out-of-fold)" in shown for i in flagged), shown[:2000]
    assert "in-sample" in shown
    assert any("Its own duplicate group" in c.value for c in at.caption)


def test_map_page_computes_the_map_then_draws_it_with_its_colourings(run_folder):
    """A run without map.csv: the page says how to make it and makes it on request; then
    the scatter is drawn and every colouring works."""
    (run_folder / "map.csv").unlink(missing_ok=True)
    at = app_on("map")
    assert any("has no map yet" in i.value for i in at.info)
    next(b for b in at.button if b.label == "Compute the map now").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert (run_folder / "map.csv").exists()
    for colouring in ("out-of-fold error", "acquisition-cue score", "health issue"):
        at.selectbox(key="map_colour").set_value(colouring).run()
        assert not at.exception, [e.value for e in at.exception]
        assert any(e.type == "plotly_chart" for e in at.main), "the map is drawn"
    assert any("draw a lasso" in i.value for i in at.info)


def test_errors_page_honours_the_stored_refer_band(run_folder):
    """The shipped model carries a refer band: Errors says how many of its test errors
    the band would have referred (the same rule as Predict), and can leave them out."""
    import json

    import pandas as pd

    from engine.serving import refer
    info = json.loads((ROOT / "checkpoints" / "model.json").read_text())
    frame = pd.read_csv(ROOT / "checkpoints" / "predictions_test.csv")
    wrong = frame[frame["predicted"] != frame["label"]]
    decided = refer.decisions(wrong["probability"].to_numpy(), info["threshold"], info["refer_band"]["margin"])
    expected = sum(d == refer.REFER for d in decided)
    assert 0 < expected <= len(wrong)  # v15's band (answers 15%) refers all 36 test errors
    at = app_on("errors", "Shipped model (checkpoints/)")
    text = " ".join(m.value for m in at.markdown)
    assert f"{expected} of them would have been referred" in text, text
    at.number_input[0].set_value(200).run()
    referred_cards = [c for c in at.caption if "would be referred" in c.value]
    assert referred_cards, "an error inside the band is marked on its card"
    next(t for t in at.toggle if t.label.startswith("Leave out the errors")).set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [c for c in at.caption if "would be referred" in c.value]


def test_evaluate_offers_the_guaranteed_sensitivity_threshold_of_the_shipped_model(run_folder):
    import json
    stored = json.loads((ROOT / "checkpoints" / "model.json").read_text())["sensitivity_threshold"]
    at = app_on("evaluate", "Shipped model (checkpoints/)")
    text = " ".join(m.value for m in at.markdown)
    assert f"{stored['threshold']:.4f}" in text and "learn-then-test" in text
    assert f"sensitivity {100 * stored['test']['sensitivity']:.1f}%" in text  # what it did on the test split


def test_a_kept_split_is_described_with_the_images_it_moved():
    from ui.common import describe_kept_split
    kept = {"from": "checkpoints/manifest.csv", "moved_into_test": ["a", "b", "c"], "moved_out_of_test": ["x"]}
    assert describe_kept_split(kept) == ("the test split of checkpoints/manifest.csv was kept; 3 images moved "
                                         "into it and 1 image out of it with the groups the twins joined across it")
    assert describe_kept_split({"from": "m.csv"}) == "the test split of m.csv was kept; no image moved"
    from ui.common import describe_twins
    assert describe_twins({"pairs_from": "reviews/p.csv", "pairs": 1, "listed": 1}) == (
        "1 pair confirmed by eye in reviews/p.csv")


def test_home_states_every_cue_set_warning_only_above_auc_0_8(run_folder):
    """The shortcut check on Home: a cue set above AUC 0.8 is a warning, one from 0.65 a
    note that it carries some of the label, a weaker one a caption; none is left out."""
    import json
    from engine import layout
    path = run_folder / layout.SHORTCUTS
    original = path.read_text()
    report = json.loads(original)
    assert set(report["cue_sets"]) == {"acquisition", "intensity"}
    report["cue_sets"]["acquisition"].update(auc=0.91, words="The acquisition words (AUC 0.91).")
    report["cue_sets"]["intensity"].update(auc=0.70, words="The intensity words (AUC 0.70).")
    try:
        path.write_text(json.dumps(report))
        at = app_on("home")
        assert any("The acquisition words" in w.value for w in at.warning)
        assert any("The intensity words" in i.value for i in at.info)
        report["cue_sets"]["intensity"].update(auc=0.55, words="The intensity words (AUC 0.55).")
        path.write_text(json.dumps(report))
        at = app_on("home")
        assert any("The intensity words" in c.value for c in at.caption)
        assert not any("The intensity words" in w.value for w in [*at.warning, *at.info])
    finally:
        path.write_text(original)
