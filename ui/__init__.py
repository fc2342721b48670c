"""Dashboard helpers: shared sidebar and cached loaders (common), plotly figures
(charts). Pages import these and the engine's small API, never training internals.

Keras stays out of the dashboard process. TensorFlow imports Keras 3 eagerly when it is
installed (it is, for the Keras reference benchmarks), and Streamlit then calls
``keras.backend.clear_session()`` after every script run: that empties TensorFlow's
kernel cache, so the next Grad-CAM call re-creates every kernel (0.51 s against 0.018 s
for one slice, measured on the shipped ensemble), and forces a full garbage collection
(0.24 s), on every rerun of every page. The engine never uses Keras; with
TF_USE_LEGACY_KERAS set, TensorFlow looks for the separate tf_keras package instead,
which the dashboard does not install, and Keras is not imported. Set before TensorFlow
is imported (every page imports this package first); a value the user set is kept.
"""

import os as _os
import sys as _sys

if "tensorflow" not in _sys.modules:
    _os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
