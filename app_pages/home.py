"""Home: what the tool is, the model in use with its test metrics, and the default
data set with the duplicate leak made visible."""

import streamlit as st

from engine import layout
from engine.evaluation.intervals import format_with_ci
from ui import shortcuts_view
from ui.common import (
    RESEARCH_NOTE, SHIPPED_DIR, describe_kept_split, describe_twins, percent, plural, read_json, selected_model_dir,
)


st.title("Brain-tumor classifier dashboard")
st.warning(RESEARCH_NOTE, icon=":material/warning:")
st.markdown(
    "Upload a brain CT or MRI slice and see the model's tumor probability with a Grad-CAM heat map "
    "of what drove it (**Predict**); train a ResNet from your browser and watch it learn (**Train**, "
    "**Runs**); measure it on held-out data (**Evaluate**) and browse where it is wrong (**Errors**).")

model_dir = selected_model_dir()
info = read_json(model_dir / layout.MODEL_INFO) or {}
test = read_json(model_dir / layout.evaluation("test"))
st.subheader("Model in use")
name = "shipped model" if model_dir == SHIPPED_DIR else f"run {model_dir.name}"
st.write(f"**{name}**: {info.get('preset', '?')} (width {info.get('width', '?')}), "
         f"{info.get('image_size', '?')} px input, decision threshold {info.get('threshold', 0.5):.3f}, "
         f"temperature {info.get('temperature', 1.0):.2f}.")
cv = read_json(model_dir / layout.CV_SUMMARY)
if cv:
    m, sd = cv["mean"], cv["std"]
    st.markdown(f"**Cross-validation** ({cv['folds_count']} folds grouped by duplicate group, "
                f"{cv['images_cv']} images; mean ± std over folds)")
    cols = st.columns(4)
    for col, (label, key) in zip(cols, [("CV accuracy", "accuracy"), ("CV sensitivity", "sensitivity"),
                                        ("CV specificity", "specificity"), ("CV ROC AUC", "roc_auc")]):
        value, spread = m.get(key), sd.get(key)
        col.metric(label, "n/a" if value is None else (
            f"{value:.3f} ± {spread or 0:.3f}" if key == "roc_auc" else f"{100 * value:.1f} ± {100 * (spread or 0):.1f}%"))
    pooled = cv.get("pooled")
    if pooled:
        ci = pooled.get("ci") or {}
        st.caption("All out-of-fold images pooled, with 95% intervals (duplicate groups resampled): "
                   f"accuracy {format_with_ci(pooled['accuracy'], ci.get('accuracy'))}, sensitivity "
                   f"{format_with_ci(pooled['sensitivity'], ci.get('sensitivity'))}, specificity "
                   f"{format_with_ci(pooled['specificity'], ci.get('specificity'))}, ROC AUC "
                   f"{format_with_ci(pooled['roc_auc'], ci.get('roc_auc'), percent=False)}; "
                   f"{pooled['errors']} errors, each fold at its own threshold.")
if test:
    st.markdown(f"**Fixed test split** ({test.get('count')} images never used for training or tuning)")
    cols = st.columns(6)
    for col, (label, key) in zip(cols, [("accuracy", "accuracy"), ("sensitivity", "sensitivity"),
                                        ("specificity", "specificity"), ("ROC AUC", "roc_auc"),
                                        ("F1", "f1"), ("test images", "count")]):
        value = test.get(key)
        col.metric(label, value if key == "count" else (percent(value) if key != "roc_auc" else f"{value:.4f}"))
    test_ci = test.get("ci") or {}
    if test_ci:
        st.caption("95% intervals (duplicate groups resampled, " f"{test_ci.get('groups')} groups): " + ", ".join(
            f"{label} {format_with_ci(test.get(key), test_ci.get(key), percent=key != 'roc_auc')}"
            for label, key in (("accuracy", "accuracy"), ("sensitivity", "sensitivity"),
                               ("specificity", "specificity"), ("ROC AUC", "roc_auc"))))
    data_summary = read_json(model_dir / layout.DATA_SUMMARY) or {}
    seen = test.get("seen_in_training")
    st.caption(
        "Held-out test split of a duplicate-aware split: no copy of a test image found by the pixel "
        "tests (exact, perceptual hash, contrast-invariant) was in training"
        + (f", nor any image the twins passes merged with one ({describe_twins(data_summary['twins'])})."
           if data_summary.get("twins") else ".")
        + (f" {describe_kept_split(data_summary['kept_split']).capitalize()}."
           if data_summary.get("kept_split") else "")
        + ("" if not data_summary or "dedup_flips" in data_summary else
           " **This split was dealt before copies turned upside down were looked for**: on Br35H most "
           "test images have such a copy in training, so these test figures are optimistic "
           "(`python scripts/leak_free_figures.py` restates them on the images without one).")
        + (f" Still, the model's own neighbour check marks {seen['images']} of its {seen['of']} test images "
           f"(in {seen['groups']} of {seen['of_groups']} duplicate groups) \"seen in training\": relatives "
           "these tests miss, such as heavily sharpened copies, copies turned upside down (in splits dealt "
           "before that test) or neighbouring slices of one series; "
           "Predict marks them." if seen and seen["images"] else
           " The model's own neighbour check marks none of the test images \"seen in training\"." if seen else
           " Relatives the tests miss (neighbouring slices of one series, heavily processed copies) can "
           "remain: Predict marks such an image \"seen in training\"."))
    if cv and cv["mean"].get("accuracy") is not None and test.get("accuracy") is not None:
        gap = 100 * (cv["mean"]["accuracy"] - test["accuracy"])
        folds = [f["accuracy"] for f in cv.get("folds", []) if f.get("accuracy") is not None]
        inside = folds and min(folds) <= test["accuracy"] <= max(folds)
        st.markdown(
            f"The test figure is **{abs(gap):.1f} points {'below' if gap > 0 else 'above'}** the CV mean. "
            + (f"It lies inside the range of the folds ({100 * min(folds):.1f} to {100 * max(folds):.1f}%): "
               "one split of a few hundred duplicate groups moves accuracy by several points, which is why "
               "the CV mean ± std is the figure to compare models by, and the test split is looked at once."
               if inside else
               f"It lies {'below' if gap > 0 else 'above'} the range of the folds ({100 * min(folds):.1f} to "
               f"{100 * max(folds):.1f}%): "
               + ("the test split holds harder groups than any fold, or the folds share something the test "
                  "split does not. " if gap > 0 else
                  "the test split holds easier groups than any fold: one draw of a few duplicate groups. ")
               + "Compare models by the CV mean ± std; treat the test figure as one draw."
               if folds else ""))
else:
    st.info("This model has no test evaluation yet: open **Evaluate** to run it.")

audit = shortcuts_view.audit(model_dir)
if audit:
    st.markdown("**Shortcut check**: can the label be read from how an image was made?")
    for level, words in shortcuts_view.findings(audit):
        if level == "warning":
            st.warning(words, icon=":material/report:")
        elif level == "info":
            st.info(words)
        else:
            st.caption(words)
    sentence = shortcuts_view.headline_gap(audit)
    if sentence:
        st.write(sentence + " Details on **Data** and **Evaluate**.")

summary = read_json(model_dir / layout.DATA_SUMMARY) or read_json(SHIPPED_DIR / layout.DATA_SUMMARY)
st.subheader("Data set")
if summary:
    st.write(f"Source: `{summary.get('data_dir')}` ({summary.get('layout')}); "
             f"{summary['images']} usable images, {summary.get('files_skipped', 0)} skipped, "
             f"in **{summary['groups']} {plural(summary['groups'], 'group')} of duplicates** (largest: "
             f"{summary['largest_group']} {plural(summary['largest_group'], 'copy', 'copies')}).")
    if cv:
        st.caption(f"This model is a fold ensemble: {cv['folds_count']} members, each trained on "
                   f"{cv['folds_count'] - 1} of {cv['folds_count']} folds of the {cv['images_cv']} non-test "
                   "images; the split below is the scan's, where the fixed test split is all that counts.")
    rows = []
    for split in ("train", "val", "test"):
        counts = summary["splits"][split]
        rows.append({"split": split, "images": counts["images"], "distinct groups": counts["groups"],
                     "tumor": counts["tumor"], "no tumor": counts["no_tumor"],
                     **({"patients or volumes": summary["patients"][split]} if summary.get("patients") else {}),
                     **{f"modality {k}": v for k, v in counts["modalities"].items()}})
    st.dataframe(rows, hide_index=True, width="stretch")
    leak = summary["leak_if_random_split"]
    leak_box = st.error if max(leak["val"], leak["test"]) >= 0.01 else st.info
    leak_box(
        f"**Duplicate leak:** a random split of this data would put a near-copy of "
        f"{percent(leak['val'])} of validation and {percent(leak['test'])} of test images into training, "
        "so its accuracy would measure memory, not skill. Every split here keeps each duplicate group "
        f"on one side (leak in this split: {percent(summary['leak_in_this_split']['test'])}).", icon=":material/content_copy:")
    if summary.get("mixed_label_groups"):
        st.warning(f"{len(summary['mixed_label_groups'])} duplicate groups mix tumor and no-tumor labels.")
else:
    st.info("No data summary found for this model.")
