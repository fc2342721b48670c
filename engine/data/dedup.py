"""Duplicate detection, grouped transitively so a split can keep every group on one
side. Three tests, unioned:

- exact duplicates: the same decoded pixels (SHA-256);
- near-duplicates: 64-bit DCT perceptual hash within a Hamming distance, directly or
  against the mirrored image (re-encoded, resized, slightly re-contrasted copies);
- contrast-invariant copies: the correlation of the head's bounding box, histogram-
  equalised and shrunk to 64x64, directly or mirrored, at least ``MIN_CORRELATION``.
  Equalising maps every monotone intensity change (contrast, brightness, gamma) to
  the same image, and cropping to the head removes the re-framing Br35H's copies also
  carry; strongly re-contrasted or re-cropped copies differ by 5 to 12 pHash bits and
  escape the hash test.

Why pHash and not a difference hash: on Br35H a difference hash matches slices of
different patients across classes; the DCT hash keeps the low-frequency layout of the
slice, which survives re-encoding, resizing and contrast changes but differs between
patients. Pure NumPy.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
from PIL import Image

from engine.data.imageio import head_box

HASH_SIZE = 8
_DCT_SIZE = 32
DESCRIPTOR_SIDE = 64
# Calibrated on Br35H (README, "Duplicates"): the most similar pair of slices that carry
# different labels (different patients) correlates at 0.869, the strongly re-contrasted
# and re-cropped copy yes/y1248 - yes/y52 at 0.902; the threshold sits between them.
MIN_CORRELATION = 0.885
log = logging.getLogger(__name__)
# Above this many images the correlation pass (quadratic time) is skipped with a log
# line; the exact and hash tests still run.
MAX_CORRELATION_IMAGES = 30_000


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


def contrast_descriptor(rgb: np.ndarray) -> np.ndarray:
    """The contrast-invariant view of a slice: the head's bounding box in grayscale,
    each intensity replaced by its rank (the histogram-equalising CDF, ties sharing a
    value), shrunk to 64x64 by box averaging, then centred and scaled to unit length,
    as float16 (8 KB an image). The dot product of two descriptors is their Pearson
    correlation."""
    top, bottom, left, right = head_box(rgb)
    gray = np.asarray(Image.fromarray(np.ascontiguousarray(rgb[top:bottom, left:right])).convert("L"))
    values, inverse, counts = np.unique(gray, return_inverse=True, return_counts=True)
    cdf = (np.cumsum(counts) - counts / 2) / gray.size
    equalised = Image.fromarray((cdf[inverse].reshape(gray.shape) * 255).astype(np.uint8))
    small = np.asarray(equalised.resize((DESCRIPTOR_SIDE, DESCRIPTOR_SIDE), Image.BOX), np.float32)
    small = small.ravel() - small.mean()
    norm = float(np.linalg.norm(small))
    return (small / norm if norm > 0 else small).astype(np.float16)


def _mirrored(descriptors: np.ndarray) -> np.ndarray:
    side = DESCRIPTOR_SIDE
    return descriptors.reshape(-1, side, side)[:, :, ::-1].reshape(len(descriptors), side * side)


def correlated_pairs(descriptors: np.ndarray, min_correlation: float = MIN_CORRELATION,
                     chunk: int = 1024) -> list[tuple[int, int]]:
    """All pairs (i < j) of ``contrast_descriptor``s whose correlation, directly or with
    one mirrored, is at least ``min_correlation``. Exact, in blocks: time grows with
    n^2 (3,000 images: about a second), memory with n (one chunk x n block)."""
    matrix = np.asarray(descriptors, np.float32)
    mirrored = _mirrored(matrix)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(matrix), chunk):
        block = matrix[start:start + chunk]
        similar = np.maximum(block @ matrix.T, block @ mirrored.T) >= min_correlation
        rows, cols = np.nonzero(similar)
        rows = rows + start
        keep = rows < cols  # the mirrored product is symmetric: m(a).b == a.m(b)
        pairs.extend(zip(rows[keep].tolist(), cols[keep].tolist()))
    return pairs


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
    with either of them mirrored. O(n^2) in vectorised chunks: 3,000 images take well
    under a second.

    Both orientations are tested: the hash of a mirrored image is not a bit
    permutation of the hash (the median threshold is recomputed), so hash(a) vs.
    mirror(b) and mirror(a) vs. hash(b) can differ by several bits."""
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
        keep = rows != cols
        pairs.extend(zip(np.minimum(rows, cols)[keep].tolist(), np.maximum(rows, cols)[keep].tolist()))
    return sorted(set(pairs))


def group_duplicates(
    digests: list[str], hashes: list[int], mirrored: list[int], max_distance: int,
    same_source: list[str] | None = None, descriptors: np.ndarray | None = None,
    min_correlation: float = MIN_CORRELATION,
) -> np.ndarray:
    """Group ids (0..G-1, ordered by first member) such that exact and near
    duplicates share a group, transitively. Images with the same non-empty
    ``same_source`` key (one patient's DICOM slices, one NIfTI volume's slices) share
    a group too, so a split can never put one patient on both sides. With
    ``descriptors`` (``contrast_descriptor`` of each image) and ``min_correlation`` > 0,
    contrast-invariant copies are merged as well."""
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
    if descriptors is not None and min_correlation > 0 and count > 1:
        if count <= MAX_CORRELATION_IMAGES:
            for a, b in correlated_pairs(descriptors, min_correlation):
                union.union(a, b)
        else:
            log.warning("%d images: the contrast-invariant duplicate test (quadratic) is skipped "
                        "above %d; exact and pHash grouping still apply", count, MAX_CORRELATION_IMAGES)
    roots = np.array([union.find(i) for i in range(count)], dtype=np.int64)
    _, group_ids = np.unique(roots, return_inverse=True)
    return group_ids.astype(np.int64)
