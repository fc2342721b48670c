"""Training throughput (images per second) of the engine's compiled custom loop against
Keras ``model.fit`` on the same architecture, batch and input size, in one process on
the same machine. Prints a table and the ratio engine / Keras.

    python bench/train_throughput.py                      # resnet18 and the compact preset, batch 32, 224 px
    python bench/train_throughput.py --steps 30 --presets resnet18
    python bench/train_throughput.py --precisions float32 mixed_bfloat16 mixed_float16 --presets compact

Data are random images held in memory, so decoding is not measured: this is the
training step itself (forward, backward, optimizer update, metrics fetch). The last
line is the first preset's ratio: ``engine/keras resnet18: <ratio>x``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from engine.config import PRECISIONS  # noqa: E402
from engine.model import ResNet, count_parameters, decay_mask  # noqa: E402
from engine.optim import Adam  # noqa: E402
from engine.steps import make_train_step  # noqa: E402

PRESETS = {"resnet18": ("resnet18", 1.0, (256,)), "compact": ("resnet10", 0.5, (128,))}


def dataset(batch: int, size: int, steps: int) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    images = rng.random((batch * 4, size, size, 3), dtype=np.float32)
    labels = (np.arange(batch * 4) % 2).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch).cache().repeat().take(steps)


def engine_rate(preset, width, head, batch, size, steps, warmup,
                precision: str = "float32", fetch_every: int = 10) -> tuple[float, int]:
    """The engine's loop as engine.train runs it: compiled step with the device-side
    epoch metrics, the sums (and the NaN check) fetched every ``fetch_every`` steps."""
    from engine.epoch_metrics import EpochMetrics
    from engine.optim import DynamicLossScale
    strategy = tf.distribute.get_strategy()
    model = ResNet(preset, width, head, precision=precision)
    optimizer = Adam(model.trainable_variables, decay_mask(model), weight_decay=1e-4)
    if precision == "mixed_float16":
        optimizer.loss_scale = DynamicLossScale()
    metrics = EpochMetrics()
    step = make_train_step(strategy, model, optimizer, lambda _: tf.constant(1e-3), metrics=metrics)
    iterator = iter(dataset(batch, size, steps + warmup))
    for _ in range(warmup):
        float(step(next(iterator)))
    metrics.fetch()
    start = time.perf_counter()
    for index in range(1, steps + 1):
        loss = step(next(iterator))
        if index % fetch_every == 0 or index == steps:
            metrics.fetch()  # what the loop reads when it logs
            float(loss)
    return batch * steps / (time.perf_counter() - start), count_parameters(model)


def keras_rate(preset, width, head, batch, size, steps, warmup,
               precision: str = "float32") -> tuple[float, int]:
    import keras
    keras.mixed_precision.set_global_policy(precision)

    from bench.keras_reference import keras_resnet
    model = keras_resnet(preset, width, head, size)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy(threshold=0.0)])
    model.fit(dataset(batch, size, warmup), epochs=1, steps_per_epoch=warmup, verbose=0)
    start = time.perf_counter()
    model.fit(dataset(batch, size, steps), epochs=1, steps_per_epoch=steps, verbose=0)
    return batch * steps / (time.perf_counter() - start), model.count_params() - sum(
        int(np.prod(w.shape)) for w in model.non_trainable_weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="alternating engine/Keras rounds; best kept")
    parser.add_argument("--precisions", nargs="+", default=["float32"],
                        choices=list(PRECISIONS))
    args = parser.parse_args()
    devices = tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("CPU")
    print(f"TensorFlow {tf.__version__}, device {devices[0].name}, {os.cpu_count()} CPU cores, "
          f"batch {args.batch}, {args.image_size}x{args.image_size}, {args.steps} timed steps")
    print(f"{'preset':10} {'precision':15} {'params':>11} {'engine img/s':>13} {'keras img/s':>12} {'ratio':>7}")
    ratios = {}
    for name in args.presets:
        preset, width, head = PRESETS[name]
        for precision in args.precisions:
            engine_best = keras_best = 0.0
            for _ in range(args.repeats):
                rate, params = engine_rate(preset, width, head, args.batch, args.image_size, args.steps,
                                           args.warmup, precision)
                engine_best = max(engine_best, rate)
                k_rate, k_params = keras_rate(preset, width, head, args.batch, args.image_size, args.steps,
                                              args.warmup, precision)
                keras_best = max(keras_best, k_rate)
            assert params == k_params, f"architectures differ: {params} vs {k_params} parameters"
            print(f"{name:10} {precision:15} {params:>11,} {engine_best:>13.1f} {keras_best:>12.1f} "
                  f"{engine_best / keras_best:>7.2f}", flush=True)
            ratios[(name, precision)] = engine_best / keras_best
    name, precision = next(iter(ratios))
    label = name if precision == "float32" else f"{name} {precision}"
    print(f"engine/keras {label}: {ratios[(name, precision)]:.2f}x")


if __name__ == "__main__":
    main()
