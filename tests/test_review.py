"""Label review decisions: the file, and training and evaluation with reviewed labels."""

import json

import pytest

from conftest import write_class_folders
from engine import runs
from engine.config import tiny_config
from engine.data.manifest import read_manifest
from engine.evaluation.review import ReviewFileError, apply_review, read_review, record_decision
from engine.training.loop import train_and_evaluate


def test_decisions_are_recorded_per_image_and_replaced_on_a_second_decision(tmp_path):
    path = tmp_path / "review.csv"
    record_decision(path, [("a.png", 3, 0), ("b.png", 3, 0)], "relabel", "lesion visible", "dr x")
    record_decision(path, [("c.png", 4, 1)], "exclude")
    record_decision(path, [("b.png", 3, 0)], "keep", "second look")
    decisions = read_review(path)
    assert decisions["a.png"]["decision"] == "relabel" and decisions["a.png"]["reviewed_label"] == "1"
    assert decisions["a.png"]["note"] == "lesion visible" and decisions["a.png"]["reviewer"] == "dr x"
    assert decisions["b.png"]["decision"] == "keep" and decisions["b.png"]["note"] == "second look"
    assert decisions["c.png"]["decision"] == "exclude" and decisions["c.png"]["time"]
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError):
        record_decision(path, [("a.png", 3, 0)], "delete")


def test_a_file_that_is_not_a_review_is_refused_with_the_reason(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,value\nx,1\n")
    with pytest.raises(ReviewFileError, match="no decision, path column"):
        read_review(bad)
    bad.write_text("path,decision\nx.png,maybe\n")
    with pytest.raises(ReviewFileError, match="line 2"):
        read_review(bad)
    assert read_review(tmp_path / "missing.csv") == {}


def test_training_uses_reviewed_labels_and_evaluation_reports_both(tmp_path):
    data = write_class_folders(tmp_path / "data", per_class=30)
    config = tiny_config(data_dir=str(data), dedup_distance=-1, epochs=1)
    # First a plain run, to know which images land in which split.
    plain = tmp_path / "plain"
    assert train_and_evaluate(config, plain, final_evaluation=False)["state"] == "finished"
    rows = read_manifest(plain / "manifest.csv")
    test_rows = [r for r in rows if r.split == "test"]
    train_rows = [r for r in rows if r.split == "train"]
    review = tmp_path / "review.csv"
    record_decision(review, [(test_rows[0].path, test_rows[0].group, test_rows[0].label)], "relabel")
    record_decision(review, [(r.path, r.group, r.label) for r in train_rows[:5]], "exclude")

    folder = tmp_path / "reviewed"
    status = train_and_evaluate(config.replace(label_review=str(review)), folder)
    assert status["state"] == "finished"
    reviewed = {r.path: r for r in read_manifest(folder / "manifest.csv")}
    relabelled = reviewed[test_rows[0].path]
    assert relabelled.review == "relabel" and relabelled.label == 1 - relabelled.original_label
    assert all(reviewed[r.path].review == "exclude" for r in train_rows[:5])
    derived = runs.read_config_file(folder)["derived"]
    assert derived["train_images"] == len(train_rows) - 5
    assert (folder / "label_review.csv").read_text() == review.read_text()

    report = json.loads((folder / "eval_test.json").read_text())
    assert report["count"] == len(test_rows)  # as labelled: every test image, original labels
    side = report["with_reviewed_labels"]
    assert side["relabelled"] == 1 and side["count"] == len(test_rows)
    labels = [r.original_label for r in test_rows]
    assert report["confusion_matrix"]["tp"] + report["confusion_matrix"]["fn"] == sum(labels)
    assert side["confusion_matrix"]["tp"] + side["confusion_matrix"]["fn"] == (
        sum(labels) + (1 if relabelled.label == 1 else -1))


def test_apply_review_keeps_the_original_label():
    from engine.data.manifest import ManifestRow
    rows = [ManifestRow("a", 1, "yes", "MRI", original_label=1),
            ManifestRow("b", 0, "no", "MRI", original_label=0)]
    apply_review(rows, {"a": {"decision": "relabel"}, "b": {"decision": "exclude"}})
    assert (rows[0].label, rows[0].original_label, rows[0].review) == (0, 1, "relabel")
    assert (rows[1].label, rows[1].original_label, rows[1].review) == (0, 0, "exclude")
