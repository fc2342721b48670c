"""Per-image loss weights that count each duplicate group, not each file.

Br35H is mostly copies of about a thousand slices (re-encoded, resized,
contrast-changed, mirrored): one slice has 40 copies, another none. With every file
weighted 1, a slice counts in the loss as often as it was copied, so training fits
the much-copied slices and the singletons barely matter. ``group_weights`` gives
each image ``1 / n**power`` (``n`` = files of its duplicate group in the training
part), normalised to a mean of 1 over the training part so the loss keeps its scale
and the learning rate its meaning. ``power`` 1 counts every group once; 0.5 is
halfway; 0 turns it off. On Br35H's five folds power 1 did not help (94.0% against
95.1%, model card): the held-out images are counted per file too. It is here for data
whose copies are not spread like the evaluation's.
"""

from __future__ import annotations

from collections import Counter

import numpy as np


def group_weights(groups, power: float) -> np.ndarray:
    """float32 weight per image (same order as ``groups``), mean 1."""
    groups = list(groups)
    if not groups:
        return np.zeros(0, np.float32)
    if power < 0:
        raise ValueError("group weighting power must be at least 0")
    sizes = Counter(groups)
    raw = np.array([sizes[g] ** -float(power) for g in groups], np.float64)
    return (raw / raw.mean()).astype(np.float32)
