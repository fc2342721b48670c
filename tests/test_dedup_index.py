"""Contrast-invariant copies at scale: the indexed search (faiss HNSW on a random
projection, candidates verified exactly) finds the pairs the exact all-pairs test finds,
on real Br35H slices with planted contrast-changed and mirrored copies."""

import numpy as np
from PIL import Image, ImageOps

from engine.data import dedup
from engine.data.imageio import decode_path
from engine.data.sources import discover


def _contrast_copies(rgb: np.ndarray, rng) -> list[np.ndarray]:
    grey = rgb.astype(np.float32) / 255.0
    gamma = np.clip(grey ** rng.uniform(0.5, 2.0), 0, 1)
    stretched = np.clip((grey - 0.1) * 1.6, 0, 1)
    shifted = np.clip(grey * 0.7 + 0.2, 0, 1)
    mirrored = np.asarray(ImageOps.mirror(Image.fromarray(rgb)))
    return [(v * 255).astype(np.uint8) for v in (gamma, stretched, shifted)] + [mirrored]


def test_indexed_search_finds_the_exact_pairs_and_every_planted_contrast_copy():
    images, _ = discover(None)
    paths = sorted(str(i.path) for i in images)[::25]  # 120 slices spread over both classes
    rng = np.random.default_rng(0)
    originals = [decode_path(p) for p in paths]
    planted = []
    for index in rng.choice(len(originals), 20, replace=False):
        for copy in _contrast_copies(originals[index], rng):
            planted.append((int(index), copy))
    pictures = originals + [copy for _, copy in planted]
    descriptors = np.stack([dedup.contrast_descriptor(p) for p in pictures])
    exact = set(dedup.correlated_pairs(descriptors))
    indexed = set(dedup.indexed_correlated_pairs(descriptors))
    assert indexed == exact  # the same pairs, none extra (every candidate is verified)
    groups = dedup.group_duplicates([str(i) for i in range(len(pictures))], [0] * len(pictures),
                                    [0] * len(pictures), -1, descriptors=descriptors)
    found = sum(groups[len(originals) + n] == groups[original] for n, (original, _) in enumerate(planted))
    assert found >= 0.95 * len(planted), f"{found} of {len(planted)} planted copies grouped with their original"


def test_above_the_exact_limit_the_grouping_uses_the_index(monkeypatch):
    calls = []
    monkeypatch.setattr(dedup, "MAX_CORRELATION_IMAGES", 10)
    original = dedup.indexed_correlated_pairs
    monkeypatch.setattr(dedup, "indexed_correlated_pairs", lambda *a, **k: calls.append(1) or original(*a, **k))
    rng = np.random.default_rng(1)
    pictures = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(22)]
    descriptors = np.stack([dedup.contrast_descriptor(p) for p in pictures])
    groups = dedup.group_duplicates([str(i) for i in range(len(pictures))], [0] * len(pictures), [0] * len(pictures),
                                    -1, descriptors=descriptors)
    assert calls and len(groups) == len(pictures)
