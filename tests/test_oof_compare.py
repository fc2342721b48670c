"""bench/oof_compare.py's command line on synthetic out-of-fold CSVs: each source scored
as engine.cv scores it, the mean-logit ensemble, and the image-by-image error overlap."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import oof_compare  # noqa: E402
from engine.evaluation.oof import cross_fitted_predictions, fold_summary, out_of_fold_errors  # noqa: E402

FOLDS = 3


def _write_source(path: Path, names, labels, logits, folds, groups=None) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "probability", "fold", "logit"] + (["group"] if groups is not None else []))
        for i, name in enumerate(names):
            extra = [groups[i]] if groups is not None else []
            writer.writerow([name, labels[i], f"{1 / (1 + np.exp(-logits[i])):.6f}", folds[i],
                             f"{logits[i]:.6f}", *extra])


@pytest.fixture()
def three_sources(tmp_path):
    rng = np.random.default_rng(11)
    n = 240
    names = [f"/data/img_{i:03d}.png" for i in range(n)]
    labels = np.tile([0, 1], n // 2)
    folds = np.arange(n) % FOLDS
    groups = np.arange(n) // 4
    signal = (2 * labels - 1) * 1.5
    hard = np.zeros(n, bool)
    hard[:12] = True  # every model sees these 12 with the wrong sign
    logits = []
    for k in range(3):
        values = signal + rng.normal(0, 1.4, n)
        values[hard] = -4 * (2 * labels[hard] - 1)
        logits.append(np.round(values, 6))
    cv_dir = tmp_path / "cv"
    cv_dir.mkdir()
    _write_source(cv_dir / "oof_predictions.csv", names, labels, logits[0], folds, groups)
    with open(cv_dir / "label_issues.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "flagged"])
        for i in range(n):
            writer.writerow([names[i], labels[i], "True" if i < 5 else "False"])
    sources = [str(cv_dir)]
    for k in (1, 2):
        sources.append(str(tmp_path / f"other_{k}.csv"))
        _write_source(Path(sources[-1]), names, labels, logits[k], folds)
    return sources, names, labels, folds, logits, hard


def test_rows_and_overlap_match_a_direct_recount(three_sources, tmp_path, capsys):
    sources, names, labels, folds, logits, hard = three_sources
    out = tmp_path / "overlap.csv"
    assert oof_compare.main([*sources, "--ensemble", "--overlap", str(out)]) == 0
    printed = capsys.readouterr().out

    wrong = []
    for values in logits:
        summary = fold_summary(labels, values, folds, FOLDS)
        predicted = cross_fitted_predictions(summary, values, folds)
        assert out_of_fold_errors(summary) == int((predicted != labels).sum())
        assert f"| {out_of_fold_errors(summary)} |" in printed
        wrong.append(predicted != labels)
    ensemble = fold_summary(labels, np.mean(logits, axis=0), folds, FOLDS)
    assert "mean logit of the 3 above" in printed and f"| {out_of_fold_errors(ensemble)} |" in printed

    wrong_in = np.sum(wrong, axis=0)
    counts = [int((wrong_in == k).sum()) for k in range(4)]
    assert f"k = 0..3: {counts}" in printed
    assert counts[3] >= hard.sum()  # the planted errors are made by all three
    assert f"misclassified by all 3: {counts[3]}" in printed
    assert f"flagged by the label audit of {sources[0]}: 5" in printed  # the 5 flagged are all hard

    rows = list(csv.DictReader(open(out)))
    assert len(rows) == int((wrong_in > 0).sum())
    assert [int(r["wrong_in"]) for r in rows] == sorted((int(r["wrong_in"]) for r in rows), reverse=True)
    by_path = {r["path"]: r for r in rows}
    for i in np.flatnonzero(hard):
        row = by_path[names[i]]
        assert row["wrong_in"] == "3" and row["group"] == str(i // 4)
        assert [row[f"wrong_{k}"] for k in range(3)] == ["1", "1", "1"]
        assert (float(row["mean_probability"]) > 0.5) != bool(labels[i])


def test_sources_on_other_folds_are_refused(three_sources, tmp_path):
    sources, names, labels, folds, logits, _ = three_sources
    shifted = tmp_path / "shifted.csv"
    _write_source(shifted, names, labels, logits[1], (folds + 1) % FOLDS)
    with pytest.raises(SystemExit, match="same folds"):
        oof_compare.main([sources[0], str(shifted)])


def test_keras_comparison_scores_saved_predictions_on_the_same_folds(cv_run, tmp_path, capsys):
    """bench/keras_cv.py --keras-oof on a real (tiny) engine.cv folder: both sides scored
    as engine.cv scores them, the ratio of their error counts, and a refusal when the
    saved predictions come from other folds."""
    from bench import keras_cv
    from engine.evaluation.oof import read_oof
    rows = read_oof(cv_run / "oof_predictions.csv")
    labels = np.array([int(r["label"]) for r in rows])
    folds = np.array([int(r["fold"]) for r in rows])
    engine_logits = np.array([float(r["logit"]) for r in rows])
    other = engine_logits.copy()
    other[::4] = -other[::4]  # a worse "Keras" model: a quarter of the images turned around
    saved = tmp_path / "keras_plain_oof_predictions.csv"
    _write_source(saved, [r["path"] for r in rows], labels, other, folds)

    assert keras_cv.main([str(cv_run), "--keras-oof", str(saved)]) == 0
    printed = capsys.readouterr().out
    count = folds.max() + 1
    engine_errors = out_of_fold_errors(fold_summary(labels, engine_logits, folds, count))
    keras_errors = out_of_fold_errors(fold_summary(labels, other, folds, count))
    assert keras_errors > engine_errors  # the turned-around quarter makes the saved model worse
    assert "| engine | " in printed and f"| {engine_errors} |" in printed
    assert f"| {keras_errors} |" in printed
    assert f"engine / Keras out-of-fold errors: {engine_errors / keras_errors:.2f}" in printed

    _write_source(saved, [r["path"] for r in rows], labels, other, (folds + 1) % count)
    with pytest.raises(SystemExit, match="different folds"):
        keras_cv.main([str(cv_run), "--keras-oof", str(saved)])


def test_paired_comparison_of_a_source_with_itself_is_zero_and_with_another_has_intervals(three_sources):
    from engine.evaluation.oof_compare import compare, read_source
    sources = three_sources[0]
    comparison = compare({"a": read_source(sources[0]), "a again": read_source(sources[0]),
                          "b": read_source(sources[1])})
    same = comparison.paired(1)
    assert same["accuracy"]["difference"] == 0 and same["accuracy"]["ci"] == [0.0, 0.0]
    assert same["delong"]["p_value"] == 1.0
    other = comparison.paired(2)
    assert other["roc_auc"]["ci"][0] <= other["roc_auc"]["difference"] <= other["roc_auc"]["ci"][1]
    assert 0.0 <= other["delong"]["p_value"] <= 1.0
