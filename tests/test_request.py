"""The typed run request (engine.request): one reader and one writer of config.json."""

import json

import pytest

from engine import layout
from engine.config import tiny_config
from engine.request import CrossValidation, RequestError, RunRequest, planned_folds, read_record, stored_request


def test_a_request_survives_its_file_and_a_cv_exports_its_last_epoch(tmp_path):
    request = RunRequest(tiny_config(best_metric="val/auc", epochs=3), CrossValidation(3, evaluate_test=False))
    assert request.config.best_metric == "last"  # forced once, whoever builds a CV request
    request.write(tmp_path)
    stored = json.loads((tmp_path / layout.CONFIG).read_text())
    assert stored["cv"] == {"folds": 3, "evaluate_test": False}
    again = RunRequest.read(tmp_path)
    assert again == request and again.to_dict() == request.to_dict()
    assert planned_folds(tmp_path) == 3
    assert RunRequest(tiny_config()).config.best_metric != "last"  # a plain run chooses on val


def test_the_record_is_kept_beside_the_request_and_extending_keeps_it(tmp_path):
    RunRequest(tiny_config(epochs=2)).write(tmp_path, derived={"steps_per_epoch": 7}, environment={"workers": 1})
    RunRequest.read(tmp_path).replace(epochs=5).write(tmp_path)  # what a resume with more epochs writes
    assert RunRequest.read(tmp_path).config.epochs == 5
    assert read_record(tmp_path) == {"derived": {"steps_per_epoch": 7}, "environment": {"workers": 1}}
    with pytest.raises(ValueError):
        RunRequest(tiny_config()).write(tmp_path, status={"state": "x"})


def test_bad_requests_are_refused_with_a_reason(tmp_path):
    assert stored_request(tmp_path) is None
    with pytest.raises(RequestError, match="no run request"):
        RunRequest.read(tmp_path)
    (tmp_path / layout.CONFIG).write_text("{not json")
    with pytest.raises(RequestError, match="cannot be read"):
        RunRequest.read(tmp_path)
    for payload in ({}, {"cv": {"folds": 2}}, [1, 2]):
        with pytest.raises(RequestError, match="config"):
            RunRequest.from_dict(payload)
    with pytest.raises(RequestError, match="not valid"):
        RunRequest.from_dict({"config": {"learning_rat": 0.1}})
    with pytest.raises(RequestError, match="at least 2"):
        CrossValidation(1)
    # A hand-written --config file may hold the config fields alone.
    bare = tmp_path / "mine.json"
    bare.write_text(json.dumps({"epochs": 4, "image_size": 64}))
    assert RunRequest.read(bare).config.epochs == 4
