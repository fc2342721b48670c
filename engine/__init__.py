"""Brain-tumor classification engine: data, TF Core ResNet, training loop, run folders.

Modules that the UI imports to list and read runs (``engine.runs``, ``engine.config``,
``engine.evaluation.metric_names``) never import TensorFlow, so dashboard pages stay fast.
"""

import os as _os

# TensorFlow's C++ start-up chatter (oneDNN notes, CPU feature lines) hides the
# progress a user is waiting for; warnings and errors still show.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
