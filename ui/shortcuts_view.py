"""The shortcut audit on the pages: can the label be read without the brain (Data), how
the model does where the cues agree and where they point the wrong way (Evaluate, Home),
and where it is weak by how the images were made (the per-slice table). Reads only
``shortcuts.json`` and ``cues.csv`` (engine.evaluation.shortcut_audit). No TensorFlow."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from engine import layout
from engine.data.cues import cue_label
from engine.evaluation.intervals import format_with_ci
from ui.common import read_json, square

SET_TITLES = {"acquisition": "How the image was made (size, format, compression, background)",
              "intensity": "Grey levels inside the head"}


def audit(folder: Path) -> dict | None:
    return read_json(folder / layout.SHORTCUTS)


@st.cache_data(max_entries=4, show_spinner=False)
def _cues(path: str, stamp: float) -> pd.DataFrame:
    from engine.data.sources import relocate
    frame = pd.read_csv(path)
    frame["path"] = frame["path"].map(relocate)
    return frame


def cues(folder: Path) -> pd.DataFrame | None:
    path = folder / layout.CUES
    return _cues(str(path), path.stat().st_mtime) if path.exists() else None


def _auc_text(entry: dict) -> str:
    return format_with_ci(entry.get("auc"), entry.get("auc_ci"), percent=False, digits=2)


def loudness(entry: dict) -> str:
    """How loudly a cue set's finding is shown: "warning" above AUC 0.8, "info" from 0.65
    (some of the label), else "caption". Data and Home show the same three levels."""
    auc = entry.get("auc") or 0
    return "warning" if auc > 0.8 else "info" if auc >= 0.65 else "caption"


def show_cue_sets(report: dict) -> None:
    """Each cue set's AUC with its interval, in words, and its top cues."""
    boxes = {"warning": st.error, "info": st.warning, "caption": st.success}
    for name, entry in report["cue_sets"].items():
        words = entry.get("words", "")
        box = boxes[loudness(entry)]
        box(f"**{SET_TITLES.get(name, name)}**: out-of-fold ROC AUC {_auc_text(entry)}. {words}")
        if entry.get("top_cues"):
            st.caption("Strongest cues (drop of held-out AUC when the cue is shuffled): " + ", ".join(
                f"{c['label']} ({c['importance']:.3f})" for c in entry["top_cues"]))
    st.caption(f"{report['images']} images; cue models fitted on {report['folds']} folds "
               f"({report['fold_source']}). AUC 0.5 = the cues say nothing about the label, 1.0 = "
               "they give it away. Intervals: 95%, duplicate groups resampled.")


def cue_plot(frame: pd.DataFrame, cue: str, label: str) -> go.Figure:
    """One cue's distribution per class (box plot; a bar of counts for text cues)."""
    figure = go.Figure()
    names = {1: "tumor", 0: "no tumor"}
    if frame[cue].dtype == object:
        counts = frame.groupby([cue, "label"]).size().unstack(fill_value=0)
        for value in (1, 0):
            if value in counts:
                figure.add_trace(go.Bar(x=counts.index.astype(str), y=counts[value], name=names[value]))
    else:
        for value in (1, 0):
            figure.add_trace(go.Box(y=frame.loc[frame["label"] == value, cue], name=names[value],
                                    boxpoints=False))
    figure.update_layout(title=label, height=280, margin=dict(l=40, r=10, t=40, b=40), showlegend=False)
    figure.update_xaxes(showticklabels=True, title_text="label")
    return figure


def show_cue_plots(folder: Path, report: dict) -> None:
    frame = cues(folder)
    if frame is None:
        return
    top = [c for c in report["cue_sets"].get("acquisition", {}).get("top_cues", [])[:3] if c["cue"] in frame]
    if not top:
        return
    columns = st.columns(len(top))
    for column, cue in zip(columns, top):
        column.plotly_chart(cue_plot(frame, cue["cue"], cue["label"]), width="stretch")


def show_examples(folder: Path, report: dict, per_side: int = 4) -> None:
    """Images from both ends of the strongest numeric acquisition cue, with their labels:
    what the source looks like when it agrees with the label and when it does not."""
    frame = cues(folder)
    top = report["cue_sets"].get("acquisition", {}).get("top_cues", [])
    numeric = [c for c in top if frame is not None and c["cue"] in frame and frame[c["cue"]].dtype != object]
    if not numeric:
        return
    cue = numeric[0]
    values = frame[cue["cue"]]
    low, high = values.quantile(0.25), values.quantile(0.75)
    st.markdown(f"**Examples from both ends of the strongest cue: {cue['label']}**")
    from engine.data.imageio import ImageDecodeError, decode_path
    for title, part in ((f"low ({cue['label']} ≤ {low:.3g})", frame[values <= low]),
                        (f"high ({cue['label']} ≥ {high:.3g})", frame[values >= high])):
        picks = pd.concat([part[part["label"] == 1].head(per_side // 2), part[part["label"] == 0].head(per_side // 2)])
        shares = part["label"].mean() if len(part) else float("nan")
        st.caption(f"{title}: {len(part)} images, {100 * shares:.0f}% labelled tumor")
        tiles = st.columns(per_side)
        for tile, (_, row) in zip(tiles, picks.iterrows()):
            name = "/".join(Path(row["path"]).parts[-2:])
            try:
                tile.image(square(decode_path(row["path"])), width="stretch",
                           caption=f"{name} · {'tumor' if row['label'] == 1 else 'no tumor'} · {row[cue['cue']]:.3g}")
            except ImageDecodeError as err:
                tile.caption(f"{name}: cannot show ({err})")


def gap_frame(part: dict) -> pd.DataFrame:
    rows = []
    for name, sides in part["by_set"].items():
        a, c = sides["aligned"], sides["conflicting"]
        rows.append({"cue set": name,
                     "aligned: images": a["count"], "aligned: accuracy": format_with_ci(a["accuracy"], a["accuracy_ci"]),
                     "conflicting: images": c["count"],
                     "conflicting: accuracy": format_with_ci(c["accuracy"], c["accuracy_ci"]),
                     "gap (points)": "–" if sides["gap"] is None else
                     f"{100 * sides['gap']:+.1f}" + (f" ({100 * sides['gap_ci'][0]:+.1f} to {100 * sides['gap_ci'][1]:+.1f})"
                                                    if sides.get("gap_ci") else "")})
    return pd.DataFrame(rows)


def show_gap(report: dict, kind: str) -> bool:
    """The aligned / conflicting table of one prediction kind ("oof" or "test"); False
    when the audit holds no such predictions."""
    part = (report.get("model") or {}).get(kind)
    if not part:
        return False
    st.markdown(f"**Does the model lean on the source?** ({part['source']}, {part['images']} images)")
    st.dataframe(gap_frame(part), hide_index=True, width="stretch")
    st.caption("Aligned: images whose cues point to their own label; conflicting: cues point to the "
               "other class. A model that reads the brain is equally right on both: a large positive "
               "gap means it is partly reading how the image was made.")
    return True


def slice_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{
        "by": cue_label(r.get("column"), r.get("label")), "bin": r["bin"], "images": r["count"], "tumor / no tumor": f"{r['tumor']} / {r['no_tumor']}",
        "accuracy": format_with_ci(r["accuracy"], r["ci"]["accuracy"]),
        "sensitivity": format_with_ci(r["sensitivity"], r["ci"]["sensitivity"]),
        "specificity": format_with_ci(r["specificity"], r["ci"]["specificity"])} for r in rows])


def show_slices(report: dict, kind: str) -> None:
    part = (report.get("model") or {}).get(kind)
    if not part or not part.get("slices"):
        return
    st.markdown("**Per-slice results** (bins of the strongest cues, the health scores and the modality; "
                "worst first)")
    st.dataframe(slice_frame(part["slices"]), hide_index=True, width="stretch")


def headline_gap(report: dict | None) -> str | None:
    """One sentence for Home: the largest aligned / conflicting gap of the model's
    out-of-fold (else test) predictions."""
    if not report or not report.get("model"):
        return None
    kind = "oof" if "oof" in report["model"] else next(iter(report["model"]))
    part = report["model"][kind]
    gaps = [(name, s) for name, s in part["by_set"].items() if s.get("gap") is not None]
    if not gaps:
        return None
    name, sides = max(gaps, key=lambda item: item[1]["gap"])
    return (f"Where the {name} cues point the wrong way ({sides['conflicting']['count']} images, "
            f"{'out-of-fold' if kind == 'oof' else 'test split'}), the model is right "
            f"{format_with_ci(sides['conflicting']['accuracy'], sides['conflicting']['accuracy_ci'])} of the time, "
            f"against {format_with_ci(sides['aligned']['accuracy'], sides['aligned']['accuracy_ci'])} where they "
            f"agree with the label: a gap of {100 * sides['gap']:.1f} points.")


def findings(report: dict | None) -> list[tuple[str, str]]:
    """Every cue set's plain words with how loudly to show them (``loudness``). Home shows
    all of them, so a data set whose cues carry part of the label says so even below
    the warning line."""
    if not report:
        return []
    return [(loudness(entry), entry.get("words", "")) for entry in report["cue_sets"].values()]

