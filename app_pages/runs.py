"""Runs: every run with its status, settings, best validation metrics and duration;
overlay curves of several; open one on the other pages; delete one after confirming."""

import pandas as pd
import streamlit as st

from engine.request import planned_folds
from engine.evaluation import metric_names as names
from engine import control, layout, runs
from ui import charts, cv_view
from ui.common import SHIPPED_DIR, all_runs, duration, runs_root


st.title("Runs")
all_runs = all_runs()
if not all_runs:
    st.info("No runs yet. Start one on the **Train** page; runs are folders under "
            f"`{runs_root()}`.")
    st.stop()


def cv_text(run: runs.RunSummary, key: str, scale: float, digits: int) -> str:
    summary = runs.read_cv_summary(run.path) if runs.is_cv(run.path) else None
    return cv_view.mean_std(summary, key, scale, digits) if summary else ""


def test_result(run: runs.RunSummary) -> dict:
    """The run's final evaluation on the fixed test split (eval_test.json), if any."""
    return runs.read_json(run.path / layout.evaluation("test"), None) or {}


def settings_diff(configs: dict[str, dict]) -> pd.DataFrame:
    """The settings that differ between runs: one row per setting, one column per run
    (pure: config dicts in, table out)."""
    keys = sorted(set().union(*(c.keys() for c in configs.values()))) if configs else []
    differing = [k for k in keys if len({repr(c.get(k)) for c in configs.values()}) > 1]
    return pd.DataFrame({"setting": differing,
                         **{run_id: [str(c.get(k, "—")) for k in differing] for run_id, c in configs.items()}})


@st.cache_data(max_entries=8, show_spinner="Comparing out-of-fold predictions ...")
def oof_comparison(folders: tuple, names: tuple, stamps: tuple):
    """engine.evaluation.oof_compare.compare over CV folders (cached per choice and per
    version of their oof_predictions.csv, ``stamps``)."""
    from engine.evaluation.oof_compare import compare, read_source
    return compare({name: read_source(folder) for name, folder in zip(names, folders)})


def cv_folds(run: runs.RunSummary) -> int:
    return planned_folds(run.path)


def fold_progress(run: runs.RunSummary) -> str:
    """A CV's progress in folds (its own metrics live in the fold folders)."""
    folds = cv_folds(run)
    done = sum(runs.read_status(run.path / layout.fold(k)).get("state") == runs.FINISHED for k in range(folds))
    return f"{done}/{folds} folds × {run.config.get('epochs', '?')} epochs"


def row(run: runs.RunSummary) -> dict:
    config, best = run.config, run.best
    test = test_result(run)
    is_cv = runs.is_cv(run.path)
    # CV figures come first, beside the status: on a CV they are the result, and a wide
    # table must not push them off the right edge.
    return {
        "run": run.run_id, "status": run.state,
        "CV accuracy (mean ± std)": cv_text(run, "accuracy", 100, 1) if is_cv else "",
        "CV AUC (mean ± std)": cv_text(run, "roc_auc", 1, 3) if is_cv else "",
        "best val accuracy": None if is_cv else best.get(names.VAL_ACCURACY),
        "best val AUC": None if is_cv else best.get(names.VAL_AUC),
        "test accuracy": test.get("accuracy"), "test AUC": test.get("roc_auc"),
        "preset": f"{config.get('preset', '?')} x{config.get('width', '?')}",
        "image size": config.get("image_size"),
        "epochs": fold_progress(run) if is_cv else f"{run.last_epoch.get('epoch', 0)}/{config.get('epochs', '?')}",
        "data": config.get("data_dir") or "Br35H",
        "best epoch": None if is_cv else best.get("epoch"), "duration": duration(run.duration_seconds),
        "error": run.status.get("error") or "",
    }


def curves_of(run_id: str) -> dict[str, list[dict]]:
    """Epoch curves to overlay: a run's own, or each fold's of a cross-validation."""
    folder = runs.run_dir(run_id, runs_root())
    if runs.is_cv(folder):
        return {f"{run_id} fold {k}": runs.read_metrics(folder / layout.fold(k), names.KIND_EPOCH)
                for k in range(planned_folds(folder))}
    return {run_id: runs.read_metrics(folder, names.KIND_EPOCH)}


def request_of(run: runs.RunSummary) -> dict:
    """The settings to compare: the training config plus the CV's fold count."""
    return {**run.config, "cv folds": cv_folds(run) or "—"}


table = pd.DataFrame([row(r) for r in all_runs])
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"best val accuracy": st.column_config.NumberColumn(format="%.4f"),
                            "best val AUC": st.column_config.NumberColumn(format="%.4f"),
                            "test accuracy": st.column_config.NumberColumn(format="%.4f"),
                            "test AUC": st.column_config.NumberColumn(format="%.4f"),
                            "duration": st.column_config.TextColumn(
                                help="Time spent training, summed over resumed segments")})
st.caption("Test figures are each run's final evaluation on its fixed test split (threshold "
           "fitted on val). Rank runs on validation or cross-validation, not on test.")
st.download_button("Download this table (CSV)", table.to_csv(index=False).encode(), "runs.csv", "text/csv")

ids = [r.run_id for r in all_runs]
st.subheader("Compare")
chosen = st.multiselect("Runs to overlay", ids, default=ids[: min(2, len(ids))])
metric = st.selectbox("Metric", [names.VAL_ACCURACY, names.VAL_AUC, names.VAL_LOSS, names.TRAIN_LOSS,
                                 names.TRAIN_ACCURACY, names.VAL_SENSITIVITY, names.VAL_SPECIFICITY])
if chosen:
    curves = {name: epochs for run_id in chosen for name, epochs in curves_of(run_id).items()}
    empty = [run_id for run_id, epochs in curves.items() if not epochs]
    curves = {run_id: epochs for run_id, epochs in curves.items() if epochs}
    if empty:
        st.caption(f"No finished epoch yet (not drawn): {', '.join(empty)}")
    st.plotly_chart(charts.overlay_curves(curves, metric), width="stretch")
    if len(chosen) >= 2:
        differences = settings_diff({run_id: request_of(next(r for r in all_runs if r.run_id == run_id))
                                     for run_id in chosen})
        st.markdown("**Settings that differ**")
        if differences.empty:
            st.caption("The chosen runs have the same settings.")
        else:
            st.dataframe(differences, hide_index=True, width="stretch", key="settings_diff")

def paired_row(name: str, paired: dict) -> dict:
    """One row of the paired comparison: differences in points (AUC in thousandths)."""
    def points(key, scale):
        entry = paired[key]
        ci = entry["ci"]
        return (f"{scale * entry['difference']:+.1f}" + (f" ({scale * ci[0]:+.1f} to {scale * ci[1]:+.1f})" if ci else ""))
    return {"cross-validation": name, "accuracy (points)": points("accuracy", 100),
            "sensitivity (points)": points("sensitivity", 100), "specificity (points)": points("specificity", 100),
            "ROC AUC (x1000)": points("roc_auc", 1000), "DeLong p (AUC)": f"{paired['delong']['p_value']:.3g}"}


cv_sources = {f"cross-validation {r.run_id}": r.path for r in all_runs
              if runs.is_cv(r.path) and (r.path / layout.OOF_PREDICTIONS).exists()}
if (SHIPPED_DIR / layout.OOF_PREDICTIONS).exists():
    cv_sources["shipped model (checkpoints/)"] = SHIPPED_DIR
if len(cv_sources) >= 2:
    st.subheader("Out-of-fold errors, side by side")
    st.caption("Cross-validations on the same folds (same data, seed and fold count), each scored "
               "as engine.cv scores its folds. A seed alone moves an error count by a quarter, so "
               "compare which images each gets wrong, not one number.")
    picked = st.multiselect("Cross-validations", list(cv_sources), default=list(cv_sources)[:2],
                            key="oof_sources")
    if len(picked) >= 2:
        from engine.evaluation.oof_compare import NotComparable
        try:
            comparison = oof_comparison(
                tuple(str(cv_sources[name]) for name in picked), tuple(picked),
                tuple((cv_sources[name] / layout.OOF_PREDICTIONS).stat().st_mtime_ns for name in picked))
        except NotComparable as err:
            st.warning(f"Not comparable: {err}. Side by side needs cross-validations of the same "
                       "data with the same seed and fold count.")
        else:
            st.dataframe(pd.DataFrame([{
                "cross-validation": name, "CV accuracy": cv_view.mean_std(summary, "accuracy", 100, 1),
                "CV ROC AUC": cv_view.mean_std(summary, "roc_auc", 1, 3), "out-of-fold errors": errors}
                for name, summary, errors in zip(picked, comparison.summaries, comparison.errors())]),
                hide_index=True, width="stretch")
            st.markdown(f"**Is the difference larger than chance?** Each against {picked[0]}, on the same "
                        "images (paired; 95% intervals resample duplicate groups):")
            st.dataframe(pd.DataFrame([paired_row(picked[k], comparison.paired(k)) for k in range(1, len(picked))]),
                         hide_index=True, width="stretch")
            counts = comparison.misclassified_by()
            st.markdown(f"Of {len(comparison.paths)} out-of-fold images: **{counts[-1]} wrong in all "
                        f"{len(picked)}**, " + ", ".join(f"{counts[k]} wrong in exactly {k}"
                                                          for k in range(len(picked) - 1, 0, -1))
                        + f", {counts[0]} right in all.")
            shared = pd.DataFrame(comparison.error_rows())
            if not shared.empty:
                shared.insert(0, "file", shared["path"].map(lambda p: p.rsplit("/", 1)[-1]))
                st.dataframe(shared.drop(columns=["path"]), hide_index=True, width="stretch",
                             column_config={"mean_probability": st.column_config.NumberColumn(
                                 "mean p(tumor)", format="%.3f")})
                st.download_button("Download these errors (CSV)", shared.to_csv(index=False).encode(),
                                   "oof_errors_compared.csv", "text/csv", key="oof_errors_csv")

st.subheader("Open or delete")
selected = st.selectbox("Run", ids)
summary = next(r for r in all_runs if r.run_id == selected)
cols = st.columns(3)
has_model = (summary.path / layout.EXPORT / "saved_model.pb").exists()
if cols[0].button("Use its model on Predict / Evaluate / Errors", disabled=not has_model):
    st.session_state["_pending_model_choice"] = f"run {selected}"
    st.rerun()
if cols[1].button("Watch it on Train"):
    st.session_state["watch_run"] = selected
    st.switch_page("app_pages/train.py")
with cols[2].popover("Delete ..."):
    st.write(f"Delete run **{selected}** and all its checkpoints? This cannot be undone.")
    if st.button("Yes, delete it", type="primary", key="confirm_delete"):
        try:
            control.delete_run(selected, runs_root())
            if st.session_state.get("model_choice") == f"run {selected}":
                st.session_state.pop("model_choice")
            st.toast(f"Deleted {selected}")
            st.rerun()
        except runs.RunError as err:
            st.error(str(err))
if runs.is_cv(summary.path):
    st.subheader(f"Cross-validation {selected}")
    cv_view.show_cv_summary(summary.path, key="runs_cv")
with st.expander("Settings of this run"):
    st.json(runs.read_config_file(summary.path))
