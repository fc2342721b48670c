"""The embedding map (engine.evaluation.embedding_map, engine.map) and the Map page's
selection logic (ui.map_view), on real features and real files."""

import csv
import subprocess
import sys

import numpy as np
import pandas as pd

from conftest import ROOT
from engine import layout
from engine.evaluation.embedding_map import layout_points, write_map
from engine.evaluation.review import read_review, record_decision
from ui import map_view


def _clusters(rng, per_cluster=120, dims=64, copies=3):
    """Two well separated classes, each made of groups of near-identical copies."""
    centres = rng.normal(size=(2, dims)) * 4
    vectors, labels, groups = [], [], []
    for label in (0, 1):
        for group in range(per_cluster // copies):
            base = centres[label] + rng.normal(size=dims)
            for _ in range(copies):
                vectors.append(base + 0.05 * rng.normal(size=dims))
                labels.append(label)
                groups.append(label * 1000 + group)
    vectors = np.array(vectors, np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), np.array(labels), np.array(groups)


def _neighbour_purity(points, labels, k=10):
    distance = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(distance, np.inf)
    nearest = np.argsort(distance, axis=1)[:, :k]
    return float((labels[nearest] == labels[:, None]).mean())


def test_the_map_keeps_neighbourhoods_and_places_points_it_did_not_fit():
    vectors, labels, groups = _clusters(np.random.default_rng(0))
    points, how = layout_points(vectors, groups, seed=0)
    assert how["fitted"] == len(vectors) and how["placed"] == 0
    assert _neighbour_purity(points, labels) > 0.95
    # Above the fitting limit: one image per duplicate group is fitted, its copies placed.
    points, how = layout_points(vectors, groups, seed=0, max_fitted=len(vectors) // 2)
    assert how["fitted"] == len(np.unique(groups)) and how["placed"] == len(vectors) - how["fitted"]
    assert _neighbour_purity(points, labels) > 0.95
    # A placed copy lands next to its fitted original, not somewhere in the other class.
    for group in np.unique(groups)[:10]:
        members = points[groups == group]
        spread = np.linalg.norm(members - members.mean(0), axis=1).max()
        assert spread < 0.1 * np.ptp(points, axis=0).max()


def test_engine_map_writes_map_csv_from_a_model_folder(tmp_path):
    rng = np.random.default_rng(1)
    vectors, labels, groups = _clusters(rng, per_cluster=60)
    paths = [str(tmp_path / f"img{i}.png") for i in range(len(vectors))]
    np.savez(tmp_path / layout.NEIGHBOURS, vectors=vectors.astype(np.float16), paths=np.array(paths),
             labels=labels, groups=groups, folds=groups % 3, seen_threshold=np.float32(0.99))
    with open(tmp_path / layout.predictions("oof"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "probability", "predicted", "correct"])
        for index, (path, label) in enumerate(zip(paths, labels)):
            wrong = index % 10 == 0
            writer.writerow([path, label, 0.9 if label != wrong else 0.1, int(label != wrong), int(not wrong)])
    result = subprocess.run([sys.executable, "-m", "engine.map", str(tmp_path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"map of {len(vectors)} images" in result.stdout
    frame = map_view.read_map(tmp_path / layout.MAP)
    assert len(frame) == len(vectors) and list(frame["path"]) == paths
    assert frame["error"].sum() == len(vectors) // 10  # the out-of-fold errors travel with their images
    assert set(frame["health_issues"]) == {"none"}
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = subprocess.run([sys.executable, "-m", "engine.map", str(empty)], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and "neighbours.npz" in refused.stderr


def test_a_lasso_selection_opens_its_rows_and_marks_them_excluded(tmp_path):
    frame = pd.DataFrame({"path": [str(tmp_path / f"{i}.png") for i in range(6)], "x": range(6), "y": range(6),
                          "label": [0, 0, 1, 1, 1, 0], "group": [1, 1, 2, 3, 3, 4], "fold": 0,
                          "error": [0, 1, 0, 0, 1, np.nan], "flagged": [0, 0, 1, 0, 0, 0]})
    event = {"selection": {"points": [{"customdata": [1]}, {"customdata": [4]}, {"customdata": [4]},
                                      {"customdata": [99]}]}}  # a repeated point and one not drawn
    picked = map_view.selected_rows(frame, event)
    assert list(picked.index) == [1, 4]
    assert map_view.summary(picked) == {"images": 2, "tumor labels": 1, "no-tumor labels": 1, "duplicate groups": 2,
                                        "out-of-fold errors": 2, "flagged labels": 0}
    assert map_view.selected_rows(frame, {"selection": {"points": []}}).empty
    review = tmp_path / "map_review.csv"
    record_decision(review, map_view.exclusion_images(picked), "exclude", note="from the map")
    decisions = read_review(review)
    assert set(decisions) == {str(tmp_path / "1.png"), str(tmp_path / "4.png")}
    assert {d["decision"] for d in decisions.values()} == {"exclude"}


def test_the_shipped_model_ships_its_map():
    frame = map_view.read_map(ROOT / "checkpoints" / layout.MAP)
    with np.load(ROOT / "checkpoints" / layout.NEIGHBOURS) as data:
        assert len(frame) == len(data["paths"])
    assert frame["error"].notna().all()  # every pool image has its out-of-fold verdict
    # Copies of one slice lie together: the median distance within duplicate groups is
    # under a tenth of the median distance between random pairs (measured: 0.05).
    xy = frame[["x", "y"]].to_numpy()
    rng = np.random.default_rng(0)
    first, second = rng.integers(0, len(frame), 20_000), rng.integers(0, len(frame), 20_000)
    between = np.median(np.linalg.norm(xy[first] - xy[second], axis=1))
    within = []
    for members in frame.groupby("group").indices.values():
        if len(members) > 1:
            points = xy[members]
            distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
            within.extend(distances[np.triu_indices(len(members), 1)])
    assert np.median(within) < 0.1 * between


def test_an_upload_is_placed_among_its_nearest_training_images(tmp_path):
    frame = pd.DataFrame({"path": [str(tmp_path / f"{i}.png") for i in range(4)], "x": [0.0, 10.0, 10.0, -50.0],
                          "y": [0.0, 0.0, 10.0, -50.0]})
    near = [{"path": str(tmp_path / "1.png"), "similarity": 0.9}, {"path": str(tmp_path / "2.png"), "similarity": 0.9},
            {"path": str(tmp_path / "gone.png"), "similarity": 0.99}]  # one not on the map
    assert map_view.place(frame, near) == (10.0, 5.0)
    assert map_view.place(frame, [{"path": "elsewhere.png", "similarity": 1.0}]) is None
