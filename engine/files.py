"""Writing files that another process may read at any moment (the dashboard polls run
folders while the engine writes them): every such file is written to a temporary name
beside it, flushed to disk, then renamed over the target, so a reader sees the old
file or the new one and never half of one. One helper, so no caller forgets a step.
No TensorFlow, no engine imports: every stage and the UI may use it.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs):
    """``open()`` for writing that publishes the file only when the block ends without
    an exception (then fsync and rename); on an exception the temporary file is
    removed and the old file, if any, is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if "b" not in mode:
        kwargs.setdefault("newline", "")
    try:
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: str | os.PathLike, payload) -> None:
    """JSON through ``atomic_open`` (sorted keys, indented, anything else as str)."""
    with atomic_open(path) as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)
