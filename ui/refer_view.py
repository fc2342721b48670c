"""The refer band on Evaluate: the risk-coverage curve (what answering fewer images buys)
and, on the test split, coverage and the answered images' figures under the stored band
(engine.evaluation.selective). Reads eval_*.json and model.json only."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from engine.evaluation.intervals import format_with_ci


def curve_figure(curve: dict, chosen: float | None = None) -> go.Figure:
    figure = go.Figure()
    points = curve["curve"]
    for key, colour in (("accuracy", "#1f77b4"), ("sensitivity", "#d62728"), ("specificity", "#2ca02c")):
        figure.add_trace(go.Scatter(x=[p["coverage"] for p in points], y=[p[key] for p in points],
                                    mode="lines", name=key, line=dict(color=colour)))
    if chosen is not None:
        figure.add_vline(x=chosen, line_dash="dot", annotation_text="stored band")
    figure.update_layout(title=f"Risk-coverage (AURC {curve['aurc']:.4f})", height=300,
                         xaxis_title="share answered (most confident first)", yaxis_title="on the answered images",
                         margin=dict(l=40, r=10, t=40, b=40))
    return figure


def show(report: dict, info: dict, split: str) -> None:
    band = info.get("refer_band")
    curve = report.get("risk_coverage") or (report.get("refer") or {}).get("risk_coverage")
    if not band and not curve:
        st.caption("No refer band for this model yet: `python -m engine.refer MODEL --min-answered-accuracy "
                   "0.965` chooses one on its out-of-fold or validation predictions.")
        return
    st.subheader("When to refer")
    if band:
        st.markdown(f"Stored band: no verdict within a logit distance of **{band['margin']:.2f}** of the "
                    f"threshold; chosen on {band['calibrated_on']} ({band['rule']}), where it answered "
                    f"{100 * band['coverage']:.1f}% at {100 * band['accuracy']:.1f}% accuracy.")
    test = report.get("refer") if split == "test" else None
    if test:
        ci = test["ci"]
        st.markdown(
            f"**On this test split** (scored after the band was stored): answers {test['answered']} of "
            f"{test['images']} ({format_with_ci(test['coverage'], test['coverage_ci'])}); on the answered "
            f"images accuracy {format_with_ci(test['accuracy'], ci['accuracy'])}, sensitivity "
            f"{format_with_ci(test['sensitivity'], ci['sensitivity'])}, specificity "
            f"{format_with_ci(test['specificity'], ci['specificity'])}.")
        sets = report.get("prediction_sets")
        if sets:
            per_class = sets["per_class"]
            st.markdown(
                f"**Prediction sets** (α = {sets['alpha']}): the true class is in the set for "
                + ", ".join(f"{name.replace('_', ' ')} {format_with_ci(v['coverage'], v['coverage_ci'])}"
                            for name, v in per_class.items())
                + f" of images; {100 * sets['singletons']:.0f}% of sets hold one class, "
                  f"{100 * sets['both']:.0f}% both, {100 * sets['empty']:.0f}% none.")
    guaranteed = info.get("sensitivity_threshold")
    if guaranteed:
        line = (f"**A threshold with a guaranteed sensitivity** (offered beside the stored one, not used by "
                f"Predict): {guaranteed['threshold']:.4f}, {guaranteed['rule']}, chosen on "
                f"{guaranteed['calibrated_on']}.")
        scored = guaranteed.get("test")
        if scored and split == "test":
            line += (f" On this test split: sensitivity {format_with_ci(scored['sensitivity'], scored['sensitivity_ci'])}"
                     f", specificity {format_with_ci(scored['specificity'], scored['specificity_ci'])}: what the "
                     "promise costs in false alarms.")
        st.markdown(line)
    if curve:
        st.plotly_chart(curve_figure(curve, band["coverage"] if band and split != "test" else
                                     (test or {}).get("coverage")), width="stretch")
