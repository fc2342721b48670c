"""Several cross-validations on the same folds, side by side: each scored as engine.cv
scores its own folds (a threshold and temperature per fold, fitted on the other folds),
and their errors compared image by image.

Why: a seed alone moves a CV's error count by a quarter, so two recipes are compared on
the images they get wrong, not on one number. Images every model misclassifies, whatever
its recipe or seed, bound what any recipe of that family can gain; they are the first
ones to show a label reviewer. Pure NumPy; ``bench/oof_compare.py`` and the Runs page
both use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import layout
from engine.evaluation.intervals import delong, paired_difference
from engine.evaluation.oof import (
    cross_fitted_predictions, cross_fitted_probabilities, fold_summary, out_of_fold_errors, read_oof
)


class NotComparable(ValueError):
    """The sources do not cover the same images with the same folds."""


def read_source(source: str | os.PathLike) -> dict[str, dict]:
    """path -> {label, logit, fold, group} from a CV folder (its oof_predictions.csv) or
    an out-of-fold CSV with path,label,logit,fold columns."""
    path = Path(source)
    rows = read_oof(path / layout.OOF_PREDICTIONS if path.is_dir() else path)
    return {r["path"]: {"label": int(r["label"]), "logit": float(r["logit"]), "fold": int(r["fold"]),
                        "group": r.get("group", "")} for r in rows}


@dataclass
class Comparison:
    names: list[str]
    paths: list[str]
    labels: np.ndarray  # [N]
    folds: np.ndarray  # [N]
    groups: list[str]  # [N], "" where the first source does not record it
    summaries: list[dict]  # fold_summary per source
    wrong: np.ndarray  # [S, N] bool: source s misclassifies image n (cross-fitted)
    probabilities: np.ndarray  # [S, N] cross-fitted probabilities

    @property
    def wrong_in(self) -> np.ndarray:
        return self.wrong.sum(axis=0)

    def paired(self, other: int, first: int = 0) -> dict:
        """Source ``other`` minus source ``first`` on the same images: accuracy,
        sensitivity, specificity and ROC AUC differences with paired group-bootstrap
        intervals (duplicate groups resampled when the sources record them), and DeLong's
        p-value for the AUC difference."""
        groups = None if any(g in ("", "None") for g in self.groups) else self.groups
        thresholds = [np.vectorize({f["fold"]: f["threshold"] for f in s["folds"]}.get)(self.folds)
                      for s in self.summaries]
        result = paired_difference(self.labels, self.probabilities[first], self.probabilities[other],
                                   thresholds[first], thresholds[other], groups)
        result["delong"] = delong(self.labels, self.probabilities[first], self.probabilities[other])
        result["resampled"] = "duplicate groups" if groups is not None else "images"
        return result

    def errors(self) -> list[int]:
        return [out_of_fold_errors(summary) for summary in self.summaries]

    def misclassified_by(self) -> list[int]:
        """Images misclassified by exactly k of the sources, k = 0..S."""
        return [int((self.wrong_in == k).sum()) for k in range(len(self.names) + 1)]

    def error_rows(self) -> list[dict]:
        """One row per image misclassified by any source, most often wrong first."""
        order = sorted(np.flatnonzero(self.wrong_in > 0), key=lambda i: (-self.wrong_in[i], self.paths[i]))
        return [{"path": self.paths[i], "label": int(self.labels[i]), "fold": int(self.folds[i]),
                 "group": self.groups[i], "wrong_in": int(self.wrong_in[i]),
                 "mean_probability": float(self.probabilities[:, i].mean()),
                 **{f"wrong in {name}": bool(self.wrong[s, i]) for s, name in enumerate(self.names)}}
                for i in order]


def compare(sources: dict[str, dict[str, dict]]) -> Comparison:
    """Score and compare ``{name: read_source(...)}``; raises NotComparable unless every
    source covers the same images with the same folds as the first."""
    names = list(sources)
    tables = list(sources.values())
    paths = sorted(tables[0])
    for name, table in zip(names[1:], tables[1:]):
        if sorted(table) != paths or any(table[p]["fold"] != tables[0][p]["fold"] for p in paths):
            raise NotComparable(f"{name} does not cover the same images with the same folds as {names[0]}")
    labels = np.array([tables[0][p]["label"] for p in paths])
    folds = np.array([tables[0][p]["fold"] for p in paths])
    count = int(folds.max()) + 1 if len(folds) else 0
    summaries, wrong, probabilities = [], [], []
    for table in tables:
        logits = np.array([table[p]["logit"] for p in paths])
        summary = fold_summary(labels, logits, folds, count)
        summaries.append(summary)
        wrong.append(cross_fitted_predictions(summary, logits, folds) != labels)
        probabilities.append(cross_fitted_probabilities(summary, logits, folds))
    return Comparison(names, paths, labels, folds, [str(tables[0][p]["group"]) for p in paths], summaries,
                      np.array(wrong), np.array(probabilities))
