"""What every page shares: the sidebar (model choice, research-only note) and cached
loaders. Reading run folders never imports TensorFlow; only ``loaded_model`` does,
and it is cached once per server process (``st.cache_resource``)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from engine import layout, runs

SHIPPED = "Shipped model (checkpoints/)"
SHIPPED_DIR = runs.SHIPPED_MODEL_DIR
RESEARCH_NOTE = ("Research software, not a medical device: predictions are not a diagnosis and "
                 "must not be used for patient care.")


def runs_root() -> Path:
    return Path(os.environ.get("BRAIN_RUNS_DIR", runs.DEFAULT_RUNS_ROOT))


def all_runs() -> list[runs.RunSummary]:
    """runs.list_runs for the runs folder, cached until a run's files change (every
    page and the sidebar list the runs on each rerun). A cached run that was active is
    re-read, so a training process that died without a word shows as failed at once."""
    root = runs_root()
    cached = _runs_cached(str(root), _fingerprint(root))
    return [replace(run, status=runs.read_status(run.path)) if run.state in runs.ACTIVE_STATES else run
            for run in cached]


@st.cache_data(max_entries=4, show_spinner=False)
def _runs_cached(root: str, fingerprint: tuple) -> list[runs.RunSummary]:
    return runs.list_runs(root)


def _fingerprint(root: Path) -> tuple:
    """Names and modification times of the files a run summary is read from."""
    found = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return ()
    for entry in entries:
        if entry.is_dir():
            for name in (layout.STATUS, layout.CONFIG, layout.METRICS, layout.evaluation("test"),
                         layout.CV_SUMMARY):
                try:
                    found.append((entry.name, name, os.stat(os.path.join(entry.path, name)).st_mtime_ns))
                except OSError:
                    pass
    return tuple(found)


def model_dirs() -> dict[str, Path]:
    """Label -> folder of every model that can predict: the shipped one and each
    run with an exported model."""
    choices = {SHIPPED: SHIPPED_DIR}
    for run in all_runs():
        if (run.path / layout.EXPORT / "saved_model.pb").exists():
            choices[f"run {run.run_id}"] = run.path
    return choices


def sidebar() -> Path:
    """Draw the shared sidebar; return the chosen model folder."""
    choices = model_dirs()
    labels = list(choices)
    wanted = st.query_params.get("model")
    if wanted and f"run {wanted}" in choices and st.session_state.get("_model_from_query") != wanted:
        st.session_state["model_choice"] = f"run {wanted}"
        st.session_state["_model_from_query"] = wanted
    # Pages ask for a model by setting this key; it is applied here, before the
    # sidebar's widget with key "model_choice" exists (setting a widget's key after
    # it is instantiated raises StreamlitAPIException).
    pending = st.session_state.pop("_pending_model_choice", None)
    if pending in choices:
        st.session_state["model_choice"] = pending
    if st.session_state.get("model_choice") not in choices:
        st.session_state["model_choice"] = SHIPPED
    with st.sidebar:
        st.selectbox("Model", labels, key="model_choice",
                     help="The model used by Predict, Evaluate and Errors: the shipped one or a "
                          "finished run of yours.")
        st.caption(RESEARCH_NOTE)
    # The choice lives in the URL too (?model=<run id>), so a reload or a shared link
    # opens the same model; the shipped model is the URL without it.
    chosen = st.session_state["model_choice"]
    run_id = chosen[len("run "):] if chosen.startswith("run ") else None
    if st.query_params.get("model") != run_id:
        if run_id:
            st.query_params["model"] = run_id
            st.session_state["_model_from_query"] = run_id
        elif "model" in st.query_params:
            del st.query_params["model"]
    return choices[chosen]


def selected_model_dir() -> Path:
    return model_dirs().get(st.session_state.get("model_choice", SHIPPED), SHIPPED_DIR)


def reviews_dir() -> Path:
    """Where label review files and review queues live: runs/label_reviews/."""
    return runs_root() / "label_reviews"


def model_slug(model_dir: Path) -> str:
    """The name a model's review files and queue carry ("shipped" for checkpoints/): the
    Map page and Label review must agree on it to share a queue."""
    return "shipped" if model_dir == SHIPPED_DIR else model_dir.name


def split_choice(model_dir: Path) -> tuple[str, bool]:
    """The split radio Evaluate and Errors share: (chosen split, whether the model is a
    cross-validation). A CV offers its out-of-fold pool, a single run its validation split."""
    is_cv_model = (model_dir / layout.CV_SUMMARY).exists()  # a finished CV: its out-of-fold files exist
    split = st.radio("Split", ["test", "oof"] if is_cv_model else ["test", "val"], horizontal=True,
                     format_func=lambda s: {"oof": "out-of-fold (CV)"}.get(s, s),
                     help="test is untouched by training and tuning. "
                     + ("out-of-fold: every other image, each predicted by the fold model that never "
                        "trained on its duplicate group (threshold and temperature were fitted on them)."
                        if is_cv_model else "val chose the threshold and temperature."))
    return split, is_cv_model


@st.cache_resource(show_spinner="Loading the model ...")
def loaded_model(directory: str, stamp: float):
    """The model in ``directory``, warmed up; ``stamp`` (model.json's mtime) reloads it
    after a recalibration."""
    from ui import warmup
    warmed = warmup.take(directory)  # loaded before the first visit by python -m ui.serve
    if warmed is not None:
        return warmed
    from engine.serving.inference import load_model
    return load_model(directory).warm_up()


def model_stamp(directory: Path) -> float:
    """model.json's mtime: part of every cache key, so a recalibration is seen."""
    info = directory / layout.MODEL_INFO
    return info.stat().st_mtime if info.exists() else 0.0


def model_for(directory: Path):
    return loaded_model(str(directory), model_stamp(directory))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0


@st.cache_data(show_spinner=False)
def _read_json_cached(path: str, mtime: float):
    return runs.read_json(path)


def read_json(path: Path):
    return _read_json_cached(str(path), _mtime(path))


@st.cache_data(show_spinner=False)
def _read_csv_cached(path: str, mtime: float) -> pd.DataFrame:
    return pd.read_csv(path)


def read_predictions(directory: Path, split: str) -> pd.DataFrame | None:
    from engine.data.sources import relocate
    path = directory / layout.predictions(split)
    if not path.exists():
        return None
    frame = _read_csv_cached(str(path), _mtime(path)).copy()
    frame["path"] = frame["path"].map(relocate)
    return frame


def available_devices() -> str:
    """What this machine offers for training, found without importing TensorFlow (the
    page must stay fast): CPU cores and NVIDIA GPUs known to the driver."""
    gpus_dir = Path("/proc/driver/nvidia/gpus")
    gpus = len(list(gpus_dir.iterdir())) if gpus_dir.is_dir() else 0
    cores = os.cpu_count() or 1
    return f"{cores} CPU cores, " + (f"{gpus} NVIDIA GPU(s)" if gpus else "no NVIDIA GPU")


def percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def plural(count: int, word: str, plural_form: str | None = None) -> str:
    """"tumor" or "tumors" for ``count`` ("1 missed tumor", "3 missed tumors")."""
    return word if count == 1 else (plural_form or word + "s")


def describe_kept_split(kept: dict) -> str:
    """A data summary's ``kept_split`` entry (engine.data.manifest.keep_test_split) in
    words: which earlier split was frozen and how many images moved with a merged group."""
    moved_in, moved_out = len(kept.get("moved_into_test", [])), len(kept.get("moved_out_of_test", []))
    moved = (f"{moved_in} {plural(moved_in, 'image')} moved into it and {moved_out} {plural(moved_out, 'image')} "
             "out of it with the groups the twins joined across it" if moved_in or moved_out else "no image moved")
    return f"the test split of {kept.get('from', 'an earlier manifest')} was kept; {moved}"


def describe_twins(twins: dict) -> str:
    """A data summary's ``twins`` entry in words (engine.training.twins): a model's
    feature pass, the groups kept from an earlier manifest, or several of them."""
    if twins.get("sources"):
        return "; ".join(describe_twins(source) for source in twins["sources"])
    if "pairs_from" in twins:
        count = twins.get("pairs", 0)
        return f"{count:,} {plural(count, 'pair')} confirmed by eye in {twins['pairs_from']}"
    if "groups_from" in twins:
        return f"the groups of {twins['groups_from']} kept, {twins.get('pairs', 0):,} pairs"
    similarity = twins.get("min_similarity")
    return (f"{twins.get('pairs', 0):,} pairs at feature similarity ≥ {similarity:.3f} in model "
            f"{twins.get('model', '?')}" if similarity is not None else f"{twins.get('pairs', 0):,} pairs")


def duration(seconds) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def square(image: np.ndarray) -> np.ndarray:
    """The image centred on a black square canvas (no resampling), so a gallery of
    slices of different shapes lines up in rows."""
    height, width = image.shape[:2]
    side = max(height, width)
    canvas = np.zeros((side, side) + image.shape[2:], image.dtype)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top:top + height, left:left + width] = image
    return canvas


# ---------------------------------------------------------------- large tables, read once
# A hospital-sized study has manifests of 100,000 rows and more: each table is parsed once
# per file version and shared by every session and rerun (cache_resource: no copy per
# rerun; callers treat the result as read-only).

@st.cache_resource(max_entries=4, show_spinner="Reading the manifest ...")
def _manifest_rows(path: str, stamp: float) -> tuple:
    from engine.data.manifest import read_manifest
    return tuple(read_manifest(path))


def manifest_rows(path: Path) -> tuple:
    """The manifest's rows (ManifestRow), parsed once per version of the file. Read-only."""
    return _manifest_rows(str(path), _mtime(path))


@st.cache_resource(max_entries=4, show_spinner=False)
def _usable_by_group(path: str, stamp: float) -> dict:
    members: dict[int, list] = {}
    for row in _manifest_rows(path, stamp):
        if row.usable:
            members.setdefault(row.group, []).append(row)
    return members


def usable_rows_by_group(path: Path) -> dict:
    """Duplicate group -> its usable manifest rows. Read-only."""
    return _usable_by_group(str(path), _mtime(path))


@st.cache_resource(max_entries=4, show_spinner="Reading the label audit ...")
def _label_issues(path: str, stamp: float) -> tuple:
    from engine.evaluation.audit import read_issues
    return tuple(read_issues(path))


def label_issues(path: Path) -> tuple:
    """Rows of a label_issues.csv (engine.evaluation.audit), most suspicious first. Read-only."""
    return _label_issues(str(path), _mtime(path))


@st.cache_resource(max_entries=4, show_spinner=False)
def _data_issues(path: str, stamp: float) -> tuple:
    from engine.data.health import read_issues
    return tuple(read_issues(path))


def data_issues(path: Path) -> tuple:
    """Rows of a data_issues.csv (engine.data.health). Read-only."""
    return _data_issues(str(path), _mtime(path))
