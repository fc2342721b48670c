"""Data: the data-health report of the data behind the model in use (or any run): what
is wrong with the images before any model sees them, and how much of the data set is
copies of itself. Reads data_health.json and data_issues.csv (engine.data.health);
measures them from the folder's manifest when they are missing. No TensorFlow."""

from collections import defaultdict
from pathlib import Path

import streamlit as st

from engine import layout
from engine.data.health import DEFECTS
from ui import shortcuts_view
from ui.common import (
    RESEARCH_NOTE, SHIPPED_DIR, data_issues, percent, read_json, runs_root, selected_model_dir, square,
)


st.title("Data health")
st.caption("Model-free checks of the data set: labels that contradict each other across copies, "
           "images that are blank, dark, washed out, blurred, tiny or oddly shaped, files that do "
           "not decode, and how much of the data is duplicates. " + RESEARCH_NOTE)

ISSUE_TEXT = {
    "conflicting_labels": "copies of one slice filed under both labels",
    "near_constant": "almost no information (blank or flat)",
    "dark": "the head itself is dim",
    "bright": "washed out, inverted or not a slice",
    "blurry": "little fine detail for its contrast",
    "small": "shorter side under 64 px",
    "odd_aspect": "wider or taller than 2.5:1",
    "unreadable": "does not decode",
    "exact_duplicate": "same pixels as another file (information)",
    "near_duplicate": "in a group of near copies (information)",
}

def show_shortcut_audit(folder: Path) -> None:
    """"Can the label be read without the brain?": the shortcut audit (shortcuts.json)."""
    st.subheader("Can the label be read without the brain?")
    report = shortcuts_view.audit(folder)
    if report is None:
        st.info("No shortcut audit in this folder yet (it predates the audit). Run "
                f"`python -m engine.shortcuts --model {folder} --out DIR` to make one.")
        return
    st.caption("A small model is given only how each image was made (size, file format, compression, "
               "the background outside the head, DICOM acquisition tags) or only the grey levels inside "
               "the head, and asked for the label, on the same grouped folds the network trains on.")
    shortcuts_view.show_cue_sets(report)
    shortcuts_view.show_cue_plots(folder, report)
    shortcuts_view.show_examples(folder, report)


folder = selected_model_dir()
show_shortcut_audit(folder)
health = read_json(folder / layout.DATA_HEALTH)
if health is None:
    manifest = folder / layout.MANIFEST
    if not manifest.exists():
        st.info("This model folder has no manifest, so its data cannot be checked here. Run "
                "`python -m engine.health --data-dir DIR --out DIR` on a data folder.")
        st.stop()
    st.info("No data-health report in this folder yet (it predates the report).")
    if st.button("Measure it from the folder's manifest", type="primary"):
        from engine.data.health import measure_missing_quality, write_health
        from engine.data.manifest import read_manifest
        target = folder if folder != SHIPPED_DIR else runs_root() / "data_health" / "shipped"
        with st.spinner("Decoding and scoring every image once..."):
            rows = read_manifest(manifest)
            measure_missing_quality(rows)
            write_health(target, rows, read_json(folder / layout.DATA_SUMMARY) or {})
        st.success(f"Written to {target}.")
        if target != folder:
            st.caption("The shipped model's folder is never rewritten; the report for it lives under runs/.")
    st.stop()

issues = health["issues"]
balance = health["class_balance"]
cols = st.columns(5)
# the usable count alone: "3000 / 3000" did not fit a fifth of the page
cols[0].metric("usable images", f"{health['usable']:,}",
               help=f"of {health['images']:,} files found; files that do not decode are counted as unreadable below")
cols[1].metric("need a look", health["images_with_a_defect"], help="images with at least one defect")
cols[2].metric("tumor share", percent(balance["tumor_share"]))
cols[3].metric("distinct slices", f"{health['duplicate_groups']}",
               help="duplicate groups: near copies count once")
leak = health.get("leak_if_random_split") or {}
cols[4].metric("random-split leak", percent(leak.get("val")) if leak else "n/a",
               help="validation images with a copy in train if the split ignored duplicates")
st.caption(f"{percent(health['duplicate_share'])} of the images have at least one near copy. "
           "Every split of this tool keeps a duplicate group on one side.")
contrast_test = (read_json(folder / layout.DATA_SUMMARY) or {}).get("contrast_test")
if contrast_test and contrast_test["method"] == "skipped":
    st.warning("Copies with another contrast were not looked for: " + contrast_test["note"] + ".")
elif contrast_test:
    st.caption("Copies with another contrast: " + contrast_test["note"] + ".")

st.subheader("Issues")
table = [{"issue": name, "images": issues.get(name, 0),
          "groups": (health.get("groups_per_issue") or {}).get(name, 0),
          "kind": "defect" if name in DEFECTS else "information", "meaning": ISSUE_TEXT.get(name, "")}
         for name in issues]
st.dataframe(table, hide_index=True, width="stretch")
with st.expander("Sizes, modalities and thresholds"):
    st.json({k: health.get(k) for k in ("width", "height", "modalities", "patients_per_split", "thresholds")})

issues_path = folder / layout.DATA_ISSUES
if not issues_path.exists():
    st.stop()
rows = data_issues(issues_path)  # parsed once per file version, shared
present = [name for name in ISSUE_TEXT if any(r["issue"] == name for r in rows)]
if not present:
    st.success("No issues found.")
    st.stop()
defects_first = [n for n in present if n in DEFECTS] + [n for n in present if n not in DEFECTS]
choice = st.selectbox("Gallery of", defects_first, format_func=lambda n: f"{n}: {ISSUE_TEXT[n]}")
by_group = defaultdict(list)
for row in rows:
    if row["issue"] == choice:
        by_group[row["group"]].append(row)
groups = sorted(by_group.items(), key=lambda item: -len(item[1]))
PAGE = 12
page = st.number_input(f"Page (of {max(1, -(-len(groups) // PAGE))}, {len(groups)} groups)", 1,
                       max(1, -(-len(groups) // PAGE)), 1)
for group, members in groups[(page - 1) * PAGE:page * PAGE]:
    label = f"group {group}" if group != "" else "no group"
    st.markdown(f"**{label}** · {len(members)} image(s) · {members[0]['detail']}")
    tiles = st.columns(6)
    for tile, member in zip(tiles, members[:6]):
        name = "/".join(Path(member["path"]).parts[-2:])
        if choice == "unreadable":
            tile.caption(f"{name}: {member['detail']}")
            continue
        try:
            from engine.data.imageio import decode_path
            tile.image(square(decode_path(member["path"])), caption=name, width="stretch")
        except Exception as err:  # noqa: BLE001 - a file that vanished or broke since
            tile.caption(f"{name}: cannot show ({err})")
