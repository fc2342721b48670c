"""Predict: upload scans (or draw samples) and see the tumor probability, the class at
the model's threshold and a Grad-CAM heat map, with a downloadable table."""

import hashlib
import random
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from engine import layout
from engine.serving.overlay import overlay
from ui.common import RESEARCH_NOTE, model_for, model_stamp, selected_model_dir


MAX_UPLOAD_MB = st.get_option("server.maxUploadSize")

st.title("Predict")
st.caption(RESEARCH_NOTE)


@st.cache_data(max_entries=512, show_spinner=False)
def predict_one(model_dir: str, stamp: float, name: str, digest: str, data: bytes) -> list[dict]:
    """Probability, class and Grad-CAM for one file (one entry per slice of a DICOM
    series file or NIfTI volume); cached per model and content."""
    from engine.serving.inference import predict_files
    model = _model(model_dir)
    return [{"name": name, "slice": result.slice_index, "withheld": result.identifiers_withheld,
             "probability": result.probability, "uncertainty": result.uncertainty,
             "ood": result.out_of_distribution, "ood_score": result.ood_score,
             "ood_reason": result.ood_reason,
             "label": result.predicted_label,
             "class": result.predicted_class, "error": result.error, "image": result.image,
             "cam": result.cam, "threshold": model.threshold,
             "neighbours": result.neighbours, "seen": result.seen_in_training,
             "decision": result.decision, "refer_reason": result.refer_reason,
             "prediction_set": result.prediction_set}
            for result in predict_files(model, [(name, data)], explain=True, neighbours=5)]


def _model(model_dir: str):
    from pathlib import Path
    return model_for(Path(model_dir))


@st.cache_data(show_spinner=False)
def sample_pool(model_dir: str) -> tuple[list[tuple[str, int]], str]:
    """(images, where from): the chosen model's own test split (images it never trained
    on), else the shipped model's, else Br35H."""
    from pathlib import Path

    from engine.data.manifest import read_manifest, rows_for_split
    from ui.common import SHIPPED_DIR
    for folder, said in ((Path(model_dir), "this model's test split"),
                         (SHIPPED_DIR, "the shipped model's test split")):
        manifest = folder / layout.MANIFEST
        if manifest.exists():
            rows = rows_for_split(read_manifest(manifest), "test")
            if rows:
                return [(r.path, r.label) for r in rows], said
    from engine.data.sources import discover
    images, _ = discover(None)
    return [(i.path, i.label) for i in images], "Br35H (no test split found)"


@st.cache_data(show_spinner=False, max_entries=2)
def _map_frame(path: str, stamp: float):
    from ui import map_view
    return map_view.read_map(Path(path))


def show_on_map(name: str, neighbours: list[dict]) -> None:
    """The upload placed on the model's map (Map page) among its nearest training images."""
    import plotly.express as px
    import plotly.graph_objects as go

    from ui import map_view
    map_file = model_dir / layout.MAP
    frame = _map_frame(str(map_file), map_file.stat().st_mtime)
    spot = map_view.place(frame, neighbours)
    if spot is None:
        return
    with st.expander("Where it falls on the map of the training data"):
        shown = map_view.drawn(frame).assign(label=lambda f: f["label"].map({1: "tumor", 0: "no tumor"}))
        figure = px.scatter(shown, x="x", y="y", color="label", render_mode="webgl", opacity=0.35,
                            color_discrete_map={"tumor": "#d62728", "no tumor": "#1f77b4"})
        figure.add_trace(go.Scatter(x=[spot[0]], y=[spot[1]], mode="markers", name=name,
                                    marker={"symbol": "star", "size": 18, "color": "black"}))
        figure.update_traces(marker={"size": 4}, selector={"type": "scattergl"})
        figure.update_layout(height=320, xaxis={"visible": False}, yaxis={"visible": False},
                             margin={"l": 0, "r": 0, "t": 0, "b": 0})
        st.plotly_chart(figure, width="stretch", key=f"map_{name}")
        st.caption("Placed at the similarity-weighted mean of its nearest training images; the Map page "
                   "has the whole picture.")


model_dir = selected_model_dir()
try:
    model = model_for(model_dir)
except FileNotFoundError as err:
    st.error(f"No usable model: {err}")
    st.stop()
stamp = model_stamp(model_dir)
from ui.common import SHIPPED_DIR  # noqa: E402
st.caption("Model: " + ("the shipped model (checkpoints/)" if model_dir == SHIPPED_DIR else f"run {model_dir.name}")
           + f" · {model.info.get('preset', '?')} at {model.image_size} px"
           + (f", an ensemble of {model.members}" if model.members > 1 else ""))

left, right = st.columns([3, 2])
with left:
    # No extension filter: files are recognised by their content (DICOM often has no
    # extension); anything else gets a message of its own.
    uploads = st.file_uploader(
        f"Brain CT or MRI slices: JPEG, PNG, BMP, TIFF, GIF, WebP, DICOM, NIfTI (.nii, .nii.gz); "
        f"up to {MAX_UPLOAD_MB} MB each", accept_multiple_files=True)
with right:
    count = st.number_input("Samples to draw", 1, 12, 4)
    if st.button("Try samples from the test split", help="Images of the chosen model's own test split: "
                 "it never trained on them or on a copy the duplicate tests found; a relative they miss "
                 "(a neighbouring slice of one series) is marked 'seen in training'"):
        pool, origin = sample_pool(str(model_dir))
        st.session_state["samples"] = random.Random().sample(pool, min(int(count), len(pool)))
        st.session_state["samples_origin"] = origin
    if st.session_state.get("samples"):
        st.caption(f"Samples drawn from {st.session_state.get('samples_origin', 'a test split')}.")
        if st.button("Clear samples"):
            st.session_state["samples"] = []
    opacity = st.slider("Heat-map opacity", 0.0, 1.0, 0.45, 0.05)

items = []  # (name, bytes, true label or None)
for upload in uploads or []:
    items.append((upload.name, upload.getvalue(), None))
for path, label in st.session_state.get("samples", []):
    try:
        with open(path, "rb") as handle:
            items.append((path.split("/")[-1], handle.read(), label))
    except OSError as err:
        st.warning(f"Sample {path} could not be read: {err}")

if not items:
    st.info("Upload one or more images, or draw samples, to see predictions.")
    st.stop()

results = []
progress = st.progress(0.0, text="Predicting ...")
for index, (name, data, truth) in enumerate(items):
    digest = hashlib.sha256(data).hexdigest()
    for result in predict_one(str(model_dir), stamp, name, digest, data):
        results.append(dict(result, truth=truth))
    progress.progress((index + 1) / len(items), text=f"Predicted {index + 1}/{len(items)}")
progress.empty()

table = pd.DataFrame([{
    "file": r["name"], "slice": r.get("slice"),
    "tumor probability": None if r["error"] else round(r["probability"], 4),
    "uncertainty (ensemble sd)": (None if r["error"] or r.get("uncertainty") is None
                                  else round(r["uncertainty"], 4)),
    "predicted class": ("" if r["error"] else "not assessed" if r.get("ood") else r["class"]),
    "decision": "" if r["error"] else r.get("decision") or r["class"],
    "prediction set (95% per class)": "" if r["error"] or r.get("prediction_set") is None else (
        " + ".join(r["prediction_set"]) or "none (unlike the calibration images)"),
    "seen in training": {None: "", True: "yes: a near-copy of a training image", False: "no"}[
        None if r["error"] else r.get("seen")],
    "out of distribution": {None: "", True: "yes: not like the training slices", False: "no"}[
        None if r["error"] else r.get("ood")],
    "true label": {None: "", 1: "tumor", 0: "no tumor"}[r["truth"]],
    "error": r["error"],
} for r in results])
# Streamlit's grid shows a missing value as "None": a picture has no slice, a failed file no
# probability, a single model no spread. Such cells are written empty (fixed-width
# numbers still sort as text), and a column empty everywhere is left out.
for column in ("slice", "tumor probability", "uncertainty (ensemble sd)"):
    if table[column].isna().all():
        table = table.drop(columns=column)
    else:
        table[column] = table[column].map(
            lambda v: "" if v is None or pd.isna(v) else (f"{int(v):d}" if column == "slice" else f"{v:.4f}"))
st.subheader("Results")
st.dataframe(table, hide_index=True, width="stretch")
st.download_button("Download results (CSV)", table.to_csv(index=False).encode(), "predictions.csv", "text/csv")
band = model.info.get("refer_band")
if band:
    st.caption(f"Refer band: no verdict within a logit distance of {band['margin']:.2f} of the threshold "
               f"(chosen on {band['calibrated_on']}: {band['rule']}; it answered "
               f"{100 * band['coverage']:.0f}% there). Prediction sets: each class's true images are in "
               f"their set at least {100 * (1 - model.info['conformal']['alpha']):.0f}% of the time on "
               "data like the calibration images.")
st.caption(f"Threshold {model.threshold:.3f} (chosen on {model.info.get('calibrated_on', 'validation data')}); "
           f"probabilities are temperature-calibrated (T = {model.temperature:.2f})."
           + (f" The model is an ensemble of {model.members} fold models; the uncertainty is the "
              "standard deviation of their probabilities." if model.members > 1 else ""))

for name in dict.fromkeys(r["name"] for r in results if r.get("withheld")):
    st.info(f"{name}: the file carries patient identifiers (name, ID, dates or similar). They were "
            "not read into this page, shown, or written anywhere.", icon=":material/shield_person:")

# A volume or multi-frame file: its slices' probabilities, and one slice at a time.
volumes: dict[str, list[dict]] = {}
for r in results:
    if r.get("slice") is not None and not r["error"]:
        volumes.setdefault(r["name"], []).append(r)
for name, slices in volumes.items():
    st.subheader(f"{name}: {len(slices)} slices")
    st.line_chart(pd.DataFrame({"slice": [r["slice"] for r in slices],
                                "tumor probability": [r["probability"] for r in slices]}).set_index("slice"),
                  height=180)
    # Only assessed slices get a verdict or count towards one, as for pictures and DICOM.
    assessed = [r for r in slices if not r.get("ood")]
    not_assessed = len(slices) - len(assessed)
    if not_assessed:
        st.warning(f"**{not_assessed} of {len(slices)} slices not assessed**: they do not look like the "
                   "brain slices the model was trained on, so they get no verdict and are left out of the "
                   "count below.", icon=":material/block:")
    worst = max(assessed or slices, key=lambda r: r["probability"])
    chosen = st.select_slider("Slice", [r["slice"] for r in slices], value=worst["slice"],
                              key=f"slice_{name}", help="Starts at the assessed slice with the highest probability")
    result = next(r for r in slices if r["slice"] == chosen)
    count = (f"assessed slices at or above the threshold: {sum(r['label'] == 1 for r in assessed)} of "
             f"{len(assessed)}" + (f"; {not_assessed} not assessed" if not_assessed else ""))
    if result.get("ood"):
        st.image(np.asarray(result["image"]), width=420, caption=f"{name}, slice {chosen} (no heat map: not assessed)")
        st.markdown(f"slice {chosen}: **not assessed** · {result.get('ood_reason') or 'out of distribution'} "
                    f"({count})")
    else:
        st.image(overlay(np.asarray(result["image"]), result["cam"], opacity), width=420,
                 caption=f"{name}, slice {chosen}: Grad-CAM for the tumor class, scaled per image")
        st.markdown(f"probability **{result['probability']:.3f}** · {result['class']} ({count})")

columns = st.columns(3)
shown = [r for r in results if not r["error"] and r.get("slice") is None]
for index, result in enumerate(shown):
    with columns[index % 3]:
        image = np.asarray(result["image"])
        st.image(overlay(image, result["cam"], opacity), width="stretch",
                 caption=f"{result['name']}: Grad-CAM for the tumor class, scaled per image")
        verdict = (":red[:material/warning: tumor]" if result["label"] == 1
                   else ":green[:material/check_circle: no tumor]")
        spread = result.get("uncertainty")
        figure = (f"probability **{result['probability']:.3f}**" + (f" ± {spread:.3f}" if spread is not None else ""))
        truth = (f" · true: {'tumor' if result['truth'] else 'no tumor'}" if result["truth"] is not None else "")
        if result.get("ood"):
            # No verdict on an input unlike the training slices: a probability there is
            # a number the model was never taught to give.
            st.warning(f"**Not assessed**: {result['name']} does not look like the brain slices the "
                       f"model was trained on: {result.get('ood_reason') or 'out of distribution'}.",
                       icon=":material/block:")
            with st.expander("Show the probability anyway"):
                st.markdown(f"{result['class']} · {figure}{truth}")
        elif result.get("decision") == "refer":
            st.warning(f"**Refer to a radiologist**: {result['refer_reason']}.", icon=":material/person_alert:")
            st.markdown(f"leaning {result['class']} · {figure}{truth}")
        else:
            st.markdown(f"**{verdict}** · {figure}{truth}")
        if result.get("seen"):
            st.info("Seen in training: this image is a near-copy of a training image (below), so "
                    "the prediction says what the model remembers, not how it generalises.",
                    icon=":material/content_copy:")
        from ui.neighbours_view import show_neighbours
        if result.get("ood"):
            # Their labels would read like a verdict by another route.
            st.caption("Nearest training images are not shown for an input the model does not assess.")
        else:
            show_neighbours({"neighbours": result.get("neighbours")} if result.get("neighbours") else None)
            if result.get("neighbours") and (model_dir / layout.MAP).exists():
                show_on_map(result["name"], result["neighbours"])
for result in results:
    if result["error"]:
        st.error(f"{result['name']}: {result['error']}")
