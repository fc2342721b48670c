"""Is this picture a scanner slice at all? Checks on the pixels, before any feature.

The feature-space flag (engine.serving.ood) asks whether an input looks like the slices
a model learnt from; it is weak on pictures far from anything it saw (bench/ood_margin.py:
a colour photograph of a flower scored 0.82 there, under the flag's 1.0). These checks
ask what any CT or MRI slice is, whatever the data set: grey (a scanner writes one value
per pixel; a colour picture is a photograph, a chart or a rendered overlay), not a flat
field, and not mostly bright (a slice is a body on a dark background). Thresholds are
calibrated on Br35H's 3,000 slices, where none trips (README, "Out-of-distribution
flag"), and on the pydicom and nibabel sample scans. Pure NumPy and Pillow.

The fixed checks say what no slice is; a model's own appearance statistics
(engine.serving.appearance, fitted on its training images) say what its slices are: a
grey photograph passes the three fixed checks and the feature flag, and trips this one.

Each check gives a score that is > 1 when it trips, on the same scale as the feature
flag, so one number (the largest) says how far an input is from a slice.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine.data.health import BRIGHT_MEAN, NEAR_CONSTANT_STD
from engine.serving.appearance import score as appearance_score

# 95th percentile over pixels of the distance from grey (mean absolute deviation of the
# three channels from their mean, 0-255 scale), on a 128-pixel thumbnail. Br35H: at
# most 11.6 (JPEG chroma noise on a few slices); sklearn's sample photographs 28 and 60.
COLOUR_LIMIT = 16.0
_SIDE = 128


def findings(rgb: np.ndarray, appearance=None) -> list[tuple[str, float]]:
    """[(reason, score > 1)] of every check the picture fails; [] for a plausible slice.
    ``appearance``: a model's fitted pixel statistics (engine.serving.appearance), which
    add the check "do its pixels look like this model's training slices"."""
    small = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((_SIDE, _SIDE), Image.BILINEAR),
                       np.float32)
    found = []
    chroma = float(np.percentile(np.abs(small - small.mean(axis=2, keepdims=True)).mean(axis=2), 95))
    if chroma > COLOUR_LIMIT:
        found.append(("a colour picture (scanner slices are grey)", chroma / COLOUR_LIMIT))
    grey = small.mean(axis=2) / 255.0
    std = float(grey.std())
    if std < NEAR_CONSTANT_STD:
        found.append(("a flat field with no structure", NEAR_CONSTANT_STD / max(std, 1e-3)))
    mean = float(grey.mean())
    if mean > BRIGHT_MEAN:
        found.append(("mostly bright (a slice is a body on a dark background)", mean / BRIGHT_MEAN))
    if appearance is not None:
        score = appearance_score(appearance, rgb)
        if score > 1.0:
            found.append((f"its pixels (dark surround, layout, edges, texture) lie {score:.1f}x beyond the "
                           "99th percentile of unseen training-like images", score))
    return found
