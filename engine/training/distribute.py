"""Choosing the tf.distribute strategy from the ``devices`` setting.

"auto": MirroredStrategy over all visible GPUs when there are several, else the
default strategy on the one device. "cpu": the CPU only. "gpu": every GPU, mirrored.
"N": the first N GPUs. "cpu:N": the CPU split into N logical devices and mirrored,
which is how distribution is tested without GPUs.

Several machines (or processes): when the ``TF_CONFIG`` environment variable names more
than one worker, the strategy is ``MultiWorkerMirroredStrategy`` (each worker mirrors
over its own devices as above, and gradients and batch-norm statistics are all-reduced
across workers with collective ops: AUTO, RING or NCCL). ``python -m engine.launch``
starts such workers on one host; a cluster scheduler sets ``TF_CONFIG`` itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import tensorflow as tf

from engine.config import COLLECTIVES

# A collective that waits longer than this fails the step: a dead or hung worker ends
# the run with an error instead of a hang (MultiWorkerMirroredStrategy also checks
# its peers' health in the background).
COLLECTIVE_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class WorkerRole:
    workers: int  # processes taking part (chief + workers in TF_CONFIG); 1 without it
    task_type: str
    task_index: int
    has_chief: bool = False  # the cluster names a separate "chief" task

    @property
    def is_chief(self) -> bool:
        """The one process that writes the run folder: the "chief" task if the cluster
        has one, else worker 0."""
        return self.task_type == "chief" or (self.task_type == "worker" and self.task_index == 0
                                             and not self.has_chief)


def worker_role(environ=None) -> WorkerRole:
    """This process's place in the cluster, from TF_CONFIG (pure: no TensorFlow)."""
    raw = (environ if environ is not None else os.environ).get("TF_CONFIG", "")
    if not raw:
        return WorkerRole(1, "worker", 0)
    spec = json.loads(raw)
    cluster = spec.get("cluster", {})
    task = spec.get("task", {})
    workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    return WorkerRole(max(workers, 1), task.get("type", "worker"), int(task.get("index", 0)),
                      has_chief=bool(cluster.get("chief")))


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


def make_strategy(devices: str = "auto", collective: str = "auto") -> tf.distribute.Strategy:
    if worker_role().workers > 1:
        return multi_worker_strategy(collective)
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


def multi_worker_strategy(collective: str = "auto") -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy over the TF_CONFIG cluster (create it before any
    other TensorFlow op in the process)."""
    if collective not in COLLECTIVES:
        raise ValueError(f"collective must be one of {COLLECTIVES}")
    kinds = tf.distribute.experimental.CommunicationImplementation
    options = tf.distribute.experimental.CommunicationOptions(
        implementation={"auto": kinds.AUTO, "ring": kinds.RING, "nccl": kinds.NCCL}[collective],
        timeout_seconds=COLLECTIVE_TIMEOUT_SECONDS)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
