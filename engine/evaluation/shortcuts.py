"""The shortcut audit: can the label be read without the brain, and does the model do so?

Model-free part: for each cue set of engine.data.cues (``acquisition``, ``intensity``),
a small gradient-boosted classifier on nothing but those cues, fitted on the data's own
grouped folds (the folds a cross-validation trains on, else five grouped folds dealt
here), gives every image an out-of-fold probability; its ROC AUC (with a
group-bootstrap interval) says how well the source alone predicts the label, and
permutation importance on the held-out folds ranks the cues. AUC 0.5 means the cues
say nothing; Br35H's acquisition cues reach about 0.9.

Model part: the images where a cue set's out-of-fold decision agrees with the label
("aligned") and where it points the wrong way ("conflicting"). A network that reads the
brain is equally right on both; one that leans on the source is right mostly where the
source agrees. The gap between the two accuracies, with its paired group-bootstrap
interval, is the figure to watch. The per-slice table splits the same predictions by
bins of the top cues, the health scores and the modality.

Pure NumPy and scikit-learn on tables: the cues come from engine.data.cues, the
predictions from the run folder. Time: a few boosted models of 200 shallow trees, linear
in the number of images.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from engine.data.cues import CATEGORICAL, cue_label
from engine.evaluation.intervals import Resamples, metric_intervals, percentile_interval, weighted_auc

WARN_AUC = 0.8  # above this, Home and the model card warn in plain words
TOP_CUES = 5


def encode(cue_rows: list[dict], columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(X float [N, C] with NaN for missing, categorical mask [C]); text cues become
    category codes in order of first appearance."""
    matrix = np.full((len(cue_rows), len(columns)), np.nan)
    categorical = np.array([c in CATEGORICAL for c in columns], bool)
    for j, column in enumerate(columns):
        if categorical[j]:
            codes: dict = {}
            for i, row in enumerate(cue_rows):
                value = row.get(column)
                if value not in (None, "") and not (isinstance(value, float) and np.isnan(value)):
                    matrix[i, j] = codes.setdefault(str(value), len(codes))
        else:
            for i, row in enumerate(cue_rows):
                value = row.get(column)
                try:
                    matrix[i, j] = float(value)
                except (TypeError, ValueError):
                    pass
    return matrix, categorical


def _classifier(categorical: np.ndarray, seed: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=10,
        l2_regularization=1.0, early_stopping=False, random_state=seed,
        categorical_features=categorical if categorical.any() else None)


def _fit_predict(x_train, y_train, x_test, categorical, seed):
    if len(np.unique(y_train)) < 2:  # one class: the cues cannot say anything
        return np.full(len(x_test), float(np.mean(y_train)) if len(y_train) else 0.5), None
    model = _classifier(categorical, seed).fit(x_train, y_train)
    return model.predict_proba(x_test)[:, 1], model


IMPORTANCE_ROWS = 5000  # held-out rows a fold's importance is measured on, at most


def permutation_importance(model, matrix: np.ndarray, labels, repeats: int, seed: int) -> np.ndarray:
    """Each cue's mean drop of held-out ROC AUC when its column is shuffled (Breiman's
    permutation importance), with every shuffled copy scored in one predict call: the
    per-call overhead of scikit-learn's version dominated on small folds. Memory grows as
    cues x cues x repeats x rows (rows capped at IMPORTANCE_ROWS)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    if len(labels) > IMPORTANCE_ROWS:
        keep = rng.choice(len(labels), IMPORTANCE_ROWS, replace=False)
        matrix, labels = matrix[keep], labels[keep]
    rows, cues = matrix.shape
    base = roc_auc_score(labels, model.predict_proba(matrix)[:, 1])
    shuffled = np.repeat(matrix[None], cues * repeats, axis=0)
    for j in range(cues):
        for r in range(repeats):
            shuffled[j * repeats + r, :, j] = matrix[rng.permutation(rows), j]
    scores = model.predict_proba(shuffled.reshape(-1, cues))[:, 1].reshape(cues, repeats, rows)
    drops = [[base - roc_auc_score(labels, scores[j, r]) for r in range(repeats)] for j in range(cues)]
    return np.mean(drops, axis=1)


def cue_model(matrix: np.ndarray, categorical: np.ndarray, labels, folds, *, seed: int = 0,
              importance_repeats: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold P(tumor | cues) of every image and each cue's permutation importance
    (mean drop of held-out ROC AUC, averaged over folds). ``folds``: the fold of each
    image; images at fold -1 (a fixed test split) are scored by a model fitted on all
    the others, and never used for fitting or importance.

    The boosted trees run on one OpenMP thread: in a process that has run TensorFlow
    (every training run and CV writes this audit when it ends), scikit-learn's OpenMP
    threads fight TensorFlow's idle ones: a cue model of 3,000 images took 19 to 50 s
    instead of 3 s (132 images: 9 to 26 s instead of 1 s; `bench/cue_model_threads.py`)."""
    with threadpool_limits(limits=1, user_api="openmp"):
        return _cue_model(matrix, categorical, labels, folds, seed=seed, importance_repeats=importance_repeats)


def _cue_model(matrix: np.ndarray, categorical: np.ndarray, labels, folds, *, seed: int,
               importance_repeats: int) -> tuple[np.ndarray, np.ndarray]:
    labels, folds = np.asarray(labels).astype(int), np.asarray(folds)
    probabilities = np.full(len(labels), np.nan)
    importance, counted = np.zeros(matrix.shape[1]), 0
    for fold in sorted(set(folds.tolist()) - {-1}):
        held, train = folds == fold, (folds != fold) & (folds != -1)
        probabilities[held], model = _fit_predict(matrix[train], labels[train], matrix[held], categorical, seed)
        if model is not None and len(np.unique(labels[held])) == 2:
            importance += permutation_importance(model, matrix[held], labels[held], importance_repeats, seed)
            counted += 1
    outside = folds == -1
    if outside.any():
        pool = ~outside
        probabilities[outside], _ = _fit_predict(matrix[pool], labels[pool], matrix[outside], categorical, seed)
    return probabilities, importance / max(counted, 1)


def audit_cue_sets(cue_rows: list[dict], labels, groups, folds, columns: dict[str, list[str]], *,
                   seed: int = 0) -> tuple[dict, dict[str, np.ndarray]]:
    """Each cue set's out-of-fold AUC (pool images: folds >= 0), its group-bootstrap
    interval and its top cues; and every image's out-of-fold probability per set."""
    labels, folds = np.asarray(labels).astype(int), np.asarray(folds)
    pool = folds != -1
    result, probabilities = {}, {}
    for name, cues in columns.items():
        if not cues:
            result[name] = {"auc": None, "auc_ci": None, "top_cues": [], "cues": []}
            continue
        matrix, categorical = encode(cue_rows, cues)
        probability, importance = cue_model(matrix, categorical, labels, folds, seed=seed)
        probabilities[name] = probability
        both = len(np.unique(labels[pool])) == 2
        auc = float(roc_auc_score(labels[pool], probability[pool])) if both else None
        ci = None
        if both:
            draws = Resamples.draw(int(pool.sum()), np.asarray(groups)[pool], seed=seed)
            ci = percentile_interval(weighted_auc(draws.weights, labels[pool], probability[pool]))
        ranked = sorted(zip(cues, importance.tolist()), key=lambda item: -item[1])
        result[name] = {"auc": auc, "auc_ci": ci, "cues": cues,
                        "top_cues": [{"cue": c, "label": cue_label(c), "importance": float(v)}
                                     for c, v in ranked[:TOP_CUES]]}
    return result, probabilities


def aligned_conflicting(labels, correct, probabilities, cue_probability, groups, threshold,
                        base_rate: float, *, seed: int = 0) -> dict:
    """The network on the images whose cue decision agrees with the label and on those
    where it points the wrong way: count, accuracy and ROC AUC with group-bootstrap
    intervals, and the accuracy gap (aligned minus conflicting) with a paired interval.
    A cue "points to tumor" when P(tumor | cues) is at least the base rate."""
    labels = np.asarray(labels).astype(int)
    correct = np.asarray(correct, bool)
    cue_says = np.asarray(cue_probability) >= base_rate
    aligned = cue_says == (labels == 1)
    draws = Resamples.draw(len(labels), groups, seed=seed)
    out = {}
    per_side = {}
    for side, mask in (("aligned", aligned), ("conflicting", ~aligned)):
        hits = draws.weights @ (correct & mask)
        totals = draws.weights @ mask
        with np.errstate(invalid="ignore", divide="ignore"):
            per_side[side] = np.where(totals > 0, hits / np.where(totals > 0, totals, 1), np.nan)
        sub = np.asarray(probabilities)[mask]
        both = mask.any() and len(np.unique(labels[mask])) == 2
        auc_draws = weighted_auc(draws.weights[:, mask], labels[mask], sub) if both else None
        out[side] = {"count": int(mask.sum()),
                     "accuracy": float(correct[mask].mean()) if mask.any() else None,
                     "accuracy_ci": percentile_interval(per_side[side]),
                     "auc": float(roc_auc_score(labels[mask], sub)) if both else None,
                     "auc_ci": percentile_interval(auc_draws) if both else None}
    if out["aligned"]["accuracy"] is not None and out["conflicting"]["accuracy"] is not None:
        out["gap"] = out["aligned"]["accuracy"] - out["conflicting"]["accuracy"]
        out["gap_ci"] = percentile_interval(per_side["aligned"] - per_side["conflicting"])
    else:
        out["gap"], out["gap_ci"] = None, None
    return out


def _bins(values: np.ndarray, categorical: bool, min_count: int):
    """(name, mask) per bin: quartiles of a number, categories of a text cue (rare ones
    pooled as "other")."""
    if categorical:
        names, counts = np.unique(values.astype(str), return_counts=True)
        common = [n for n, c in zip(names, counts) if c >= min_count and n not in ("", "nan", "None")]
        bins = [(n, values.astype(str) == n) for n in common]
        rest = ~np.isin(values.astype(str), common)
        if rest.sum() >= min_count:
            bins.append(("other", rest))
        return bins
    numbers = values.astype(np.float64)
    finite = np.isfinite(numbers)
    distinct = np.unique(numbers[finite])
    if len(distinct) < 2:
        return []
    if len(distinct) <= 8:  # a few values (bit depths, standard sizes): each its own bin
        return [(f"{v:.4g}", finite & (numbers == v)) for v in distinct
                if (finite & (numbers == v)).sum() >= min_count]
    if finite.sum() < 2 * min_count:
        return []
    edges = np.unique(np.percentile(numbers[finite], [0, 25, 50, 75, 100]))
    bins = []
    for k in range(len(edges) - 1):
        low, high = edges[k], edges[k + 1]
        mask = finite & (numbers >= low) & ((numbers <= high) if k == len(edges) - 2 else (numbers < high))
        if mask.sum() >= min_count:
            bins.append((f"{low:.3g} to {high:.3g}", mask))
    return bins


def slice_table(columns: dict[str, np.ndarray], labels, probabilities, thresholds, groups, *,
                min_count: int = 10, seed: int = 0) -> list[dict]:
    """Sensitivity, specificity and accuracy with intervals for every bin of every given
    column (``{name: values}``; text columns by category, numbers by quartile), worst
    accuracy first: where a model is weak, in the terms of how the images were made."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, np.float64)
    thresholds = np.broadcast_to(np.asarray(thresholds, np.float64), labels.shape)
    groups = np.asarray(groups)
    rows = []
    for name, values in columns.items():
        values = np.asarray(values, dtype=object)
        categorical = name in CATEGORICAL or name == "modality"
        for bin_name, mask in _bins(values, categorical, min_count):
            predicted = probabilities[mask] >= thresholds[mask]
            truth = labels[mask]
            ci = metric_intervals(truth, probabilities[mask], thresholds[mask], groups[mask], seed=seed)
            positives, negatives = int(truth.sum()), int((1 - truth).sum())
            rows.append({
                "column": name, "label": cue_label(name), "bin": bin_name,
                "count": int(mask.sum()), "tumor": positives, "no_tumor": negatives,
                "accuracy": float((predicted == truth).mean()),
                "sensitivity": float(predicted[truth == 1].mean()) if positives else None,
                "specificity": float((~predicted[truth == 0]).mean()) if negatives else None,
                "ci": {k: ci[k] for k in ("accuracy", "sensitivity", "specificity")}})
    return sorted(rows, key=lambda r: r["accuracy"])


def plain_words(name: str, auc: float | None) -> str:
    """What a cue set's AUC means, for a clinician."""
    if auc is None:
        return f"The {name} cues could not be measured against both classes."
    if auc >= WARN_AUC:
        if name == "intensity":
            return (f"Warning: the grey levels inside the head alone predict the label (AUC {auc:.2f}). "
                    "Part of this can be real (a bright lesion raises them), part the source's "
                    "contrast: check the per-slice results.")
        return (f"Warning: the label can be read from the {name} cues alone (AUC {auc:.2f}) "
                f"without looking at the brain. A model may learn the source, not the tumor.")
    if auc >= 0.65:
        return f"The {name} cues carry some of the label (AUC {auc:.2f}): check the per-slice results."
    return f"The {name} cues say little about the label (AUC {auc:.2f}, 0.5 = nothing)."


def balancing_weights(cue_probability, labels, bins: int = 5) -> np.ndarray:
    """Loss weights that make the label independent of the cue score: in each quantile
    bin of P(tumor | cues), an image of class y weighs P(y) / P(y | bin), so both
    classes carry the same share of every bin as of the whole set (the rebalancing of
    Müller and Berens). Conflicting images (rare in their bin) weigh more, aligned ones
    less; mean 1 over the images, clipped to [0.1, 10] so a near-pure bin cannot let a
    few images dominate. Pure."""
    labels = np.asarray(labels).astype(int)
    score = np.asarray(cue_probability, np.float64)
    if len(labels) == 0 or len(np.unique(labels)) < 2:
        return np.ones(len(labels), np.float32)
    edges = np.unique(np.quantile(score, np.linspace(0, 1, bins + 1)[1:-1]))
    which = np.searchsorted(edges, score, side="right")
    prior = np.array([np.mean(labels == 0), np.mean(labels == 1)])
    weights = np.ones(len(labels))
    for b in np.unique(which):
        members = which == b
        for y in (0, 1):
            share = np.mean(labels[members] == y)
            if share > 0:
                weights[members & (labels == y)] = prior[y] / share
    weights = np.clip(weights, 0.1, 10.0)
    return (weights / weights.mean()).astype(np.float32)
