"""Cross-validation (engine.cv) and the label audit (engine.audit), end to end on tiny
synthetic data: real training, real files."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from conftest import CV_FOLDS as FOLDS
from conftest import write_class_folders
from engine import runs
from engine.evaluation.audit import audit, confident_classes, label_issue_table
from engine.config import tiny_config
from engine.training.cv import assign_folds, cross_validate, fold_dir, rows_for_fold
from engine.data.manifest import read_manifest
from engine.data.splits import fold_groups
from engine import layout


def test_fold_groups_keep_duplicate_groups_whole_and_balance_labels():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), rng.integers(1, 5, 60))
    labels = (groups % 2).astype(int)
    folds = fold_groups(groups, labels, ["MRI"] * len(groups), 5, seed=1)
    for group in np.unique(groups):
        assert len(set(folds[groups == group].tolist())) == 1
    for fold in range(5):
        share = labels[folds == fold].mean()
        assert 0.3 < share < 0.7
        assert (folds == fold).sum() > 0.1 * len(groups)
    with pytest.raises(ValueError):
        fold_groups(groups, labels, ["MRI"] * len(groups), 1, seed=1)


def test_every_pool_image_has_exactly_one_out_of_fold_prediction(cv_run):
    rows = [r for r in read_manifest(cv_run / "manifest.csv") if r.usable]
    pool = {r.path for r in rows if r.split != "test"}
    test = {r.path for r in rows if r.split == "test"}
    with open(cv_run / "oof_predictions.csv", newline="") as handle:
        oof = list(csv.DictReader(handle))
    assert list(oof[0].keys())[:4] == ["path", "label", "probability", "fold"]
    paths = [r["path"] for r in oof]
    assert len(paths) == len(set(paths)) and set(paths) == pool
    assert not test & set(paths)


def test_no_fold_validation_image_shares_a_group_with_its_training_images(cv_run):
    rows = [r for r in read_manifest(cv_run / "manifest.csv") if r.usable]
    assert any(np.bincount([r.group for r in rows]) > 1), "the data has duplicate groups"
    for fold in range(FOLDS):
        fold_rows = read_manifest(fold_dir(cv_run, fold) / "manifest.csv")
        train = {r.group for r in fold_rows if r.usable and r.split == "train"}
        val = {r.group for r in fold_rows if r.usable and r.split == "val"}
        test = {r.group for r in fold_rows if r.usable and r.split == "test"}
        assert val and train and not (val & train) and not (test & (train | val))
        # The fixed test split is the same in every fold and in the CV manifest.
        assert {r.path for r in fold_rows if r.split == "test"} == {
            r.path for r in rows if r.split == "test"}


def test_cv_summary_has_per_fold_figures_mean_std_and_the_ensemble_on_test(cv_run):
    summary = json.loads((cv_run / "cv_summary.json").read_text())
    assert len(summary["folds"]) == FOLDS
    for key in ("accuracy", "roc_auc", "sensitivity", "specificity", "loss"):
        values = [f[key] for f in summary["folds"]]
        assert summary["mean"][key] == pytest.approx(np.mean(values))
        assert summary["std"][key] == pytest.approx(np.std(values, ddof=1))
    assert summary["mean"]["roc_auc"] > 0.75  # the blobs are learnable despite 10% noise
    assert summary["test"]["count"] > 0 and 0 <= summary["test"]["accuracy"] <= 1
    info = json.loads((cv_run / "model.json").read_text())
    assert info["members"] == FOLDS
    # Each fold is an ordinary run folder that the run readers understand.
    for fold in range(FOLDS):
        summary_run = runs.summarize_run(fold_dir(cv_run, fold))
        assert summary_run.state == "finished" and summary_run.last_epoch["epoch"] == 6


def test_ensemble_export_predicts_the_mean_of_its_members_with_their_spread(cv_run):
    from engine.serving.inference import load_model, predict_files
    ensemble = load_model(cv_run)
    members = [load_model(fold_dir(cv_run, fold)) for fold in range(FOLDS)]
    path = next(r.path for r in read_manifest(cv_run / "manifest.csv") if r.split == "test")
    data = open(path, "rb").read()
    [result] = predict_files(ensemble, [("a.png", data)])
    image = ensemble.model_input(np.asarray(Image.open(path).convert("RGB")))[None]
    member_logits = np.array([m.predict_pixels(image)["member_logits"][0, 0] for m in members])
    # Same graph ops, same weights: only the order of a 3-term float32 mean differs.
    np.testing.assert_allclose(ensemble.predict_pixels(image)["member_logits"][0], member_logits, atol=1e-5)
    from engine.serving.calibration import calibrated
    spread = calibrated(member_logits, ensemble.temperature).std()
    assert result.uncertainty == pytest.approx(spread, abs=1e-5)


def test_label_audit_ranks_most_flipped_files_near_the_top(cv_run, flipped_data):
    _, flipped = flipped_data
    rows = audit(cv_run)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    with open(cv_run / "label_issues.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header[:5] == ["path", "label", "suggested_label", "score", "group"]
    top = {r["path"] for r in rows[:2 * len(flipped)]}
    found = sum(path in top for path in flipped)
    assert found >= 0.7 * len(flipped), f"{found} of {len(flipped)} flipped files in the top {2 * len(flipped)}"
    assert len(rows) == len({r["path"] for r in rows})  # pool and test, each once


def test_confident_learning_flags_only_confidently_other_class_images():
    labels = np.array([1, 1, 1, 0, 0, 0])
    probs = np.array([0.9, 0.8, 0.05, 0.1, 0.2, 0.95])
    # Thresholds: class 1 = mean P(1) over label-1 images = (0.9 + 0.8 + 0.05) / 3 = 0.583;
    # class 0 = mean P(0) over label-0 images = (0.9 + 0.8 + 0.05) / 3 = 0.583.
    np.testing.assert_array_equal(confident_classes(labels, probs), [1, 1, 0, 0, 0, 1])
    # With a sure class-0 image added, class 0's threshold becomes (0.9 + 0.8 + 0.05 + 0.6 + 1) / 5 = 0.67 and the
    # image at P(0) = 0.6 is confidently neither class.
    np.testing.assert_array_equal(
        confident_classes(np.append(labels, [0, 0]), np.append(probs, [0.4, 0.0]))[-2:], [-1, 0])
    table = label_issue_table(labels, probs)
    np.testing.assert_array_equal(table["flagged"], [False, False, True, False, False, True])
    np.testing.assert_allclose(table["score"], [0.1, 0.2, 0.95, 0.1, 0.2, 0.95])


def test_rows_for_fold_and_assign_folds_leave_test_rows_alone(flipped_data):
    from engine.data.manifest import build_manifest
    rows, _ = build_manifest(str(flipped_data[0]), (0.7, 0.15, 0.15), 42, 4)
    assign_folds(rows, FOLDS, 42)
    assert all(r.fold == -1 for r in rows if r.split == "test")
    for fold in range(FOLDS):
        view = rows_for_fold(rows, fold)
        assert [r.split for r in view if r.fold == fold] == ["val"] * sum(r.fold == fold for r in rows)
        assert [v.split for v, r in zip(view, rows) if r.split == "test"] == [
            "test"] * sum(r.split == "test" for r in rows)


def test_ood_statistics_pass_unseen_in_distribution_features_and_flag_shifted_ones():
    from engine.serving.ood import fit
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 2.0, 16)
    features = (rng.normal(size=(2000, 2, 16)) * scale)
    held_out = np.repeat([-1, 0, 1], [1000, 500, 500])
    gaussians = fit(features, held_out)
    fresh = rng.normal(size=(4000, 2, 16)) * scale
    # The thresholds are the 99th percentiles of 500 held-out distances each; the median
    # of the two members' ratios passes at least ~99% of fresh in-distribution samples.
    assert np.mean(gaussians.flags(fresh)) < 0.03
    shifted = fresh + 3.0 * scale  # three standard deviations off in every dimension
    assert np.mean(gaussians.flags(shifted)) > 0.99


def test_a_gradient_image_with_no_brain_is_flagged_out_of_distribution(cv_run, tmp_path):
    import io
    import subprocess
    import sys
    from conftest import ROOT, gradient_16bit
    from engine.serving.inference import load_model, predict_files
    gradient = gradient_16bit(96)
    buffer = io.BytesIO()
    Image.fromarray(gradient).save(buffer, "PNG")
    model = load_model(cv_run)
    normal = next(r.path for r in read_manifest(cv_run / "manifest.csv") if r.split == "test")
    [odd, usual] = predict_files(model, [("gradient.png", buffer.getvalue()),
                                         ("slice.png", open(normal, "rb").read())], explain=True)
    assert odd.out_of_distribution is True and odd.probability is not None  # still predicted
    assert usual.out_of_distribution is False
    (tmp_path / "gradient.png").write_bytes(buffer.getvalue())
    out = subprocess.run([sys.executable, "-m", "engine.predict", "--model", str(cv_run), "--json",
                          str(tmp_path / "gradient.png")], cwd=ROOT, capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["out_of_distribution"] is True and 0 <= record["probability"] <= 1
    assert record["uncertainty"] is not None
    report = json.loads((cv_run / "eval_test.json").read_text())
    assert 0.0 <= report["ood_flagged_share"] <= 0.2
    # The CV's test evaluation says how many test images its own neighbour check calls
    # seen in training (its fixture data hold no copies across the split).
    seen = report["seen_in_training"]
    assert seen["of"] == report["count"] and 0 <= seen["images"] <= seen["of"] and seen["groups"] <= seen["of_groups"]


def test_a_stopped_cv_resumes_with_its_unfinished_fold(tmp_path):
    """Stop lands in fold 1 (as SIGTERM would: the stop flag is checked between steps);
    the resumed CV keeps fold 0 as it was and finishes fold 1 from its checkpoint."""
    from engine.training.loop import StopRequested
    data = write_class_folders(tmp_path / "data", per_class=24)
    folder = tmp_path / "cv"

    class StopInFoldOne(StopRequested):
        signal_name = "SIGTERM"

        @property
        def requested(self):
            return bool(runs.read_metrics(folder / "fold_1", "step"))

        @requested.setter
        def requested(self, value):
            pass

    config = tiny_config(data_dir=str(data), epochs=3, dedup_distance=-1, flip_tta=False)
    status = cross_validate(config, folder, 2, stop=StopInFoldOne())
    assert status["state"] == "stopped" and status["fold"] == 1
    assert runs.read_status(folder / "fold_0")["state"] == "finished"
    assert runs.read_status(folder / "fold_1")["state"] == "stopped"
    fold0_metrics = (folder / "fold_0" / "metrics.jsonl").read_bytes()
    status = cross_validate(config, folder, 2)  # what `python -m engine.cv --resume` calls
    assert status["state"] == "finished"
    assert (folder / "fold_0" / "metrics.jsonl").read_bytes() == fold0_metrics
    epochs = [r["epoch"] for r in runs.read_metrics(folder / "fold_1", "epoch")]
    assert epochs == [1, 2, 3]
    assert json.loads((folder / "cv_summary.json").read_text())["folds_count"] == 2


def test_out_of_fold_errors_count_each_fold_at_its_cross_fitted_threshold():
    """The error count the Keras comparison ranks by equals a direct recount of the
    images each fold gets wrong at the threshold and temperature fitted on the others."""
    from engine.serving.calibration import calibrated
    from engine.evaluation.oof import fold_summary, out_of_fold_errors
    rng = np.random.default_rng(5)
    labels = np.tile([0, 1], 150)
    logits = (2 * labels - 1) * 1.5 + rng.normal(0, 1.5, labels.size)  # overlapping classes
    fold_of = np.arange(labels.size) % 3
    summary = fold_summary(labels, logits, fold_of, 3)
    wrong = 0
    for fold in summary["folds"]:
        held = fold_of == fold["fold"]
        predicted = calibrated(logits[held], fold["temperature"]) >= fold["threshold"]
        wrong += int((predicted != labels[held].astype(bool)).sum())
    assert wrong > 10
    assert out_of_fold_errors(summary) == wrong


def test_the_cv_stores_its_pool_and_predict_names_the_nearest_training_images(cv_run):
    """neighbours.npz holds every out-of-fold image; engine.predict --neighbours on a pool
    image finds it (or a copy) first and says it was seen; on an image from elsewhere it
    does not."""
    import json
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from conftest import ROOT
    from engine.data.manifest import read_manifest
    from engine.serving.neighbours import NeighbourIndex
    index = NeighbourIndex.load(cv_run)
    assert index is not None and (cv_run / layout.NEIGHBOURS).stat().st_size < 10e6
    pool = [r for r in read_manifest(cv_run / "manifest.csv") if r.usable and r.split != "test"]
    assert sorted(index.paths.tolist()) == sorted(r.path for r in pool)
    assert index.vectors.dtype == np.float32 and 0 < index.seen_threshold <= 1.0001
    # A pool image shown on Errors or Label review is left out of its own neighbours.
    own = index.paths[0]
    assert index.query(index.vectors[:1], 3)[0]["neighbours"][0]["path"] == own
    found = index.query(index.vectors[:1], 3, exclude=[own])[0]
    excluded = found["neighbours"]
    assert len(excluded) == 3 and own not in {n["path"] for n in excluded}
    # ... with the rest of its duplicate group: its copies are not "similar other images".
    assert index.groups[0] not in {n["group"] for n in excluded}
    assert found["copies_left_out"] == int((index.groups == index.groups[0]).sum()) - 1
    member = pool[0]
    stranger = cv_run / "stranger.png"
    rng = np.random.default_rng(5)
    Image.fromarray((rng.random((90, 140, 3)) * 255).astype(np.uint8)).save(stranger)
    done = subprocess.run([sys.executable, "-m", "engine.predict", "--json", "--neighbours", "3",
                           "--model", str(cv_run), member.path, str(stranger)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    own, other = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(own["neighbours"]) == 3
    assert own["neighbours"][0]["group"] == member.group and own["seen_in_training"] is True
    sims = [n["similarity"] for n in own["neighbours"]]
    assert sims == sorted(sims, reverse=True)
    assert set(own["neighbours"][0]) == {"path", "label", "group", "similarity"}
    assert other["seen_in_training"] is False


@pytest.mark.xdist_group("cv_jobs")
def test_folds_as_separate_jobs_then_collect_give_the_same_summary(tmp_path):
    """python -m engine.cv --fold k for every k, run at the same time as a scheduler's
    array would, then --collect, gives the cv_summary.json of one engine.cv run on the
    same settings; --collect refuses while a fold is missing."""
    import json
    import subprocess
    import sys

    from conftest import ROOT, write_class_folders
    from engine.config import tiny_config
    data = write_class_folders(tmp_path / "data", per_class=16, seed=2)
    config = tiny_config(data_dir=str(data), epochs=2, flip_tta=False)
    config_file = tmp_path / "request.json"
    config_file.write_text(json.dumps({"config": config.to_dict()}))
    single = tmp_path / "single"
    base = [sys.executable, "-m", "engine.cv", "--config", str(config_file), "--folds", "2", "--run-dir"]
    done = subprocess.run(base + [str(single)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    jobs_dir = tmp_path / "jobs"
    job0 = subprocess.Popen(base + [str(jobs_dir), "--fold", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    early = subprocess.run([sys.executable, "-m", "engine.cv", "--collect", str(jobs_dir)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    job1 = subprocess.run(base + [str(jobs_dir), "--fold", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    out0, err0 = job0.communicate(timeout=600)
    assert job0.returncode == 0 and job1.returncode == 0, (err0[-2000:], job1.stderr[-2000:])
    assert early.returncode == 2
    assert "not every fold has finished" in early.stderr or "not a cross-validation folder" in early.stderr
    collected = subprocess.run([sys.executable, "-m", "engine.cv", "--collect", str(jobs_dir)], cwd=ROOT,
                               capture_output=True, text=True, timeout=600)
    assert collected.returncode == 0, collected.stderr[-2000:]
    one = json.loads((single / "cv_summary.json").read_text())
    many = json.loads((jobs_dir / "cv_summary.json").read_text())
    assert (single / "manifest.csv").read_text().count("\n") == (jobs_dir / "manifest.csv").read_text().count("\n")
    for a, b in zip(one["folds"], many["folds"]):
        assert a["images"] == b["images"]
        for key in ("accuracy", "roc_auc", "loss", "threshold", "temperature"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
    assert one["mean"]["accuracy"] == pytest.approx(many["mean"]["accuracy"], abs=1e-6)
    assert (jobs_dir / "export" / "saved_model.pb").exists() and (jobs_dir / "oof_predictions.csv").exists()


def test_a_stop_asked_between_two_folds_starts_no_further_fold(tmp_path):
    """cross_validate with its own fold trainer (as the launcher of several workers
    passes one): a stop that arrives after a fold finished, before the next one starts,
    ends the CV as stopped at that next fold, which never starts."""
    from engine.training.cv import prepare_fold
    from engine.training.loop import StopRequested
    data = write_class_folders(tmp_path / "data", per_class=12)
    config = tiny_config(data_dir=str(data), epochs=1, dedup_distance=-1)
    stop = StopRequested()
    started = []

    def train_fold(config, cv_dir, rows, fold, folds, stop):
        folder, resume = prepare_fold(cv_dir, rows, fold, folds, config)
        started.append((fold, resume))
        stop.requested, stop.signal_name = True, "SIGTERM"  # arrives as the fold ends
        return runs.write_status(folder, runs.FINISHED)

    status = cross_validate(config, tmp_path / "cv", 3, stop=stop, train_fold=train_fold)
    assert started == [(0, False)]
    assert status["state"] == "stopped" and status["fold"] == 1 and status["stopped_by"] == "SIGTERM"
    assert runs.read_status(tmp_path / "cv" / "fold_0")["state"] == "finished"
    assert not (tmp_path / "cv" / "fold_1").exists()
    assert "fold 1/3: training" in (tmp_path / "cv" / "train.log").read_text()
