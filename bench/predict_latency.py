"""Latency of one prediction with its Grad-CAM map, model already loaded, as the
Predict page does it (decode, resize, forward, gradient, upsample). Prints the median
and the 90th percentile over repeated runs.

    python bench/predict_latency.py                    # the shipped model, a Br35H image
    python bench/predict_latency.py --model runs/<id> --image scan.png --repeats 50
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="")
    parser.add_argument("--image", default="")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    from engine.serving.inference import load_model, predict_files
    from engine.data.sources import default_data_dir
    image = Path(args.image) if args.image else sorted((default_data_dir() / "yes").iterdir())[0]
    data = image.read_bytes()
    started = time.perf_counter()
    model = load_model(args.model or None)
    load_seconds = time.perf_counter() - started
    predict_files(model, [(image.name, data)], explain=True)  # first call traces nothing new, warms caches
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = predict_files(model, [(image.name, data)], explain=True)[0]
        times.append(1000 * (time.perf_counter() - start))
    times.sort()
    print(f"model {model.directory} ({model.image_size} px), image {image.name}, {args.repeats} runs")
    print(f"load {load_seconds:.2f} s; predict + Grad-CAM: median {statistics.median(times):.1f} ms, "
          f"p90 {times[int(0.9 * (len(times) - 1))]:.1f} ms, min {times[0]:.1f} ms; "
          f"probability {result.probability:.4f}")


if __name__ == "__main__":
    main()
