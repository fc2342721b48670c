"""Test instrument, loaded by Python at start-up when this folder is on PYTHONPATH:
with DECODE_LOG set, every image the tf.data pipeline decodes is appended to that file
with the process's worker index and the time. tests/test_multiworker.py uses it to count
which worker decoded what; nothing in the engine knows about it."""

import os

if os.environ.get("DECODE_LOG"):
    import json
    import time

    import engine.data.pipeline as _pipeline

    _original = _pipeline.decode_path
    _task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})

    def _counting_decode(path):
        with open(os.environ["DECODE_LOG"], "a") as handle:
            handle.write(json.dumps({"worker": _task.get("index", -1), "pid": os.getpid(),
                                     "path": str(path), "time": time.time()}) + "\n")
        return _original(path)

    _pipeline.decode_path = _counting_decode
