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
# Calibrated on Br35H (README, "Duplicates"). Head view: the most similar pair of slices
# that carry different labels (different patients) correlates at 0.868, the strongly
# re-contrasted and re-cropped copy yes/y1248 - yes/y52 at 0.923. Whole-frame view (mostly
# background, so higher for everything): different labels up to 0.920, the sharpened and
# re-contrasted copy no/no223 - no/no290 at 0.961; threshold 0.885 + 0.065 = 0.95.
MIN_CORRELATION = 0.885
WHOLE_FRAME_MARGIN = 0.065
MIN_HEAD_SIDE = 0.4  # share of the frame's height and width a head box must span
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


def _otsu_level(gray: np.ndarray) -> int:
    """Otsu's threshold of a uint8 image: the level that best separates two intensity
    classes (here head and background). It moves with the intensities under any
    contrast or brightness change, where a fixed share of the peak does not: a lifted
    grey background would otherwise count as head."""
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    share = hist / hist.sum()
    below = np.cumsum(share)
    mean_below = np.cumsum(share * np.arange(256))
    between = (mean_below[-1] * below - mean_below) ** 2 / np.maximum(below * (1 - below), 1e-12)
    return int(np.argmax(between))


def _head_rows_cols(gray: np.ndarray, min_share: float = 0.02) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the rows and columns with at least ``min_share``
    of their pixels above Otsu's level; the whole image when that finds nothing."""
    bright = gray > _otsu_level(gray)
    rows = np.nonzero(bright.mean(axis=1) >= min_share)[0]
    cols = np.nonzero(bright.mean(axis=0) >= min_share)[0]
    height, width = gray.shape
    if len(rows) < 2 or len(cols) < 2:
        return 0, height, 0, width
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    # A head fills 40 to 100% of a slice's sides; a smaller box is a bright detail (a
    # lesion on a dark frame, a logo), and every such crop would look alike.
    if (bottom - top) < MIN_HEAD_SIDE * height or (right - left) < MIN_HEAD_SIDE * width:
        return 0, height, 0, width
    return top, bottom, left, right


def _equalised_thumbnail(gray: np.ndarray) -> np.ndarray:
    """Each intensity replaced by its rank (the histogram-equalising CDF, ties sharing
    a value), shrunk to 64x64 by box averaging, centred and scaled to unit length."""
    values, inverse, counts = np.unique(gray, return_inverse=True, return_counts=True)
    cdf = (np.cumsum(counts) - counts / 2) / gray.size
    equalised = Image.fromarray((cdf[inverse].reshape(gray.shape) * 255).astype(np.uint8))
    small = np.asarray(equalised.resize((DESCRIPTOR_SIDE, DESCRIPTOR_SIDE), Image.BOX), np.float32)
    small = small.ravel() - small.mean()
    norm = float(np.linalg.norm(small))
    return (small / norm if norm > 0 else small).astype(np.float16)


def contrast_descriptor(rgb: np.ndarray) -> np.ndarray:
    """The contrast-invariant views of a slice, shape (2, 4096) float16 (16 KB): the
    equalised thumbnail of the head's bounding box (found with Otsu's level, so the box
    does not move with contrast) and of the whole frame. Copies that were re-cropped
    match on the first, copies whose background fooled the box match on the second.
    The dot product of two views is their Pearson correlation."""
    gray = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("L"))
    top, bottom, left, right = _head_rows_cols(gray)
    return np.stack([_equalised_thumbnail(gray[top:bottom, left:right]), _equalised_thumbnail(gray)])


def _mirrored(views: np.ndarray) -> np.ndarray:
    side = DESCRIPTOR_SIDE
    return views.reshape(-1, side, side)[:, :, ::-1].reshape(len(views), side * side)


def correlations(descriptors: np.ndarray, rows: slice) -> np.ndarray:
    """For the images in ``rows`` against all: the correlation of the head views and of
    the whole-frame views, each the larger of direct and mirrored, as (2, rows, n)."""
    out = []
    for view in (0, 1):
        matrix = np.asarray(descriptors[:, view], np.float32)
        block = matrix[rows]
        out.append(np.maximum(block @ matrix.T, block @ _mirrored(matrix).T))
    return np.stack(out)


def correlated_pairs(descriptors: np.ndarray, min_correlation: float = MIN_CORRELATION,
                     chunk: int = 512) -> list[tuple[int, int]]:
    """All pairs (i < j) of ``contrast_descriptor``s whose head views correlate at least
    ``min_correlation``, or whose whole-frame views correlate at least
    ``min_correlation + WHOLE_FRAME_MARGIN`` (a whole frame is mostly background, so
    different slices correlate higher there), directly or mirrored. Exact, in blocks:
    time grows with n^2 (3,000 images: a few seconds), memory with n (chunk x n)."""
    descriptors = np.asarray(descriptors)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(descriptors), chunk):
        head, whole = correlations(descriptors, slice(start, start + chunk))
        similar = (head >= min_correlation) | (whole >= min_correlation + WHOLE_FRAME_MARGIN)
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
