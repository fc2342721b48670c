"""Load and warm the default model before anyone opens the dashboard.

Streamlit runs a page only when a browser asks for it, so the first visit to Predict
used to pay for importing TensorFlow, loading the SavedModel and tracing its functions
(about 8 s on 2 cores). ``python -m ui.serve`` calls ``start`` in the server process
before the server listens; the load runs on a daemon thread, and ``ui.common``'s cached
loader takes the result (waiting for it if it is still loading) instead of loading a
second copy. A failed warm-up is not an error: the page then loads the model itself and
shows why it cannot.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

log = logging.getLogger("ui.warmup")
_lock = threading.Lock()
_loads: dict[tuple[str, float], Future] = {}


def _key(directory: str | Path) -> tuple[str, float]:
    from engine import layout
    directory = Path(directory).resolve()
    info = directory / layout.MODEL_INFO
    return str(directory), (info.stat().st_mtime if info.exists() else 0.0)


def start(directory: str | Path) -> Future:
    """Begin loading and warming the model in ``directory`` on a background thread
    (once per version of its model.json). Returns the future of the loaded model."""
    key = _key(directory)
    with _lock:
        if key in _loads:
            return _loads[key]
        future: Future = Future()
        _loads[key] = future

    def load():
        started = time.perf_counter()
        try:
            from engine.serving.inference import load_model
            model = load_model(key[0]).warm_up()
            future.set_result(model)
            # On stderr, where the server's own start-up lines go (bench/browser_latency.py reads it).
            print(f"model warmed: {key[0]} in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        except BaseException as err:  # noqa: BLE001 - handed to whoever asks for it
            future.set_exception(err)

    threading.Thread(target=load, name="model-warm-up", daemon=True).start()
    return future


def take(directory: str | Path):
    """The model warmed for ``directory`` (waiting for a load in progress), or None when
    no warm-up was started for this version of it or the warm-up failed."""
    with _lock:
        future = _loads.get(_key(directory))
    if future is None:
        return None
    try:
        return future.result()
    except Exception:  # noqa: BLE001 - the page loads the model itself and reports the error
        return None
