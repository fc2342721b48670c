"""Home: what the tool is, the model in use with its test metrics, and the default
data set with the duplicate leak made visible."""

import streamlit as st

from engine import runs
from ui.app import require_navigation
from ui.common import (
    RESEARCH_NOTE, SHIPPED_DIR, percent, read_json, selected_model_dir,
)

require_navigation()

st.title("Brain-tumor classifier dashboard")
st.warning(RESEARCH_NOTE, icon=":material/warning:")
st.markdown(
    "Upload a brain CT or MRI slice and see the model's tumor probability with a Grad-CAM heat map "
    "of what drove it (**Predict**); train a ResNet from your browser and watch it learn (**Train**, "
    "**Runs**); measure it on held-out data (**Evaluate**) and browse where it is wrong (**Errors**).")

model_dir = selected_model_dir()
info = read_json(model_dir / runs.MODEL_INFO_FILE) or {}
test = read_json(model_dir / "eval_test.json")
st.subheader("Model in use")
name = "shipped model" if model_dir == SHIPPED_DIR else f"run {model_dir.name}"
st.write(f"**{name}**: {info.get('preset', '?')} (width {info.get('width', '?')}), "
         f"{info.get('image_size', '?')} px input, decision threshold {info.get('threshold', 0.5):.3f}, "
         f"temperature {info.get('temperature', 1.0):.2f}.")
if test:
    cols = st.columns(6)
    for col, (label, key) in zip(cols, [("accuracy", "accuracy"), ("sensitivity", "sensitivity"),
                                        ("specificity", "specificity"), ("ROC AUC", "roc_auc"),
                                        ("F1", "f1"), ("test images", "count")]):
        value = test.get(key)
        col.metric(label, value if key == "count" else (percent(value) if key != "roc_auc" else f"{value:.4f}"))
    st.caption("Held-out test split of a duplicate-aware split: no near-copy of a test image was "
               "seen in training.")
    cv = read_json(model_dir / runs.CV_SUMMARY_FILE)
    if cv:
        m, s = cv["mean"], cv["std"]
        st.markdown(
            f"Cross-validation behind it ({cv['folds_count']} folds grouped by duplicate group, "
            f"{cv['images_cv']} images): accuracy **{100 * m['accuracy']:.1f} ± {100 * s['accuracy']:.1f}%**, "
            f"ROC AUC **{m['roc_auc']:.3f} ± {s['roc_auc']:.3f}** (mean ± std over folds). "
            f"The model is the ensemble of the {cv['folds_count']} fold models. A single split's figure "
            "swings by several points with the few duplicate groups that land in it; the spread over "
            "folds shows by how much.")
else:
    st.info("This model has no test evaluation yet: open **Evaluate** to run it.")

summary = read_json(model_dir / runs.SUMMARY_FILE) or read_json(SHIPPED_DIR / runs.SUMMARY_FILE)
st.subheader("Data set")
if summary:
    st.write(f"Source: `{summary.get('data_dir')}` ({summary.get('layout')}); "
             f"{summary['images']} usable images, {summary.get('files_skipped', 0)} skipped, "
             f"in **{summary['groups']} groups of duplicates** (largest: {summary['largest_group']} copies).")
    rows = []
    for split in ("train", "val", "test"):
        counts = summary["splits"][split]
        rows.append({"split": split, "images": counts["images"], "distinct groups": counts["groups"],
                     "tumor": counts["tumor"], "no tumor": counts["no_tumor"],
                     **({"patients or volumes": summary["patients"][split]} if summary.get("patients") else {}),
                     **{f"modality {k}": v for k, v in counts["modalities"].items()}})
    st.dataframe(rows, hide_index=True, width="stretch")
    leak = summary["leak_if_random_split"]
    st.error(
        f"**Duplicate leak:** a random split of this data would put a near-copy of "
        f"{percent(leak['val'])} of validation and {percent(leak['test'])} of test images into training, "
        "so its accuracy would measure memory, not skill. Every split here keeps each duplicate group "
        f"on one side (leak in this split: {percent(summary['leak_in_this_split']['test'])}).", icon=":material/content_copy:")
    if summary.get("mixed_label_groups"):
        st.warning(f"{len(summary['mixed_label_groups'])} duplicate groups mix tumor and no-tumor labels.")
else:
    st.info("No data summary found for this model.")
