"""Two local workers (``python -m engine.launch`` on a config with ``"workers": 2``,
MultiWorkerMirroredStrategy over loopback, each worker reading its own data shard)
against one process holding both shards (``python -m engine.train``, ``data_shards=2``)
on the same cores, the same data, seed and global batch. A correctness check more than a speed claim: on one
2-core machine the two workers share the cores the single process had, and add a
collective all-reduce per step.

    python bench/multiworker.py                      # 64 px, resnet10 x0.25, batch 16, 3 epochs
    python bench/multiworker.py --image-size 128 --epochs 2

Prints each run's wall time and training images per second (from its step records), the
ratio, and the largest difference between the two runs' per-step losses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.evaluation import metric_names as names  # noqa: E402
from engine import layout, runs  # noqa: E402
from engine.config import TrainConfig  # noqa: E402


def write_data(root: Path, per_class: int, size: int) -> Path:
    """Noise slices; the tumor class carries a bright disc at a random place."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for name, tumor in (("yes", True), ("no", False)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            image = rng.normal(90, 25, (size, size))
            if tumor:
                cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
                image[(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 8) ** 2] += 110
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / name / f"{name}_{index}.png")
    return root


def run(command: list[str], folder: Path) -> float:
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    state = runs.read_status(folder).get("state")
    if result.returncode != 0 or state != runs.FINISHED:
        raise SystemExit(f"{' '.join(command[:4])}... ended {state}: {result.stderr[-2000:]}")
    return seconds


def step_losses(folder: Path) -> dict[int, float]:
    return {r["step"]: r[names.TRAIN_LOSS] for r in runs.read_metrics(folder, names.KIND_STEP)}


def images_per_second(folder: Path) -> float:
    rates = [r[names.IMAGES_PER_SECOND] for r in runs.read_metrics(folder, names.KIND_STEP)]
    return float(np.median(rates[1:] or rates))  # the first window includes tracing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch, the same for both")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_data(tmp / "data", args.per_class, args.image_size)
        config = TrainConfig(data_dir=str(data), image_size=args.image_size, preset="resnet10", width=0.25,
                             head_units=[16], batch_size=args.batch_size, epochs=args.epochs,
                             dedup_distance=-1, log_every_steps=1, cache="memory", augment=False,
                             devices="cpu", flip_tta=False)
        # The one process holds both data shards (data_shards=2), so it trains the same
        # global batches the two workers build from their own shards.
        one_file, two_file = tmp / "one.json", tmp / "two.json"
        one_file.write_text(config.replace(data_shards=2).to_json())
        two_file.write_text(config.replace(workers=2).to_json())
        one, two = tmp / "one", tmp / "two"
        one_seconds = run([sys.executable, "-m", "engine.train", "--config", str(one_file), "--run-dir", str(one)], one)
        two_seconds = run([sys.executable, "-m", "engine.launch", "--config", str(two_file), "--run-dir", str(two)], two)
        recorded = json.loads((two / layout.CONFIG).read_text())["environment"]
        one_losses, two_losses = step_losses(one), step_losses(two)
        common = sorted(set(one_losses) & set(two_losses))
        difference = max(abs(one_losses[s] - two_losses[s]) for s in common)
        one_rate, two_rate = images_per_second(one), images_per_second(two)
        print(f"cores: {os.cpu_count()}, {args.image_size} px, resnet10 x0.25, global batch {args.batch_size}, "
              f"{args.epochs} epochs, {2 * args.per_class} images")
        print(f"{'run':22} {'wall s':>8} {'train img/s':>12}")
        print(f"{'1 process':22} {one_seconds:>8.1f} {one_rate:>12.1f}")
        print(f"{'2 workers (' + str(recorded.get('workers')) + ' recorded)':22} {two_seconds:>8.1f} {two_rate:>12.1f}")
        print(f"largest per-step loss difference over {len(common)} steps: {difference:.2e}")
        print(f"2 workers / 1 process: {two_rate / one_rate:.2f}x images/s")


if __name__ == "__main__":
    main()
