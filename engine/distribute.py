"""Choosing the tf.distribute strategy from the ``devices`` setting.

"auto": MirroredStrategy over all visible GPUs when there are several, else the
default strategy on the one device. "cpu": the CPU only. "gpu": every GPU, mirrored.
"N": the first N GPUs. "cpu:N": the CPU split into N logical devices and mirrored,
which is how distribution is tested without GPUs.
"""

from __future__ import annotations

import tensorflow as tf


def split_cpu(count: int) -> list[str]:
    """Split the physical CPU into ``count`` logical devices (only possible before
    TensorFlow initialises its devices; afterwards the existing split is kept)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        pass  # already initialised
    logical = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(logical) < count:
        raise ValueError(
            f"devices=cpu:{count} needs the CPU split before TensorFlow starts; "
            f"only {len(logical)} logical CPU devices exist in this process")
    return logical[:count]


def make_strategy(devices: str = "auto") -> tf.distribute.Strategy:
    spec = (devices or "auto").strip().lower()
    if spec.startswith("cpu:"):
        count = int(spec.split(":", 1)[1])
        if count < 1:
            raise ValueError("cpu:N needs N >= 1")
        names = split_cpu(count)
        if count == 1:
            return tf.distribute.OneDeviceStrategy(names[0])
        return tf.distribute.MirroredStrategy(names, cross_device_ops=tf.distribute.ReductionToOneDevice())
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if spec == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if spec == "auto":
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy(gpus)
        return tf.distribute.get_strategy()
    if spec == "gpu":
        if not gpus:
            raise ValueError("devices=gpu but TensorFlow sees no GPU")
        return tf.distribute.MirroredStrategy(gpus) if len(gpus) > 1 else tf.distribute.OneDeviceStrategy(gpus[0])
    if spec.isdigit():
        count = int(spec)
        if count < 1 or count > len(gpus):
            raise ValueError(f"devices={count} but TensorFlow sees {len(gpus)} GPU(s)")
        chosen = gpus[:count]
        return tf.distribute.MirroredStrategy(chosen) if count > 1 else tf.distribute.OneDeviceStrategy(chosen[0])
    raise ValueError(f"unknown devices setting {devices!r}: use auto, cpu, gpu, a GPU count, or cpu:N")


def device_names(strategy: tf.distribute.Strategy) -> list[str]:
    try:
        return list(strategy.extended.worker_devices)
    except (RuntimeError, AttributeError):  # the default strategy has no device list
        gpus = tf.config.list_logical_devices("GPU")
        return [(gpus or tf.config.list_logical_devices("CPU"))[0].name]
