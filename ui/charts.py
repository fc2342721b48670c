"""Plotly figures for the dashboard: pure functions from plain data to figures."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engine.evaluation import metric_names as names

_COLOURS = {"train": "#1f77b4", "val": "#d62728"}


def training_curves(epochs: list[dict], steps: list[dict], title_prefix: str = "") -> go.Figure:
    """Loss, accuracy and AUC per epoch for train and val, and the learning rate per step."""
    figure = make_subplots(rows=1, cols=4, subplot_titles=("loss", "accuracy", "ROC AUC", "learning rate"))
    x = [e["epoch"] for e in epochs]
    for col, metric in enumerate(("loss", "accuracy", "auc"), start=1):
        for split in ("train", "val"):
            key = names.split_metric(split, metric)
            y = [e.get(key) for e in epochs]
            if any(v is not None for v in y):
                figure.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=f"{title_prefix}{split}",
                                            legendgroup=f"{title_prefix}{split}", showlegend=col == 1,
                                            line=dict(color=_COLOURS[split] if not title_prefix else None)),
                                 row=1, col=col)
    if steps:
        figure.add_trace(go.Scatter(x=[s["step"] for s in steps], y=[s.get(names.LEARNING_RATE) for s in steps],
                                    mode="lines", name=f"{title_prefix}lr", showlegend=False,
                                    line=dict(color="#2ca02c")), row=1, col=4)
    figure.update_xaxes(title_text="epoch", row=1, col=1)
    figure.update_xaxes(title_text="epoch", row=1, col=2)
    figure.update_xaxes(title_text="epoch", row=1, col=3)
    figure.update_xaxes(title_text="step", row=1, col=4)
    figure.update_layout(height=320, margin=dict(l=30, r=10, t=40, b=30), legend=dict(orientation="h", y=-0.25))
    return figure


def overlay_curves(runs_epochs: dict[str, list[dict]], metric: str) -> go.Figure:
    figure = go.Figure()
    for run_id, epochs in runs_epochs.items():
        figure.add_trace(go.Scatter(x=[e["epoch"] for e in epochs], y=[e.get(metric) for e in epochs],
                                    mode="lines+markers", name=run_id))
    figure.update_layout(title=metric, height=320, xaxis_title="epoch", margin=dict(l=30, r=10, t=40, b=30))
    return figure


def confusion_matrix(cm: dict) -> go.Figure:
    z = [[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]]
    labels = ["no tumor", "tumor"]
    figure = go.Figure(go.Heatmap(z=z, x=[f"predicted {l}" for l in labels], y=[f"true {l}" for l in labels],
                                  colorscale="Blues", showscale=False, text=z, texttemplate="%{text}",
                                  textfont=dict(size=20)))
    figure.update_layout(height=320, margin=dict(l=30, r=10, t=30, b=30), yaxis=dict(autorange="reversed"))
    return figure


def _operating_point(figure: go.Figure, x: float, y: float, threshold: float) -> None:
    figure.add_trace(go.Scatter(x=[x], y=[y], mode="markers", name=f"threshold {threshold:.3f}",
                                marker=dict(size=12, color="crimson", symbol="x")))


def roc_curve(curves: dict, auc: float | None, point: dict | None = None) -> go.Figure:
    """``point``: the report at the chosen threshold, drawn on the curve."""
    roc = curves["roc"]
    figure = go.Figure(go.Scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", name="ROC"))
    if point and point.get("specificity") is not None and point.get("sensitivity") is not None:
        _operating_point(figure, 1 - point["specificity"], point["sensitivity"], point["threshold"])
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"), name="chance"))
    figure.update_layout(title=f"ROC (AUC {auc:.4f})" if auc is not None else "ROC", height=340,
                         xaxis_title="1 - specificity", yaxis_title="sensitivity", margin=dict(l=30, r=10, t=40, b=30))
    return figure


def pr_curve(curves: dict, ap: float | None, point: dict | None = None) -> go.Figure:
    pr = curves["pr"]
    figure = go.Figure(go.Scatter(x=pr["recall"], y=pr["precision"], mode="lines", name="PR"))
    cm = (point or {}).get("confusion_matrix", {})
    if point and cm.get("tp", 0) + cm.get("fp", 0) > 0:  # precision is defined
        _operating_point(figure, point["sensitivity"], point["precision"], point["threshold"])
    figure.update_layout(title=f"Precision-recall (AP {ap:.4f})" if ap is not None else "Precision-recall",
                         height=340, xaxis_title="recall (sensitivity)", yaxis_title="precision",
                         margin=dict(l=30, r=10, t=40, b=30))
    return figure


def calibration_plot(curves: dict, bands: dict | None = None) -> go.Figure:
    """Reliability diagram; with ``bands`` (engine.evaluation.intervals.calibration_bands)
    each bin's observed fraction carries its 95% group-bootstrap interval as an error bar."""
    cal = curves["calibration"]
    if bands and bands.get("bins"):
        rows = [b for b in bands["bins"] if b.get("observed_ci")]
        figure = go.Figure(go.Scatter(
            x=[b["mean_predicted"] for b in rows], y=[b["observed"] for b in rows], mode="lines+markers",
            name="model (95% band)", error_y=dict(type="data", symmetric=False,
                                                  array=[b["observed_ci"][1] - b["observed"] for b in rows],
                                                  arrayminus=[b["observed"] - b["observed_ci"][0] for b in rows])))
    else:
        figure = go.Figure(go.Scatter(x=cal["mean_predicted"], y=cal["fraction_positive"], mode="lines+markers",
                                      name="model"))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"),
                                name="perfect"))
    figure.update_layout(title="Calibration (reliability)", height=340, xaxis_title="predicted tumor probability",
                         yaxis_title="observed tumor fraction", margin=dict(l=30, r=10, t=40, b=30))
    return figure


def fold_metrics(folds: list[dict], metrics=("accuracy", "roc_auc", "sensitivity", "specificity")) -> go.Figure:
    """Each fold's figure per metric, with the mean as a dashed line: the spread over
    folds is the point of cross-validation."""
    figure = go.Figure()
    for metric in metrics:
        values = [f.get(metric) for f in folds]
        # Markers only: folds are categories, and a line between them suggests a trend.
        figure.add_trace(go.Scatter(x=[f"fold {f['fold']}" for f in folds], y=values,
                                    mode="markers", marker=dict(size=10), name=metric.replace("_", " ")))
    lowest = min((f.get(m) for f in folds for m in metrics if f.get(m) is not None), default=0.0)
    # The axis starts at a round figure below the lowest value, not wherever plotly puts
    # it, and says so: a fold spread of 0.88 to 0.98 must not fill the whole height.
    floor = max(0.0, min(0.5, float(int(lowest * 10) / 10)))
    figure.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), yaxis_title=f"value (axis from {floor:g})",
                         yaxis_range=[floor, 1.01],
                         title="Per fold (held-out fold, threshold fitted on the other folds)")
    return figure
