"""Training throughput (images per second) of the engine's compiled custom loop against
Keras ``model.fit`` on the same architecture, batch and input size, in one process on
the same machine. Prints a table and the ratio engine / Keras.

    python bench/train_throughput.py                      # resnet18 and the compact preset, batch 32, 224 px
    python bench/train_throughput.py --steps 30 --presets resnet18
    python bench/train_throughput.py --precisions float32 mixed_bfloat16 mixed_float16 --presets compact
    python bench/train_throughput.py --devices cpu:2 --engine-root ../old-checkout --skip-keras   # before/after

Data are random images held in memory, so decoding is not measured: this is the
training step itself (forward, backward, optimizer update, metrics fetch).

The clock is the same on both sides: only training steps after the warm-up are timed.
The engine times its loop over ``--steps`` steps; Keras runs one ``fit`` of warm-up +
steps batches and a callback times the same steps from the end of the last warm-up
batch to the end of the last one, so building the dataset and ``fit``'s set-up are
outside the span. Engine and Keras alternate for ``--repeats`` rounds (3 by default);
the ratio is printed as the median over rounds with its spread. Beside it, the achieved
training FLOP/s (3 x the forward pass's FLOPs, counted by TensorFlow's profiler, per
image, times images/s) and its share of the CPU's peak, computed as
cores x clock x FLOPs per cycle per core (vector lanes x 2 for a fused multiply-add x FMA
units), with the assumed figures printed. On a GPU Keras compiles with XLA by default
(``jit_compile="auto"``) and the engine does not: ``--keras-jit-compile false`` measures
Keras without it, so the ratio compares loops rather than compilers (GPU figures are not
measured on this project's machines).
The last line is the first preset's ratio: ``engine/keras resnet18: <median>x``.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _engine_root(argv: list[str]) -> Path:
    """``--engine-root DIR`` (another checkout, for before/after figures) must be on the
    path before ``engine`` is first imported."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--engine-root", type=Path, default=ROOT)
    return pre.parse_known_args(argv)[0].engine_root.resolve()


ENGINE_ROOT = _engine_root(sys.argv[1:])
sys.path.insert(0, str(ROOT))  # bench.keras_reference
sys.path.insert(0, str(ENGINE_ROOT))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from engine.config import PRECISIONS  # noqa: E402
from engine.model.resnet import ResNet, count_parameters, decay_mask  # noqa: E402
from engine.training.optim import Adam  # noqa: E402
from engine.training.steps import make_train_step  # noqa: E402

PRESETS = {"resnet18": ("resnet18", 1.0, (256,)), "compact": ("resnet10", 0.5, (128,))}


def dataset(batch: int, size: int, steps: int) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    images = rng.random((batch * 4, size, size, 3), dtype=np.float32)
    labels = (np.arange(batch * 4) % 2).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch).cache().repeat().take(steps)


def engine_rate(strategy, preset, width, head, batch, size, steps, warmup,
                precision: str = "float32", fetch_every: int = 10) -> tuple[float, int]:
    """The engine's loop as engine.train runs it. This checkout: compiled step with the
    device-side epoch metrics, the sums (and the NaN check) fetched every
    ``fetch_every`` steps. An older checkout (``--engine-root``) whose step returns the
    loss and probabilities: both fetched every step, as its loop did."""
    device_metrics = "metrics" in inspect.signature(make_train_step).parameters
    with strategy.scope():
        model = ResNet(preset, width, head, precision=precision)
        optimizer = Adam(model.trainable_variables, decay_mask(model), weight_decay=1e-4)
        if precision == "mixed_float16":
            from engine.training.optim import DynamicLossScale
            optimizer.loss_scale = DynamicLossScale()
        metrics = None
        if device_metrics:
            from engine.training.epoch_metrics import EpochMetrics
            metrics = EpochMetrics()
    extra = {"metrics": metrics} if device_metrics else {}
    step = make_train_step(strategy, model, optimizer, lambda _: tf.constant(1e-3), **extra)
    iterator = iter(strategy.experimental_distribute_dataset(dataset(batch, size, steps + warmup)))

    def run(index: int) -> None:
        out = step(next(iterator))
        if not device_metrics:
            float(out[0])  # the old loop read the loss and probabilities every step
            out[1].numpy()
        elif index % fetch_every == 0 or index == steps:
            metrics.fetch()  # what the loop reads when it logs
            float(out)
    for index in range(1, warmup + 1):
        run(index)
    start = time.perf_counter()
    for index in range(1, steps + 1):
        run(index)
    return batch * steps / (time.perf_counter() - start), count_parameters(model)


KERAS_JIT = ["auto"]  # set from --keras-jit-compile


def keras_rate(strategy, preset, width, head, batch, size, steps, warmup,
               precision: str = "float32") -> tuple[float, int]:
    import keras
    keras.mixed_precision.set_global_policy(precision)

    from bench.keras_reference import keras_resnet
    with strategy.scope():
        model = keras_resnet(preset, width, head, size)
        model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
                      loss=keras.losses.BinaryCrossentropy(from_logits=True),
                      metrics=[keras.metrics.BinaryAccuracy(threshold=0.0)], jit_compile=KERAS_JIT[0])
    stamps = []

    class BatchClock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    model.fit(dataset(batch, size, warmup + steps), epochs=1, steps_per_epoch=warmup + steps, verbose=0,
              callbacks=[BatchClock()])
    # From the end of the last warm-up batch to the end of the last timed one.
    elapsed = stamps[warmup + steps - 1] - stamps[warmup - 1]
    return batch * steps / elapsed, model.count_params() - sum(
        int(np.prod(w.shape)) for w in model.non_trainable_weights)


def forward_flops(preset, width, head, size) -> float:
    """FLOPs of one image's forward pass, counted by TensorFlow's profiler on the
    engine model's graph (a multiply-add counts 2)."""
    model = ResNet(preset, width, head)
    function = tf.function(lambda x: model(x, training=False)[0]).get_concrete_function(
        tf.TensorSpec([1, size, size, 3], tf.float32))
    from tensorflow.python.profiler import model_analyzer, option_builder
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return float(model_analyzer.profile(function.graph, options=options).total_float_ops)


def cpu_peak() -> tuple[float, str]:
    """(peak FLOP/s, the formula with its figures) of this machine's CPU in float32."""
    flags, mhz, model_name = "", 0.0, "?"
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith("flags")), "")
        mhz = max(float(line.split(":", 1)[1]) for line in text.splitlines() if line.startswith("cpu MHz"))
        model_name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    except (OSError, ValueError, StopIteration):
        pass
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fma_units = 2  # two FMA pipes per core on current x86 server cores (an assumption: stated)
    cores = os.cpu_count() or 1
    peak = cores * mhz * 1e6 * lanes * 2 * fma_units
    return peak, (f"{model_name}: {cores} cores x {mhz:.0f} MHz x {lanes} float32 lanes x 2 (FMA) x "
                  f"{fma_units} FMA units = {peak / 1e9:.0f} GFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternating engine/Keras rounds; the median ratio and its spread are printed")
    parser.add_argument("--precisions", nargs="+", default=["float32"],
                        choices=list(PRECISIONS))
    parser.add_argument("--devices", default="auto",
                        help="as engine.train's --devices: auto (one device), cpu:2 (the CPU split into "
                        "two replicas under MirroredStrategy), gpu, ...; Keras runs under the same strategy")
    parser.add_argument("--engine-root", type=Path, default=ROOT,
                        help="measure the engine of another checkout (before/after figures)")
    parser.add_argument("--skip-keras", action="store_true", help="engine only")
    parser.add_argument("--keras-jit-compile", choices=["auto", "true", "false"], default="auto",
                        help="Keras's XLA setting (auto: XLA on a GPU, off on a CPU)")
    args = parser.parse_args()
    KERAS_JIT[0] = {"auto": "auto", "true": True, "false": False}[args.keras_jit_compile]
    from engine.training.distribute import make_strategy
    strategy = make_strategy(args.devices)
    devices = tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("CPU")
    print(f"TensorFlow {tf.__version__}, device {devices[0].name}, {os.cpu_count()} CPU cores, "
          f"{strategy.num_replicas_in_sync} replica(s) ({args.devices}), engine from {ENGINE_ROOT}, "
          f"batch {args.batch}, {args.image_size}x{args.image_size}, {args.steps} timed steps")
    peak, formula = cpu_peak()
    print(f"CPU peak: {formula}")
    print(f"{'preset':10} {'precision':15} {'params':>11} {'engine img/s':>13} {'keras img/s':>12} "
          f"{'ratio (median, min-max)':>24} {'engine TFLOP/s':>15} {'% of peak':>9}")
    ratios = {}
    for name in args.presets:
        preset, width, head = PRESETS[name]
        flops_per_image = 3 * forward_flops(preset, width, head, args.image_size)  # forward + backward
        for precision in args.precisions:
            engine_rates, keras_rates = [], []
            for _ in range(args.repeats):
                rate, params = engine_rate(strategy, preset, width, head, args.batch, args.image_size,
                                           args.steps, args.warmup, precision)
                engine_rates.append(rate)
                if args.skip_keras:
                    continue
                k_rate, k_params = keras_rate(strategy, preset, width, head, args.batch, args.image_size,
                                              args.steps, args.warmup, precision)
                keras_rates.append(k_rate)
                assert params == k_params, f"architectures differ: {params} vs {k_params} parameters"
            engine_median = float(np.median(engine_rates))
            achieved = engine_median * flops_per_image
            share = f"{100 * achieved / peak:>8.1f}%" if peak else "       ?"
            if args.skip_keras:
                print(f"{name:10} {precision:15} {params:>11,} {engine_median:>13.1f} {'':>12} {'':>24} "
                      f"{achieved / 1e12:>15.3f} {share}", flush=True)
                continue
            round_ratios = [e / k for e, k in zip(engine_rates, keras_rates)]
            median = float(np.median(round_ratios))
            keras_median = float(np.median(keras_rates))
            print(f"{name:10} {precision:15} {params:>11,} {engine_median:>13.1f} {keras_median:>12.1f} "
                  f"{median:>9.2f} ({min(round_ratios):.2f}-{max(round_ratios):.2f}){'':>4} "
                  f"{achieved / 1e12:>15.3f} {share}   keras {100 * keras_median * flops_per_image / peak:.1f}% of peak",
                  flush=True)
            ratios[(name, precision)] = median
    if ratios:
        name, precision = next(iter(ratios))
        label = name if precision == "float32" else f"{name} {precision}"
        print(f"engine/keras {label}: {ratios[(name, precision)]:.2f}x (median of {args.repeats} rounds)")


if __name__ == "__main__":
    main()
