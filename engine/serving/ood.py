"""Out-of-distribution flag: does an input look like the brain slices the model was
trained on? Mahalanobis distance in the model's pooled feature space (Lee et al.,
NeurIPS 2018), with a Ledoit-Wolf covariance (a few thousand images, a few hundred
dimensions), one Gaussian per ensemble member.

Each member's Gaussian is fitted on the features of the images that member trained on,
and its threshold is the 99th percentile of the distances of images it never trained
on (its held-out fold, or a run's validation split), so at least 99% of unseen
in-distribution images pass. An input's score is the median over members of distance /
threshold; it is flagged when the score exceeds 1. Pure NumPy and scikit-learn; the
statistics are stored beside model.json as ``ood.npz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import layout

PASS_SHARE = 0.99


@dataclass
class FeatureGaussians:
    means: np.ndarray  # [K, C]
    precisions: np.ndarray  # [K, C, C]
    thresholds: np.ndarray  # [K]

    def distances(self, features: np.ndarray) -> np.ndarray:
        """[N, K, C] member features -> [N, K] Mahalanobis distances."""
        features = np.asarray(features, np.float64)
        centred = features - self.means[None]
        squared = np.einsum("nkc,kcd,nkd->nk", centred, self.precisions, centred)
        return np.sqrt(np.maximum(squared, 0.0))

    def scores(self, features: np.ndarray) -> np.ndarray:
        """[N] median over members of distance / threshold; > 1 means out of distribution."""
        return np.median(self.distances(features) / self.thresholds[None], axis=1)

    def flags(self, features: np.ndarray) -> np.ndarray:
        return self.scores(features) > 1.0

    def save(self, path: str | Path) -> None:
        tmp = Path(path).with_suffix(".tmp.npz")
        np.savez_compressed(tmp, means=self.means.astype(np.float32),
                            precisions=self.precisions.astype(np.float32),
                            thresholds=self.thresholds.astype(np.float64))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureGaussians | None":
        path = Path(path)
        if not path.exists():
            return None
        with np.load(path) as data:
            return cls(data["means"].astype(np.float64), data["precisions"].astype(np.float64),
                       data["thresholds"].astype(np.float64))


def fit_member(train_features: np.ndarray, held_out_features: np.ndarray):
    """(mean, precision, threshold) of one member: Gaussian on its training images'
    features, threshold at the PASS_SHARE quantile of its held-out images' distances."""
    from sklearn.covariance import LedoitWolf
    estimator = LedoitWolf().fit(np.asarray(train_features, np.float64))
    mean, precision = estimator.location_, estimator.precision_
    centred = np.asarray(held_out_features, np.float64) - mean
    distances = np.sqrt(np.maximum(np.einsum("nc,cd,nd->n", centred, precision, centred), 0.0))
    return mean, precision, float(np.quantile(distances, PASS_SHARE))


def fit(features: np.ndarray, held_out_member: np.ndarray) -> FeatureGaussians:
    """``features`` [N, K, C] of N in-distribution images; ``held_out_member`` [N]: the
    member that did not train on each image (its fold), or -1 for an image every member
    trained on. Member k is fitted on the images it trained on and calibrated on its own
    held-out images."""
    features = np.asarray(features, np.float64)
    held_out_member = np.asarray(held_out_member)
    means, precisions, thresholds = [], [], []
    for k in range(features.shape[1]):
        mean, precision, threshold = fit_member(features[held_out_member != k, k],
                                                features[held_out_member == k, k])
        means.append(mean)
        precisions.append(precision)
        thresholds.append(threshold)
    return FeatureGaussians(np.stack(means), np.stack(precisions), np.array(thresholds))
