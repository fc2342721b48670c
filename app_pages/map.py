"""Map: the model's whole data set at a glance (map.csv from python -m engine.map), coloured
by label, prediction, error, audit, shortcut cue, health, fold or group; a lasso or box
selection opens the images with their figures and offers actions on them."""

from pathlib import Path

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from engine import layout
from engine.data.sources import relocate
from ui.common import SHIPPED_DIR, model_slug, reviews_dir, selected_model_dir
from ui import map_view

st.title("Map")
st.caption("Research software, not a medical device.")
model_dir = selected_model_dir()
name = "shipped model" if model_dir == SHIPPED_DIR else f"run {model_dir.name}"
map_file = model_dir / layout.MAP
if not map_file.exists():
    st.info(f"The {name} has no map yet. `python -m engine.map {model_dir}` writes it (about half a minute "
            "for 3,000 images on 2 cores), or compute it here.")
    if st.button("Compute the map now"):
        from engine.evaluation.embedding_map import write_map
        try:
            with st.spinner("Laying out the pooled features (PCA, then t-SNE) ..."):
                write_map(model_dir)
        except FileNotFoundError as err:
            st.error(str(err))
        else:
            st.rerun()
    st.stop()


@st.cache_data(show_spinner="Reading the map ...", max_entries=2)
def load(path: str, stamp: float):
    return map_view.read_map(Path(path))


frame = load(str(map_file), map_file.stat().st_mtime)
st.write(f"{len(frame):,} images of the {name}'s pool, placed by the features the model pools (t-SNE of "
         "their first 50 principal components): images the model sees alike lie close together. Positions "
         "and distances between clouds mean little; neighbourhoods do.")
colour_name = st.selectbox("Colour by", list(map_view.COLOURINGS), key="map_colour")
column, meaning = map_view.COLOURINGS[colour_name]
st.caption(meaning)
markers = map_view.drawn(frame)
shown = markers.assign(row=markers.index)
categorical = column in map_view.CATEGORICAL
if categorical:
    shown[column] = shown[column].astype("string").fillna("unknown")
figure = px.scatter(shown, x="x", y="y", color=column, custom_data=["row"], hover_name="file",
                    hover_data={"x": False, "y": False, "row": False, "label": True, "probability": ":.3f",
                                "group": True, "fold": True},
                    render_mode="webgl", opacity=0.75,
                    color_continuous_scale="Viridis" if not categorical else None)
if len(frame) > len(markers):
    figure.add_trace(go.Histogram2dContour(x=frame["x"], y=frame["y"], showscale=False, ncontours=12,
                                           colorscale="Greys", opacity=0.35, hoverinfo="skip", name="all images"))
    st.caption(f"{len(markers):,} of {len(frame):,} images drawn as points; the grey contours show all of them.")
figure.update_traces(marker={"size": 5}, selector={"type": "scattergl"})
figure.update_layout(height=620, dragmode="lasso", xaxis={"visible": False}, yaxis={"visible": False},
                     legend={"title": colour_name}, margin={"l": 0, "r": 0, "t": 10, "b": 0})
event = st.plotly_chart(figure, width="stretch", key="map_chart", on_select="rerun",
                        selection_mode=("points", "lasso", "box"))
picked = map_view.selected_rows(markers, event)
if picked.empty:
    st.info("Click a point, or draw a lasso or a box around points, to open those images.")
    st.stop()

st.subheader(f"Selection: {len(picked):,} images")
counts = map_view.summary(picked)
for box, (label, value) in zip(st.columns(len(counts)), counts.items()):
    box.metric(label, f"{value:,}")
grid = st.columns(6)
for index, (_, row) in enumerate(picked.head(24).iterrows()):
    with grid[index % 6]:
        verdict = "" if row["error"] != row["error"] else (" · wrong" if row["error"] == 1 else " · right")
        try:
            st.image(relocate(row["path"]), caption=f"{row['file']} · label {int(row['label'])}{verdict}", width="stretch")
        except Exception as err:  # noqa: BLE001 - one unreadable file must not hide the rest
            st.caption(f"{row['file']}: cannot show ({err})")
if len(picked) > 24:
    st.caption(f"The first 24 of {len(picked):,} shown; the table and the download hold all of them.")
table = picked[["path", "label", "probability", "predicted", "error", "flagged", "audit_score",
                "acquisition_score", "health_issues", "group", "fold"]]
st.dataframe(table, hide_index=True, width="stretch", height=min(400, 38 + 35 * len(table)))
left, right = st.columns(2)
left.download_button("Download the selection (CSV)", table.to_csv(index=False).encode(), "map_selection.csv",
                     "text/csv")
if left.button("Send the selection to the review queue",
               help="The Label review page shows these images' duplicate groups in its queue, flagged or not"):
    from engine.evaluation.review import add_to_queue, queue_file
    held = add_to_queue(queue_file(reviews_dir(), model_slug(model_dir)), [relocate(p) for p in picked["path"]],
                        note="sent from the Map page")
    st.success(f"{len(picked):,} images sent to the review queue of the {name} ({held:,} waiting); open "
               "Label review to decide them.")
with right.form("exclude_selection"):
    reviews = reviews_dir()
    review_name = st.text_input("Review file (under runs/label_reviews/)", "map_review.csv")
    note = st.text_input("Why", "excluded from the map")
    if st.form_submit_button("Mark the selection excluded in that review file"):
        from engine.evaluation.review import record_decision
        target = reviews / review_name
        if target.parent != reviews or not review_name.endswith(".csv"):
            st.error("Give a file name ending in .csv, without folders.")
        else:
            record_decision(target, map_view.exclusion_images(picked), "exclude", note=note)
            st.success(f"{len(picked):,} images marked excluded in {target.name}: train with "
                       f"--label-review {target} (or choose it on Train) to leave them out; Label review "
                       "shows the file.")
