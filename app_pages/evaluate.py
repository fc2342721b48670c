"""Evaluate: metrics, confusion matrix, ROC, precision-recall and calibration for the
chosen model and split, with a live threshold slider and a per-modality breakdown."""

import json

import pandas as pd
import streamlit as st

from engine import layout
from engine.evaluation.evaluate import classification_report
from engine.serving.calibration import MIN_CALIBRATION_IMAGES
from engine.evaluation.intervals import format_with_ci
from ui import charts, cv_view, refer_view, shortcuts_view
from ui.common import (
    SHIPPED_DIR, percent, plural, read_json, read_predictions, reviews_dir, runs_root, selected_model_dir,
    split_choice,
)


st.title("Evaluate")
model_dir = selected_model_dir()
split, is_cv_model = split_choice(model_dir)
report = read_json(model_dir / layout.evaluation(split))
predictions = read_predictions(model_dir, split)
name = "shipped model" if model_dir == SHIPPED_DIR else f"run {model_dir.name}"
st.caption(f"Model: {name}")
if is_cv_model:
    with st.expander("Cross-validation behind this model", expanded=True):
        cv_view.show_cv_summary(model_dir, key="eval_cv")

if report is None or predictions is None:
    st.info(f"No evaluation of the {split} split for this model yet.")
    if split != "oof" and st.button(f"Run the evaluation on {split}", type="primary"):
        from engine.evaluation.evaluate import evaluate
        with st.spinner("Predicting every image of the split ..."):
            try:
                evaluate(model_dir, split)
            except (FileNotFoundError, ValueError) as err:
                st.error(f"Evaluation failed: {err}")
                st.stop()
        st.rerun()
    st.stop()

labels = predictions["label"].to_numpy()
probabilities = predictions["probability"].to_numpy()
stored = float(report["threshold"])
slider_key = f"threshold_{model_dir}_{split}"
reset = st.button("Reset to the stored threshold", help=f"{stored:.3f}")
if reset or slider_key not in st.session_state:
    st.session_state[slider_key] = round(stored, 3)
threshold = st.slider("Decision threshold", 0.0, 1.0, step=0.001, format="%.3f", key=slider_key,
                      help=f"Stored threshold {stored:.3f} ({report.get('threshold_method')})")
at_stored = abs(threshold - round(stored, 3)) < 1e-9 and "predicted" in predictions.columns
# At the stored threshold, the stored decisions (made at full precision), so Evaluate,
# Errors and Train report the same confusion matrix; elsewhere the slider's threshold.
live = classification_report(labels, predictions["predicted"].to_numpy() if at_stored else probabilities,
                             0.5 if at_stored else threshold)

cols = st.columns(6)
for col, (label, key) in zip(cols, [("sensitivity", "sensitivity"), ("specificity", "specificity"),
                                    ("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"),
                                    ("precision", "precision"), ("F1", "f1")]):
    undefined = key == "precision" and live["confusion_matrix"]["tp"] + live["confusion_matrix"]["fp"] == 0
    col.metric(label, "—" if undefined else percent(live[key]),
               help="undefined: no image is called tumor at this threshold" if undefined else None)
cm = live["confusion_matrix"]
st.caption(f"At threshold {threshold:.3f}: {cm['fn']} missed {plural(cm['fn'], 'tumor')} (false negatives), "
           f"{cm['fp']} false {plural(cm['fp'], 'alarm')}, out of {live['count']} images.")
ci = report.get("ci") or {}
if ci:
    st.markdown("**With 95% intervals** (stored threshold; " + ci.get("method", "") +
                f", {ci.get('groups')} groups, {ci.get('resamples')} resamples): " + " · ".join(
                    f"{label} {format_with_ci(report.get(key), ci.get(key), percent=key != 'roc_auc')}"
                    for label, key in (("accuracy", "accuracy"), ("sensitivity", "sensitivity"),
                                       ("specificity", "specificity"), ("ROC AUC", "roc_auc"))))
    if split == "oof":
        st.caption("Out-of-fold figures here use one pooled threshold fitted on these same predictions; "
                   "the cross-validation summary scores each fold at a threshold fitted on the other "
                   "folds, so its error count differs slightly.")

left, right = st.columns(2)
with left:
    st.markdown("**Confusion matrix**")
    st.plotly_chart(charts.confusion_matrix(cm), width="stretch")
with right:
    st.markdown("**All metrics** (stored threshold unless noted)")
    rows = [("ROC AUC", report["roc_auc"]), ("PR AUC (average precision)", report["pr_auc"]),
            ("Brier score", report["brier"]), ("ECE before temperature", report["ece_before_temperature"]),
            ("ECE after temperature", report["ece"]), ("temperature", report["temperature"]),
            ("accuracy @ stored threshold", report["accuracy"]),
            ("sensitivity @ stored threshold", report["sensitivity"]),
            ("specificity @ stored threshold", report["specificity"]), ("images", report["count"]),
            ("share flagged out-of-distribution", report.get("ood_flagged_share"))]
    def shown(value):
        # Four decimals (a Brier score of 2e-22 is 0.0000, not a 25-digit string).
        if value is None:
            return "—"
        return str(value) if isinstance(value, int) else f"{value:.4f}"
    table = pd.DataFrame([(name, shown(value)) for name, value in rows], columns=["metric", "value"])
    # Tall enough for every row: a scrolled table hid its last one.
    st.dataframe(table, hide_index=True, width="stretch", height=38 + 35 * len(table))
    info = read_json(model_dir / layout.MODEL_INFO) or {}
    small = info.get("calibration_images")
    if small is not None and small < MIN_CALIBRATION_IMAGES:
        st.warning(f"The threshold and temperature were fitted on {small} validation images: too few "
                   "to fit a temperature, so it stays close to 1 by design, and the threshold is the "
                   "middle of the gap between the classes on those images. Treat both as rough.")

review_dir = reviews_dir()
review_files = sorted(review_dir.glob("*.csv")) if review_dir.exists() else []
review_choice = st.selectbox(
    "Score with a label review too", ["none"] + [f.name for f in review_files],
    help="Review files from the Label review page (runs/label_reviews/). The stored predictions are "
         "re-scored with the reviewed labels (relabelled images flipped, excluded ones left out); "
         "nothing is predicted again, so this works for any model, the shipped one included.")
reviewed = report.get("with_reviewed_labels")
if review_choice != "none":
    from engine.evaluation.evaluate import rescored_with_review
    from engine.evaluation.review import read_review
    try:
        decisions = read_review(review_dir / review_choice)
    except ValueError as err:
        st.error(str(err))
        decisions = None
    if decisions is not None:
        reviewed = rescored_with_review(predictions["path"], labels, probabilities, stored, decisions)
if reviewed:
    st.markdown("**As labelled and with reviewed labels** (stored threshold). The headline figures "
                "above are as labelled; the reviewed ones only reflect what a reviewer entered.")
    keys = [("images", "count"), ("accuracy", "accuracy"), ("sensitivity", "sensitivity"),
            ("specificity", "specificity"), ("ROC AUC", "roc_auc")]
    side = pd.DataFrame({"metric": [k for k, _ in keys],
                         "as labelled": [report.get(v) for _, v in keys],
                         "with reviewed labels": [reviewed.get(v) for _, v in keys]})
    st.dataframe(side, hide_index=True, width="content")
    st.caption(f"Reviewed: {reviewed['relabelled']} relabelled, {reviewed['excluded']} excluded.")

if report.get("curves"):
    c1, c2, c3 = st.columns(3)
    point = dict(live, threshold=threshold)  # the slider's operating point, on both curves
    c1.plotly_chart(charts.roc_curve(report["curves"], report["roc_auc"], point), width="stretch")
    c2.plotly_chart(charts.pr_curve(report["curves"], report["pr_auc"], point), width="stretch")
    c3.plotly_chart(charts.calibration_plot(report["curves"], report.get("calibration_bands")), width="stretch")
    bands = report.get("calibration_bands")
    if bands:
        c3.caption(f"ECE {format_with_ci(bands['ece'], bands['ece_ci'], percent=False)} · Brier "
                   f"{format_with_ci(bands['brier'], bands['brier_ci'], percent=False)} (95% intervals, "
                   "duplicate groups resampled)")

refer_view.show(report, read_json(model_dir / layout.MODEL_INFO) or {}, split)

audit = shortcuts_view.audit(model_dir)
if audit and (audit.get("model") or {}).get(split):
    st.subheader("Shortcuts and per-slice results")
    shortcuts_view.show_gap(audit, split)
    shortcuts_view.show_slices(audit, split)
elif audit is None:
    st.caption("No shortcut audit for this model yet: `python -m engine.shortcuts --model "
               f"{model_dir} --out {model_dir}` writes one.")

modalities = predictions["modality"].astype(str).to_numpy()
if len(set(modalities)) > 1:
    st.subheader("By modality")
    rows = []
    for modality in sorted(set(modalities)):
        mask = modalities == modality
        part = classification_report(labels[mask], probabilities[mask], threshold)
        rows.append({"modality": modality, "images": part["count"], "accuracy": part["accuracy"],
                     "sensitivity": part["sensitivity"], "specificity": part["specificity"],
                     "ROC AUC": part["roc_auc"]})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

@st.cache_data(max_entries=8, show_spinner="Writing the report ...")
def report_html(folder: str, stamp: float, review: str | None) -> bytes:
    from engine.evaluation.report import build_report
    return build_report(folder, review).encode()


d1, d2, d3 = st.columns(3)
report_review = str(review_dir / review_choice) if review_choice != "none" else None
d3.download_button("Download the report (HTML, self-contained)",
                   report_html(str(model_dir), (model_dir / layout.evaluation(split)).stat().st_mtime, report_review),
                   f"report_{model_dir.name}.html", "text/html",
                   help="Model card figures, data health, folds, test split, figures, errors and flagged "
                        "labels in one file that opens offline (python -m engine.report)")
d1.download_button(f"Download the per-image predictions ({split}, CSV)", predictions.to_csv(index=False).encode(),
                   layout.predictions(split), "text/csv")
d2.download_button(f"Download the evaluation ({split}, JSON)", json.dumps(report, indent=2).encode(),
                   layout.evaluation(split), "application/json")

if split != "oof" and st.button("Re-run this evaluation"):
    from engine.evaluation.evaluate import evaluate
    with st.spinner("Evaluating ..."):
        fresh = evaluate(model_dir, split)
    if model_dir == SHIPPED_DIR:
        # The shipped folder is never rewritten: say where the new evaluation went and
        # whether it reproduces the stored one.
        where = runs_root() / "evaluations" / "shipped"
        same = all(abs((fresh.get(k) or 0) - (report.get(k) or 0)) < 1e-6 for k in ("accuracy", "roc_auc"))
        st.session_state["rerun_note"] = (
            f"Re-run written to {where} (the shipped folder is never rewritten): accuracy "
            f"{percent(fresh['accuracy'])}, ROC AUC {fresh['roc_auc']:.4f}: "
            + ("the same as the stored evaluation." if same else "different from the stored evaluation above."))
    st.rerun()
if st.session_state.get("rerun_note"):
    st.info(st.session_state.pop("rerun_note"))
