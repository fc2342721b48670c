"""Errors: the misclassified images of a split, most confident mistakes first,
filterable by kind and modality, each with its Grad-CAM overlay; click to enlarge."""

from pathlib import Path

import numpy as np
import streamlit as st

from engine import layout
from engine.serving import refer
from engine.serving.overlay import overlay
from engine.data.imageio import ImageDecodeError
from ui.explained import explained
from ui.common import (
    SHIPPED_DIR, manifest_rows, read_json, read_predictions, selected_model_dir, split_choice, square,
)


@st.cache_resource(show_spinner=False)
def _groups_from(manifest: str, mtime: float) -> dict:
    return {row.path: row.group for row in manifest_rows(Path(manifest)) if row.usable}


@st.cache_resource(show_spinner=False)
def _folds_from(manifest: str, mtime: float) -> dict:
    return {row.path: row.fold for row in manifest_rows(Path(manifest)) if row.usable}


def folds_of(folder: Path) -> dict:
    manifest = folder / layout.MANIFEST
    return _folds_from(str(manifest), manifest.stat().st_mtime) if manifest.exists() else {}


def duplicate_groups(folder: Path) -> dict:
    """path -> duplicate group, from the model's manifest (empty if it has none)."""
    manifest = folder / layout.MANIFEST
    return _groups_from(str(manifest), manifest.stat().st_mtime) if manifest.exists() else {}


st.title("Errors")
model_dir = selected_model_dir()
split, is_cv_model = split_choice(model_dir)
predictions = read_predictions(model_dir, split)
if predictions is None:
    st.info("No predictions for this split yet: run the evaluation on the **Evaluate** page.")
    st.stop()
report = read_json(model_dir / layout.evaluation(split)) or {}
threshold = float(report.get("threshold", 0.5))
frame = predictions.copy()
# The decisions the evaluation stored (full-precision probability against the stored
# threshold), not a recount from the CSV's rounded probabilities: every page must
# report the same confusion matrix as eval_<split>.json.
if "predicted" not in frame.columns:
    frame["predicted"] = (frame["probability"] >= threshold).astype(int)
wrong = frame[frame["predicted"] != frame["label"]].copy()
wrong["kind"] = np.where(wrong["label"] == 1, "false negative", "false positive")
wrong["confidence"] = np.abs(wrong["probability"] - threshold)
wrong = wrong.sort_values("confidence", ascending=False)

# The stored refer band: an error inside it is one the model would have referred to a
# radiologist instead of answering (engine.serving.refer, the same rule as Predict).
band = (read_json(model_dir / layout.MODEL_INFO) or {}).get("refer_band") or {}
margin = float(band.get("margin", 0.0))
wrong["decision"] = refer.decisions(wrong["probability"].to_numpy(), threshold, margin) if margin > 0 else \
    np.where(wrong["predicted"] == 1, refer.TUMOR, refer.NO_TUMOR)
groups = duplicate_groups(model_dir)
wrong["group"] = wrong["path"].map(groups).fillna(-1).astype(int) if groups else -1
c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
# Pills rather than a multiselect: two long labels fit without being clipped.
kinds = c1.pills("Kind", ["false negative", "false positive"], selection_mode="multi",
                 default=["false negative", "false positive"]) or []
modalities = sorted(frame["modality"].astype(str).unique())
chosen_modalities = c2.pills("Modality", modalities, selection_mode="multi", default=modalities) or []
limit = c3.number_input("Show at most", 4, 200, 24, 4)
one_per_group = c4.checkbox("One per duplicate group", bool(groups),
                            help="Br35H holds many copies of a slice; show each group's worst copy once")
hide_referred = margin > 0 and st.toggle(
    "Leave out the errors the refer band would have referred", False,
    help=f"The stored band refers an image whose calibrated logit lies within {margin:.2f} of the threshold's "
         "(chosen on out-of-fold or validation predictions only): those become 'refer to a radiologist' "
         "instead of a wrong answer.")
opacity = st.slider("Heat-map opacity", 0.0, 1.0, 0.45, 0.05)
show_near = st.toggle("Show the nearest training images of each error", False,
                      help="The 5 most similar images the model learnt from, with their labels: is "
                           "the error a copy of a training slice, or does it sit among the other class?")
st.caption("Heat maps: Grad-CAM for the tumor class, each scaled to its own maximum (compare "
           "where, not how strongly, across images)."
           + (" Out-of-fold errors are explained by the fold model that scored them, where its "
              "folder exists; the shipped model keeps only the ensemble, whose map is shown "
              "instead (it trained on these images)." if split == "oof" else ""))
selected = wrong[wrong["kind"].isin(kinds) & wrong["modality"].astype(str).isin(chosen_modalities)].copy()
if hide_referred:
    selected = selected[selected["decision"] != refer.REFER]
selected["copies"] = selected.groupby("group")["path"].transform("count") if groups else 1
if one_per_group and groups:
    selected = selected.drop_duplicates("group")  # sorted worst first, so the worst copy stays
shown = selected.head(int(limit))
name = "shipped model" if model_dir == SHIPPED_DIR else f"run {model_dir.name}"
group_note = (f" in {wrong['group'].nunique()} duplicate groups" if groups else "")
st.write(f"**{len(wrong)}** of {len(frame)} {split} images are misclassified by the {name} at threshold "
         f"{threshold:.3f}{group_note} ({(wrong['kind'] == 'false negative').sum()} missed tumors, "
         f"{(wrong['kind'] == 'false positive').sum()} false alarms). Worst first."
         + (f" With the stored refer band, {(wrong['decision'] == refer.REFER).sum()} of them would have been "
            "referred instead of answered." if margin > 0 else ""))
if split == "oof":
    pooled = (read_json(model_dir / layout.CV_SUMMARY) or {}).get("pooled") or {}
    st.caption("Here every out-of-fold image is judged at one pooled threshold fitted on these same "
               "predictions" + (f"; the cross-validation summary and the model card count {pooled['errors']} "
                                 "errors with each fold at its own threshold, fitted on the other folds."
                                 if pooled.get("errors") is not None else "."))
if shown.empty:
    st.success("No misclassified images match these filters.")
    st.stop()
st.download_button(f"Download the {len(selected)} errors matching these filters (CSV)",
                   selected.drop(columns=[c for c in ("confidence",) if c in selected.columns]).to_csv(index=False).encode(),
                   f"errors_{split}.csv", "text/csv")


def heatmap_model_dir(path: str) -> Path:
    """Out-of-fold errors are explained by the fold model that scored them when its
    folder is there (a CV run); the shipped model keeps only the ensemble."""
    if split == "oof":
        fold = folds_of(model_dir).get(path, -1)
        candidate = model_dir / layout.fold(fold)
        if (candidate / "export" / "saved_model.pb").exists():
            return candidate
    return model_dir


@st.dialog("Misclassified image", width="large")
def enlarge(path: str, caption: str, image: np.ndarray):
    st.image(image, width=ENLARGED_PX)  # fits a laptop screen with its caption
    st.write(caption)
    st.caption(path)


ENLARGED_PX = 560
PER_ROW = 4
columns = []
for index, (_, item) in enumerate(shown.iterrows()):
    if index % PER_ROW == 0:  # a new row of columns per 4 cards, so rows line up
        columns = st.columns(PER_ROW)
    with columns[index % PER_ROW].container(border=True):
        copies = int(item["copies"]) if "copies" in item else 1
        caption = (f"{item['kind']} · p(tumor) {item['probability']:.3f} · {item['modality']}"
                   + (f" · {copies} copies misclassified" if copies > 1 else "")
                   + (" · inside the refer band: would be referred" if item["decision"] == refer.REFER else ""))
        try:
            heat_dir = heatmap_model_dir(item["path"])
            rgb, cam, _ = explained(heat_dir, item["path"])
        except ImageDecodeError as err:
            st.warning(f"{Path(item['path']).name}: {err}")
            continue
        picture = square(overlay(rgb, cam, opacity))  # every card the same image height
        st.image(picture, width="stretch", caption=Path(item["path"]).name)
        st.caption(caption)
        if st.button("Enlarge", key=f"enlarge_{index}"):
            enlarge(item["path"], caption, picture)
        if show_near:
            from ui.neighbours_view import nearest_of_file, show_neighbours
            found = nearest_of_file(model_dir, item["path"])
            if found is None:
                st.caption("This model stores no training features (neighbours.npz).")
            show_neighbours(found, int(item["label"]), title="Most similar images it learnt from")
