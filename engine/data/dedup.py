"""Duplicate detection: exact duplicates (same decoded pixels) and near-duplicates
(64-bit DCT perceptual hash within a Hamming distance, also against the mirrored
image), grouped transitively so a split can keep every group on one side.

Why pHash and not a difference hash: on Br35H a difference hash matches slices of
different patients across classes; the DCT hash keeps the low-frequency layout of the
slice, which survives re-encoding, resizing and contrast changes but differs between
patients. Pure NumPy.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

HASH_SIZE = 8
_DCT_SIZE = 32


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


_DCT = _dct_matrix(_DCT_SIZE)
_BIT_WEIGHTS = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


def pixel_digest(rgb: np.ndarray) -> str:
    """SHA-256 of the decoded pixels and their shape: equal for exact duplicates
    even when the files differ (PNG vs. re-saved PNG, different metadata)."""
    digest = hashlib.sha256(str(rgb.shape).encode())
    digest.update(np.ascontiguousarray(rgb).tobytes())
    return digest.hexdigest()


def perceptual_hashes(rgb: np.ndarray) -> tuple[int, int]:
    """(pHash of the image, pHash of its left-right mirror) as unsigned 64-bit ints."""
    gray = Image.fromarray(rgb).convert("L").resize((_DCT_SIZE, _DCT_SIZE), Image.LANCZOS)
    pixels = np.asarray(gray, dtype=np.float64)
    return _phash_of(pixels), _phash_of(pixels[:, ::-1])


def _phash_of(pixels: np.ndarray) -> int:
    coefficients = _DCT @ pixels @ _DCT.T
    low = coefficients[:HASH_SIZE, :HASH_SIZE].ravel()
    bits = (low > np.median(low)).astype(np.uint64)
    return int((bits * _BIT_WEIGHTS).sum())


def _popcount(values: np.ndarray) -> np.ndarray:
    return np.bitwise_count(values)


class _UnionFind:
    def __init__(self, size: int):
        self.parent = np.arange(size)

    def find(self, item: int) -> int:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


def near_duplicate_pairs(
    hashes: np.ndarray, mirrored: np.ndarray, max_distance: int, chunk: int = 2048
) -> list[tuple[int, int]]:
    """All pairs (i < j) whose hashes are within ``max_distance`` bits, directly or
    with one of them mirrored. O(n^2) in vectorised chunks: 3,000 images take well
    under a second."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    mirrored = np.asarray(mirrored, dtype=np.uint64)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(hashes), chunk):
        block = hashes[start:start + chunk, None]
        direct = _popcount(block ^ hashes[None, :])
        flipped = _popcount(block ^ mirrored[None, :])
        close = np.minimum(direct, flipped) <= max_distance
        rows, cols = np.nonzero(close)
        rows = rows + start
        keep = rows < cols
        pairs.extend(zip(rows[keep].tolist(), cols[keep].tolist()))
    return pairs


def group_duplicates(
    digests: list[str], hashes: list[int], mirrored: list[int], max_distance: int,
    same_source: list[str] | None = None,
) -> np.ndarray:
    """Group ids (0..G-1, ordered by first member) such that exact and near
    duplicates share a group, transitively. Images with the same non-empty
    ``same_source`` key (one patient's DICOM slices, one NIfTI volume's slices) share
    a group too, so a split can never put one patient on both sides."""
    count = len(digests)
    union = _UnionFind(count)
    for keys in (digests, same_source or []):
        first_with_key: dict[str, int] = {}
        for index, key in enumerate(keys):
            if not key:
                continue
            if key in first_with_key:
                union.union(first_with_key[key], index)
            else:
                first_with_key[key] = index
    if max_distance >= 0 and count:
        for a, b in near_duplicate_pairs(np.array(hashes, dtype=np.uint64),
                                         np.array(mirrored, dtype=np.uint64), max_distance):
            union.union(a, b)
    roots = np.array([union.find(i) for i in range(count)], dtype=np.int64)
    _, group_ids = np.unique(roots, return_inverse=True)
    return group_ids.astype(np.int64)
