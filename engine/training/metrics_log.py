"""One writer for a run's metrics: each record goes to metrics.jsonl (what the
dashboard and every other reader use) and, as scalars, to TensorBoard's event files
under ``tb/``, so the two can never disagree."""

from __future__ import annotations

from pathlib import Path

from engine.evaluation import metric_names as names
from engine import layout, runs

# Record fields that index a record rather than measure something.
_NOT_SCALARS = {"kind", "epoch", "step", "time", "best"}


class MetricsLog:
    def __init__(self, folder: Path):
        import tensorflow as tf
        self._tf = tf
        self.path = Path(folder) / layout.METRICS
        self._writer = tf.summary.create_file_writer(str(Path(folder) / "tb"))

    def write(self, record: dict, *, flush: bool = False) -> None:
        """Append ``record`` (which has a "step") and log its numeric fields. Epoch
        records keep their names (val/accuracy, train/loss: the epoch mean); the
        per-step records' are prefixed with their kind (step/train/loss: one batch),
        as both can fall on the same step."""
        runs.append_jsonl(self.path, record)
        prefix = "" if record.get("kind") == names.KIND_EPOCH else f"{record.get('kind', 'step')}/"
        with self._writer.as_default(step=int(record["step"])):
            for key, value in record.items():
                if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                self._tf.summary.scalar(prefix + key, value)
        if flush:
            self._writer.flush()
