"""Cross-validation panels shared by Train, Runs and Evaluate: per-fold table, mean ±
std, the per-fold plot and the fold progress. Reads only the CV folder's files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from engine.request import planned_folds, stored_request
from engine.evaluation import metric_names as names
from engine import layout, runs
from ui import charts
from ui.common import read_json

FOLD_COLUMNS = ("accuracy", "roc_auc", "sensitivity", "specificity", "loss")


def mean_std(summary: dict, key: str, scale: float = 1.0, digits: int = 2) -> str:
    mean, std = summary["mean"].get(key), summary["std"].get(key)
    if mean is None:
        return "—"
    spread = "" if std is None else f" ± {scale * std:.{digits}f}"
    return f"{scale * mean:.{digits}f}{spread}"


def fold_frame(summary: dict) -> pd.DataFrame:
    """One row per fold; a threshold at its clamp (0.02 or 0.98) is marked: the other
    folds' scores could not place it, so that fold's decisions are rough."""
    from engine.serving.calibration import THRESHOLD_RANGE
    rows = [{"fold": f["fold"], "images": f["images"], **{k: f.get(k) for k in FOLD_COLUMNS},
             "threshold": f.get("threshold"),
             "note": ("threshold at its bound: the calibration scores did not separate the classes"
                      if f.get("threshold") is not None and min(abs(f["threshold"] - b) for b in THRESHOLD_RANGE) < 1e-9
                      else "")} for f in summary["folds"]]
    return pd.DataFrame(rows)


def show_cv_summary(folder: Path, *, key: str = "cv") -> None:
    """Per-fold table, mean ± std and the per-fold plot of a finished CV."""
    summary = read_json(Path(folder) / layout.CV_SUMMARY)
    if not summary:
        st.info("The cross-validation has no summary yet (it is written when every fold has finished).")
        return
    count = len(summary["folds"])
    st.markdown(f"**Cross-validation, {count} folds** (grouped by duplicate group; each fold "
                "scored by the model that never trained on it; mean ± sample std over folds)")
    cols = st.columns([1, 1.3, 1, 1])  # "0.927 ± 0.055" needs the wider column in an expander
    cols[0].metric("CV accuracy (%)", mean_std(summary, "accuracy", 100, 1))
    cols[1].metric("CV ROC AUC", mean_std(summary, "roc_auc", 1, 3))
    cols[2].metric("CV sensitivity (%)", mean_std(summary, "sensitivity", 100, 1))
    cols[3].metric("CV specificity (%)", mean_std(summary, "specificity", 100, 1))
    st.dataframe(fold_frame(summary), hide_index=True, width="stretch",
                 column_config={k: st.column_config.NumberColumn(format="%.4f")
                                for k in (*FOLD_COLUMNS, "threshold")})
    st.download_button("Download the per-fold table (CSV)", fold_frame(summary).to_csv(index=False).encode(),
                       f"{Path(folder).name}_folds.csv", "text/csv", key=f"{key}_folds_csv")
    st.plotly_chart(charts.fold_metrics(summary["folds"]), width="stretch", key=f"{key}_folds")
    test = summary.get("test")
    if test:
        st.caption(f"Fold ensemble on the fixed test split ({test['count']} images, as labelled): "
                   f"accuracy {100 * test['accuracy']:.1f}%, ROC AUC {test['roc_auc']:.3f}, "
                   f"sensitivity {100 * test['sensitivity']:.1f}%, specificity "
                   f"{100 * test['specificity']:.1f}% at threshold {test['threshold']:.3f}.")
    reviewed = summary.get("with_reviewed_labels")
    if reviewed:
        st.markdown("**With reviewed labels** (beside the as-labelled figures above, never mixed in: "
                    f"{reviewed['relabelled']} relabelled, {reviewed['excluded']} excluded)")
        cols = st.columns(2)
        cols[0].metric("CV accuracy, reviewed labels (%)", mean_std(reviewed, "accuracy", 100, 1))
        cols[1].metric("CV ROC AUC, reviewed labels", mean_std(reviewed, "roc_auc", 1, 3))
    keras = read_json(Path(folder) / layout.KERAS_COMPARISON)
    if keras:
        st.caption(f"Keras reference on the same folds (bench/keras_cv.py): accuracy "
                   f"{100 * keras['keras']['mean']['accuracy']:.1f}%, ROC AUC "
                   f"{keras['keras']['mean']['roc_auc']:.3f}; out-of-fold errors engine / Keras "
                   f"= {keras['error_ratio']:.2f}.")


def show_cv_progress(folder: Path) -> None:
    """One line per fold: state, epoch, last validation figures (while training)."""
    request = stored_request(folder)
    count = planned_folds(folder)
    epochs_total = request.config.epochs if request else None
    rows = []
    for fold in range(count):
        sub = Path(folder) / layout.fold(fold)
        status = runs.read_status(sub) if (sub / layout.STATUS).exists() else {}
        last = (runs.read_metrics(sub, names.KIND_EPOCH) or [{}])[-1]
        rows.append({"fold": fold, "state": status.get("state", "waiting"),
                     "epoch": f"{last.get('epoch', 0)}/{epochs_total}",
                     "val accuracy": last.get(names.VAL_ACCURACY), "val ROC AUC": last.get(names.VAL_AUC)})
    done = sum(r["state"] == runs.FINISHED for r in rows)
    st.progress(done / max(count, 1), text=f"{done} of {count} folds finished")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={"val accuracy": st.column_config.NumberColumn(format="%.4f"),
                                "val ROC AUC": st.column_config.NumberColumn(format="%.4f")})


def active_fold(folder: Path) -> Path | None:
    """The fold folder being trained (or the last started), for its live curves."""
    started = [Path(folder) / layout.fold(k) for k in range(planned_folds(folder))
               if (Path(folder) / layout.fold(k) / layout.STATUS).exists()]
    return started[-1] if started else None
