"""What the shortcut audit's boosted trees cost in a process that has run TensorFlow, on
scikit-learn's default OpenMP threads and on one (engine.evaluation.shortcuts.cue_model
now runs on one).

    python bench/cue_model_threads.py [--sizes 132 3000] [--cues 20]

Every training run and CV writes the audit in the process that trained, after
TensorFlow's thread pools have run; scikit-learn's OpenMP threads then compete with
them. Prints seconds per cue model (5 grouped folds plus importance) for each size, with
the default threads and with one, and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[132, 3000])
    parser.add_argument("--cues", type=int, default=20)
    args = parser.parse_args(argv)
    import tensorflow as tf
    from threadpoolctl import threadpool_info
    from engine.evaluation import shortcuts
    warm = tf.random.normal([256, 256])
    for _ in range(50):  # TensorFlow's pools have run, as after training
        warm = tf.nn.relu(tf.matmul(warm, warm) / 256.0)
    print("thread pools:", [(p["internal_api"], p["num_threads"]) for p in threadpool_info()])
    rng = np.random.default_rng(0)
    print("| images | default threads s | one thread s | ratio |\n|---|---|---|---|")
    for n in args.sizes:
        matrix = rng.normal(size=(n, args.cues))
        labels = (matrix[:, 0] + rng.normal(size=n) > 0).astype(int)
        folds, categorical = np.arange(n) % 5, np.zeros(args.cues, bool)
        started = time.perf_counter()
        shortcuts._cue_model(matrix, categorical, labels, folds, seed=0, importance_repeats=5)
        default = time.perf_counter() - started
        started = time.perf_counter()
        shortcuts.cue_model(matrix, categorical, labels, folds)
        one = time.perf_counter() - started
        print(f"| {n:,} | {default:.2f} | {one:.2f} | {default / one:.1f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
