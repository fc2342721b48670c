"""Do an input's pixels look like the slices the model learnt from? A second
out-of-distribution flag, beside the feature-space one (engine.serving.ood).

Why a second one: the network's pooled features are trained to tell tumour from no
tumour, not to tell a slice from a photograph, and a grey photograph of a flower lands
among the training slices there (bench/ood_margin.py: 0.92 and 0.97, under the flag's
1.0). What any slice of the training set shares is visible in its pixels without the
network: a body on a dark surround (the share of dark pixels and the brightness ring by
ring from the centre), smooth tissue with a few sharp edges (the histogram of gradient
magnitudes), and MR or CT texture (local binary patterns at two scales, Ojala et al.,
TPAMI 2002). The descriptor below measures these on a grey thumbnail scaled to its own
99.5th percentile, so exposure and windowing do not matter.

The flag is the same statistics as the feature flag (engine.serving.ood): a Gaussian
with a Ledoit-Wolf covariance per ensemble member, fitted on the descriptors of the
images that member trained on, threshold at the 99th percentile of the images it never
trained on; the score is the median over members of distance / threshold, > 1 flagged.
It is fitted on the model's own training data, so a model trained on a user's CT
learns what CT looks like. Stored beside model.json as ``appearance.npz``. Pure NumPy
and Pillow (no TensorFlow), so the statistics can be fitted and read anywhere.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from engine import layout
from engine.data.imageio import ImageDecodeError, decode_path, decode_workers
from engine.serving.ood import FeatureGaussians, fit

_SMALL = 64  # histogram, rings and gradients: the layout, not the detail
_TEXTURE = 128  # local binary patterns: fine enough for texture, cheap enough per image
_RINGS = 8
_yy, _xx = np.mgrid[:_SMALL, :_SMALL]
_RADIUS = np.hypot(_yy - (_SMALL - 1) / 2, _xx - (_SMALL - 1) / 2) / (_SMALL / 2)
_RING_OF = np.minimum((_RADIUS * 6).astype(int), _RINGS - 1)  # the last ring holds the corners
DIMENSIONS = 53  # 12 + 8 + 8 + 5 + 10 + 10
_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def _thumbnail(picture: Image.Image, side: int) -> np.ndarray:
    """[side, side] grey, 0-255."""
    return np.asarray(picture.resize((side, side), Image.BILINEAR), np.float32)


def _scaled(grey: np.ndarray) -> np.ndarray:
    """Grey in [0, 1], scaled to the picture's own 99.5th percentile."""
    return np.clip(grey / max(float(np.percentile(grey, 99.5)), 1.0), 0.0, 1.0)


def _uniform_patterns(grey: np.ndarray, step: int) -> np.ndarray:
    """Share of each rotation-invariant uniform local binary pattern (0-8 brighter
    neighbours in one arc) and of all non-uniform ones, 8 neighbours at ``step`` pixels;
    a neighbour counts as brighter above the centre + 0.02 so flat noise is not texture."""
    height, width = grey.shape
    centre = grey[step:height - step, step:width - step]
    brighter = np.stack([grey[step + dy * step:height - step + dy * step, step + dx * step:width - step + dx * step]
                         >= centre + 0.02 for dy, dx in _NEIGHBOURS])
    transitions = (brighter != np.roll(brighter, 1, axis=0)).sum(axis=0)
    pattern = np.where(transitions <= 2, brighter.sum(axis=0), 9)
    return np.bincount(pattern.ravel(), minlength=10) / pattern.size


def descriptor(rgb: np.ndarray) -> np.ndarray:
    """The 53 numbers the appearance flag compares, for one decoded RGB uint8 image.
    Shares enter as square roots (a variance-stabilising transform for proportions)."""
    picture = Image.fromarray(np.ascontiguousarray(rgb)).convert("L")
    raw = _thumbnail(picture, _SMALL)
    small = _scaled(raw)
    histogram = np.histogram(small, bins=12, range=(0.0, 1.0))[0] / small.size
    rings = np.array([small[_RING_OF == ring].mean() for ring in range(_RINGS)])
    gy, gx = np.gradient(small)
    gradients = np.histogram(np.hypot(gx, gy), bins=8, range=(0.0, 0.4))[0] / small.size
    laplacian = np.abs(4 * small[1:-1, 1:-1] - small[:-2, 1:-1] - small[2:, 1:-1]
                       - small[1:-1, :-2] - small[1:-1, 2:]).mean()
    asymmetry = np.abs(small - small[:, ::-1]).mean()  # a head is roughly left-right symmetric
    texture = _scaled(_thumbnail(picture, _TEXTURE))
    return np.concatenate([np.sqrt(histogram), rings, np.sqrt(gradients),
                           [laplacian, asymmetry, small.mean(), small.std(), raw.mean() / 255.0],
                           np.sqrt(_uniform_patterns(texture, 1)), np.sqrt(_uniform_patterns(texture, 3))])


def describe_paths(paths: list[str], threads: int | None = None) -> np.ndarray:
    """[N, D] descriptors of image files (a DICOM or NIfTI slice by its slice address);
    an unreadable file gets NaNs, which the fit leaves out."""

    def one(path: str) -> np.ndarray:
        try:
            return descriptor(decode_path(path))
        except (ImageDecodeError, OSError):
            return np.full(DIMENSIONS, np.nan)
    with ThreadPoolExecutor(decode_workers(threads)) as pool:
        return np.array(list(pool.map(one, paths))).reshape(len(paths), DIMENSIONS)


def fit_appearance(descriptors: np.ndarray, held_out_member: np.ndarray, members: int) -> FeatureGaussians:
    """The flag's statistics: ``descriptors`` [N, D] of in-distribution images,
    ``held_out_member`` [N] the member that did not train on each image (-1: all did).
    Each of the ``members`` Gaussians is fitted and calibrated like the feature flag's
    (engine.serving.ood.fit), on the same images."""
    descriptors = np.asarray(descriptors, np.float64)
    keep = np.isfinite(descriptors).all(axis=1)
    stacked = np.repeat(descriptors[keep][:, None, :], members, axis=1)
    return fit(stacked, np.asarray(held_out_member)[keep])


def score(gaussians: FeatureGaussians, rgb: np.ndarray) -> float:
    """The appearance score of one image (> 1: its pixels are unlike the training slices')."""
    members = gaussians.means.shape[0]
    return float(gaussians.scores(np.repeat(descriptor(rgb)[None, None, :], members, axis=1))[0])


def fit_for_folder(folder: Path, rows, held_out_member, members: int) -> dict:
    """Fit and store ``appearance.npz`` in a model folder from its manifest rows;
    returns the figures a log or summary records."""
    gaussians = fit_appearance(describe_paths([r.path for r in rows]), held_out_member, members)
    gaussians.save(Path(folder) / layout.APPEARANCE)
    return {"appearance_thresholds": gaussians.thresholds.tolist()}


def load(folder: Path) -> FeatureGaussians | None:
    return FeatureGaussians.load(Path(folder) / layout.APPEARANCE)
