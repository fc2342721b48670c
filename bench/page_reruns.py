"""Server-side time of a page rerun: what every click costs before the browser draws.

    python bench/page_reruns.py [--rounds 3]

Runs the dashboard's pages with Streamlit's AppTest in this process on the shipped
model (no browser, no network), after a first run that loads and warms the model:

- Predict with 4 Br35H test slices it has not seen in this process (as an upload of new
  files does): prediction, Grad-CAM, nearest images, drawing;
- Label review rerun on the shipped CV's audit (as saving a decision does).

Prints each round and the median. The ``ui`` package is imported first, as every page
does, so Keras stays out of the process (ui/__init__.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import layout  # noqa: E402

def app_on(page: str):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=300)
    at.session_state["model_choice"] = "Shipped model (checkpoints/)"
    at.run()
    at.switch_page(f"app_pages/{page}.py")
    return at


def timed(at) -> float:
    started = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - started
    if at.exception:
        raise RuntimeError([e.value for e in at.exception])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import ui  # noqa: F401  - before TensorFlow, as the pages do
    from engine.data.manifest import read_manifest, rows_for_split
    test = rows_for_split(read_manifest(ROOT / "checkpoints" / layout.MANIFEST), "test")
    results = {"Predict, 4 new slices": [], "Label review, rerun": []}
    predict = app_on("predict")
    predict.session_state["samples"] = [(r.path, r.label) for r in test[:4]]
    print(f"first Predict run (model loaded and warmed): {timed(predict):.2f} s")
    review = app_on("label_review")
    print(f"first Label review run (heat maps computed): {timed(review):.2f} s")
    for number in range(args.rounds):
        start = 4 * (number + 1)
        predict.session_state["samples"] = [(r.path, r.label) for r in test[start:start + 4]]
        results["Predict, 4 new slices"].append(timed(predict))
        results["Label review, rerun"].append(timed(review))
        print(f"round {number + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in results.items()))
    for key, values in results.items():
        print(f"{key}: median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})")


if __name__ == "__main__":
    main()
