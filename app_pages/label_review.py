"""Label review: the images whose labels the audit doubts, one card per duplicate group
with the probability and Grad-CAM; a reviewer marks each group keep, relabel or exclude.
Decisions go to a review CSV (engine.evaluation.review) that training, cross-validation and
evaluation accept with ``--label-review``. The page suggests; only the reviewer decides."""

from pathlib import Path

import streamlit as st

from engine.request import CrossValidation, RunRequest
from engine import control, layout, runs
from engine.config import shipped_config
from engine.evaluation.audit import audit
from engine.serving.overlay import overlay
from engine.data.imageio import ImageDecodeError
from engine.evaluation.review import DECISIONS, queue_file, read_queue, read_review, record_decision
from ui.explained import explained
from ui.common import (
    SHIPPED_DIR, all_runs, label_issues, model_slug, reviews_dir, runs_root, selected_model_dir,
    usable_rows_by_group,
)


st.title("Label review")
st.caption("Ranked by confident learning on out-of-fold probabilities (each image scored by a "
           "model that never trained on its duplicate group). A high score means the model "
           "confidently disagrees with the label: a label error, a hard case, or a finding the "
           "label does not cover. Nothing is changed until a reviewer decides.")


def audit_sources() -> dict[str, Path]:
    """Folders with out-of-fold predictions: the shipped model's CV and CV runs."""
    found = {}
    if (SHIPPED_DIR / layout.OOF_PREDICTIONS).exists():
        found["Shipped model (checkpoints/)"] = SHIPPED_DIR
    for run in all_runs():
        if runs.is_cv(run.path) and (run.path / layout.OOF_PREDICTIONS).exists():
            found[f"cross-validation {run.run_id}"] = run.path
    return found


sources = audit_sources()
if not sources:
    st.info("No cross-validation with out-of-fold predictions yet: start one on **Train** "
            "(Cross-validate, K folds) or run `python -m engine.cv --folds 5`.")
    st.stop()
# The sidebar's model first, when it is a cross-validation with an audit: every page
# looks at the same study unless the user picks another here.
chosen = selected_model_dir().resolve()
names = sorted(sources, key=lambda name: sources[name].resolve() != chosen)
source_name = st.selectbox("Audit of", names)
folder = sources[source_name]
if not (folder / layout.LABEL_ISSUES).exists():
    if folder == SHIPPED_DIR:
        st.warning("The shipped model has no label_issues.csv.")
        st.stop()
    st.info("This cross-validation has not been audited yet.")
    if st.button("Run the label audit", type="primary"):
        audit(folder)
        st.rerun()
    st.stop()

slug = model_slug(folder)
REVIEWS_DIR = reviews_dir()
# Review files live under the runs folder only: the page never writes anywhere else.
review_name = st.text_input("Review name", slug, max_chars=80,
                            help=f"Decisions are written to {REVIEWS_DIR}/<name>.csv (atomically). "
                                 "Letters, digits, dot, dash and underscore.")
try:
    review_path = REVIEWS_DIR / f"{runs.validate_run_id(review_name.strip())}.csv"
except runs.RunError as err:
    # Name the rule that failed: ".hidden" holds only allowed characters but starts with a dot.
    st.error(f"Not a usable review name: {err}")
    st.stop()
try:
    decisions = read_review(review_path)
except ValueError as err:
    st.error(str(err))
    st.stop()

issues = label_issues(folder / layout.LABEL_ISSUES)  # parsed once per file version, shared
members = usable_rows_by_group(folder / layout.MANIFEST)

c1, c2, c3 = st.columns(3)
only_flagged = c1.checkbox("Only images flagged by confident learning", True)
hide_decided = c2.checkbox("Review next: hide groups already decided", True)
per_page = c3.number_input("Groups per page", 1, 50, 8)
queued = read_queue(queue_file(REVIEWS_DIR, slug))  # sent from the Map page
by_group: dict[int, list[dict]] = {}
for issue in issues:
    if only_flagged and not issue["flagged"] and issue["path"] not in queued:
        continue
    by_group.setdefault(issue["group"], []).append(issue)
if queued:
    st.caption(f"{len(queued):,} images sent from the Map page are in the queue, flagged or not.")


def expected_value(group: int) -> float:
    """Review order: the audit's top score in the group times the images the decision
    changes (a decision is taken once for all copies). A confident doubt about a slice
    copied 20 times moves 20 training labels; about a lone slice, one."""
    return max(i["score"] for i in by_group[group]) * max(1, len(members.get(group, [])))


groups = sorted(by_group, key=lambda g: -expected_value(g))
decided_groups = [g for g in groups if members.get(g) and all(r.path in decisions for r in members[g])]
if hide_decided:
    groups = [g for g in groups if g not in decided_groups]
flagged_total = sum(i["flagged"] for i in issues)
total_groups = len(by_group)
st.progress(len(decided_groups) / max(1, total_groups),
            text=f"{len(decided_groups)} of {total_groups} {'flagged ' if only_flagged else ''}groups decided")
st.markdown(f"**{len(issues)} images ranked, {flagged_total} flagged.** Groups in review order: the "
            "audit's score times the images a decision changes. "
            f"{len(decisions)} images decided in `{review_path.name}`.")
if review_path.exists():
    d1, d2 = st.columns([1, 2])
    d1.download_button("Download the review (CSV)", review_path.read_bytes(), review_path.name, "text/csv")
    if d2.button("Retrain with these decisions", type="primary",
                 help="Starts the shipped recipe's 5-fold cross-validation with this review file "
                      "(python -m engine.cv --shipped-recipe --label-review FILE) as a subprocess"):
        try:
            recipe = shipped_config(label_review=str(review_path), best_metric="last")
            run_id, _ = control.start_run(RunRequest(recipe, CrossValidation(5)),
                                          runs.new_run_id("cv5-reviewed"), root=runs_root())
            st.success(f"Started cross-validation {run_id}; follow it on **Train** or **Runs**.")
        except runs.RunError as err:
            st.error(str(err))
if not groups:
    st.success("Nothing to review with these filters.")
    st.stop()
pages = max(1, (len(groups) + per_page - 1) // per_page)
page = st.number_input("Page", 1, pages, 1) if pages > 1 else 1
shown = groups[(page - 1) * per_page: page * per_page]
label_name = {0: "no tumor", 1: "tumor"}


for group in shown:
    group_issues = by_group[group]
    top = group_issues[0]
    rows = members.get(group, [])
    decided = {decisions[r.path]["decision"] for r in rows if r.path in decisions}
    with st.container(border=True):
        st.markdown(
            f"**Group {group}** · {len(rows)} image(s) · labelled **{label_name[top['label']]}**, "
            f"model suggests **{label_name[top['suggested_label']]}** · score {top['score']:.3f} "
            f"({top['source']})" + (f" · decided: **{', '.join(sorted(decided))}**" if decided else ""))
        cols = st.columns(4)
        fold_of = {r.path: r.fold for r in rows}
        in_sample = False
        for col, issue in zip(cols, group_issues[:4]):
            # The figure that raised the flag is the out-of-fold probability (label_issues.csv);
            # the heat map comes from the fold model that never trained on the image where
            # that model's folder exists, else from the ensemble, named as in-sample.
            fold = fold_of.get(issue["path"], -1)
            fold_model = folder / layout.fold(fold)
            source = fold_model if fold >= 0 and (fold_model / layout.EXPORT).exists() else folder
            try:
                view, cam, probability = explained(source, issue["path"])
            except ImageDecodeError as err:
                col.error(f"{Path(issue['path']).name}: {err}")
                continue
            caption = f"{Path(issue['path']).name}: P(tumor) {issue['probability']:.3f} ({issue['source']})"
            if source == folder and fold >= 0:
                in_sample = True
                caption += f" · ensemble, in-sample: {probability:.3f}"
            col.image(overlay(view, cam, 0.45), width="stretch", caption=caption)
        st.caption("Heat map: Grad-CAM for the tumor class, scaled to its own maximum per image; "
                   + ("from the ensemble, most of whose members trained on these images (in-sample: "
                      "its probability is not the one that raised the flag)." if in_sample else
                      "from the fold model that never trained on the image."))
        labels_in_group = {r.original_label for r in rows}
        if len(labels_in_group) > 1:
            st.error("Its copies disagree: this duplicate group holds both labels.")
        try:
            from ui.neighbours_view import nearest_of_file, show_neighbours
            show_neighbours(nearest_of_file(folder, top["path"]), top["label"],
                            title="Most similar other images and their labels")
        except ImageDecodeError:
            pass
        suggested = top["suggested_label"]
        if suggested != top["label"] and st.button(
                f"Accept the suggestion: relabel all {len(rows)} as {label_name[suggested]}",
                key=f"accept_{slug}_{group}", type="primary"):
            record_decision(review_path, [(r.path, r.group, r.original_label) for r in rows], "relabel",
                            "accepted the audit's suggestion", "")
            st.toast(f"Group {group}: relabel saved for {len(rows)} image(s)")
            st.rerun()
        with st.form(f"decide_{slug}_{group}"):
            f1, f2, f3 = st.columns([2, 3, 2])
            decision = f1.radio("Decision for the whole group", DECISIONS, horizontal=True,
                                index=DECISIONS.index(next(iter(decided))) if len(decided) == 1 else 0,
                                key=f"decision_{slug}_{group}")
            note = f2.text_input("Note", key=f"note_{slug}_{group}",
                                 placeholder="what you saw, e.g. 'post-operative cavity, not a tumor'")
            reviewer = f3.text_input("Reviewer", key=f"reviewer_{slug}_{group}")
            if st.form_submit_button("Save decision"):
                record_decision(review_path, [(r.path, r.group, r.original_label) for r in rows],
                                decision, note, reviewer)
                st.toast(f"Group {group}: {decision} saved for {len(rows)} image(s)")
                st.rerun()
