"""Steady-state input throughput for each place decoded images can be kept
(``--cache memory|disk|none``), on Br35H's training split, as the training loop reads
it: shuffled, batched, augmented, scaled.

    python bench/cache_throughput.py [--size 128] [--batch 32] [--epochs 3] [--folder DIR]

Each choice runs in its own process (so one's page cache and memory do not help the
next; the disk cache file stays in the OS page cache once read, as on a real machine
with room for it). Per choice: the first epoch (decoding, or building the disk cache),
then the median images/s of the later epochs, and the process's peak RSS. The model
is left out: this is the input path only, the ceiling a training step cannot pass.
Prints one line per choice, then ``cache <kind>: <images/s> images/s steady`` lines.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one(kind: str, size: int, batch: int, epochs: int, folder: str) -> dict:
    from engine.config import shipped_config
    from engine.data import pipeline
    from engine.data.manifest import build_manifest, rows_for_training
    rows, _ = build_manifest(None, (0.7, 0.15, 0.15), 42, 4)
    train = rows_for_training(rows, "train")
    config = shipped_config(image_size=size, batch_size=batch)
    started = time.perf_counter()
    source = pipeline.ImageSource([r.path for r in train], [r.label for r in train], size, kind,
                                  cache_dir=folder)
    setup = time.perf_counter() - started
    seconds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        count = 0
        for images, *_ in pipeline.train_dataset(source, len(train), batch, config, seed=epoch):
            count += int(images.shape[0])
        seconds.append(time.perf_counter() - started)
    steady = statistics.median(count / s for s in seconds[1:])
    return {"cache": kind, "images": len(train), "setup_s": setup, "first_epoch_s": seconds[0],
            "steady_images_per_s": steady,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--folder", default="", help="disk cache folder (default: a fresh temporary one)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.size, args.batch, args.epochs, args.folder)))
        return 0
    folder = args.folder or tempfile.mkdtemp(prefix="decoded-cache-")
    results = []
    for kind in ("memory", "disk", "none"):
        out = subprocess.run([sys.executable, __file__, "--one", kind, "--size", str(args.size), "--batch",
                              str(args.batch), "--epochs", str(args.epochs), "--folder", folder],
                             capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"{kind:6s}: {result['images']} images at {args.size} px; set-up {result['setup_s']:.1f} s, "
              f"first epoch {result['first_epoch_s']:.1f} s, steady {result['steady_images_per_s']:.0f} "
              f"images/s (median of epochs 2-{args.epochs}), peak RSS {result['peak_rss_gb']:.2f} GB",
              flush=True)
    for result in results:
        print(f"cache {result['cache']}: {result['steady_images_per_s']:.0f} images/s steady")
    return 0


if __name__ == "__main__":
    sys.exit(main())
