"""Duplicate detection, grouped transitively so a split can keep every group on one
side. Three tests, unioned:

- exact duplicates: the same decoded pixels (SHA-256);
- near-duplicates: 64-bit DCT perceptual hash within a Hamming distance, directly or
  against the mirrored image (re-encoded, resized, slightly re-contrasted copies);
- contrast-invariant copies: the correlation of histogram-equalised 64x64 views of the
  head's bounding box (at least ``MIN_CORRELATION``), of the box of the head's large
  parts (the same threshold), or of the whole frame (at least ``MIN_CORRELATION +
  WHOLE_FRAME_MARGIN``), as it is, mirrored, upside down or half turned. Equalising
  maps every monotone intensity change (contrast, brightness, gamma) to the same image,
  and cropping to the head removes the re-framing Br35H's copies also carry; strongly
  re-contrasted or re-cropped copies differ by 5 to 12 pHash bits and escape the hash
  test, and upside-down copies escape it always. The second head box
  ignores what is not head: burnt-in text (orientation letters, scanner settings), a
  bright line along the frame's edge, background noise. Those stretch the first box to
  the frame on one copy and not on the other (Br35H: ``no/no461.jpg`` and its cropped,
  annotated copies ``no/no351.jpg``, ``no/no173.jpg`` correlate at 0.43 on the first box,
  0.97 on the second).

Why pHash and not a difference hash: on Br35H a difference hash matches slices of
different patients across classes; the DCT hash keeps the low-frequency layout of the
slice, which survives re-encoding, resizing and contrast changes but differs between
patients. NumPy, with SciPy for the head's parts and the grouping.
"""

from __future__ import annotations

import hashlib
import itertools
import logging

import numpy as np
from PIL import Image

HASH_SIZE = 8
_DCT_SIZE = 32
DESCRIPTOR_SIDE = 64
# Calibrated on Br35H (README, "Duplicates"). Head view: the most similar pair of slices
# that carry different labels (different patients) correlates at 0.868, the strongly
# re-contrasted and re-cropped copy yes/y1248 - yes/y52 at 0.923. Whole-frame view (mostly
# background, so higher for everything): different labels up to 0.920, the sharpened and
# re-contrasted copy no/no223 - no/no290 at 0.961; threshold 0.885 + 0.065 = 0.95.
# Head-parts view (2026-12-06): different labels up to 0.861, so it shares 0.885.
MIN_CORRELATION = 0.885
WHOLE_FRAME_MARGIN = 0.065
# Each view's threshold above MIN_CORRELATION: head box, whole frame, head parts.
VIEW_MARGINS = (0.0, WHOLE_FRAME_MARGIN, 0.0)
VIEWS = len(VIEW_MARGINS)
# Br35H holds copies turned upside down as well as mirrored (yes/y447.jpg is yes/y511.jpg
# flipped top to bottom: 0.999 against 0.70 as it is), so every flip of the square is tried.
FLIPS = ("left-right", "up-down", "both")
MIRROR_ONLY = ("left-right",)  # the flips tested before 2026-12-06 (``dedup_flips`` off: older splits)
PARTS_SIDE = 256  # the head-parts box is found on the image shrunk to at most this side
PART_SHARE = 0.05  # a bright part counts as head if at least this share of the largest
MIN_HEAD_SIDE = 0.4  # share of the frame's height and width a head box must span
log = logging.getLogger(__name__)
# Up to this many images the correlation pass compares every pair exactly (quadratic
# time, a few seconds for 3,000); above it, an approximate nearest-neighbour index
# proposes candidates that the same exact correlation then verifies
# (``indexed_correlated_pairs``, near-linear).
MAX_CORRELATION_IMAGES = 30_000
# The descriptors are held in memory (24 KB an image): above this many images none is
# computed (4.8 GB at the limit) and grouping uses the exact and pHash tests alone.
MAX_DESCRIBED_IMAGES = 200_000
ANN_DIMENSIONS = 256  # random projection of each 4,096-value view for the index
ANN_NEIGHBOURS = 32  # candidates per image and view (copies of one slice: Br35H has up to 20)
ANN_SLACK = 0.06  # projected similarity may fall this far under the threshold (projection error)


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


def _head_parts_box(gray: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the bright parts that make up the head: Otsu's mask
    on the image shrunk to at most PARTS_SIDE, opened once (3x3) so thin lines, text
    strokes and noise specks fall away, and every connected part at least PART_SHARE of
    the largest (the brain and the scalp ring around it, not a label). The whole image
    when no part spans MIN_HEAD_SIDE of its sides."""
    from scipy import ndimage
    height, width = gray.shape
    scale = min(1.0, PARTS_SIDE / max(height, width))
    small = gray if scale == 1.0 else np.asarray(Image.fromarray(gray).resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.BOX))
    bright = ndimage.binary_opening(small > _otsu_level(small))
    parts, count = ndimage.label(bright)
    if count == 0:
        return 0, height, 0, width
    sizes = ndimage.sum_labels(bright, parts, np.arange(1, count + 1))
    head = np.isin(parts, 1 + np.nonzero(sizes >= PART_SHARE * sizes.max())[0])
    rows, cols = np.nonzero(head.any(axis=1))[0], np.nonzero(head.any(axis=0))[0]
    top, left = int(rows[0] / scale), int(cols[0] / scale)
    bottom = min(height, int(np.ceil((rows[-1] + 1) / scale)))
    right = min(width, int(np.ceil((cols[-1] + 1) / scale)))
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
    """The contrast-invariant views of a slice, shape (VIEWS, 4096) float16 (24 KB): the
    equalised thumbnail of the head's bounding box (found with Otsu's level, so the box
    does not move with contrast), of the whole frame, and of the box of the head's large
    parts. Copies that were re-cropped match on the first, copies whose background
    fooled the box on the second, copies that carry burnt-in text or an edge line on the
    third. The dot product of two views is their Pearson correlation."""
    gray = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("L"))
    top, bottom, left, right = _head_rows_cols(gray)
    p_top, p_bottom, p_left, p_right = _head_parts_box(gray)
    return np.stack([_equalised_thumbnail(gray[top:bottom, left:right]), _equalised_thumbnail(gray),
                     _equalised_thumbnail(gray[p_top:p_bottom, p_left:p_right])])


def _flipped(views: np.ndarray, flip: str) -> np.ndarray:
    """Views (N, 4096) of the images turned by ``flip``: "left-right" (a mirror),
    "up-down" or "both" (half a turn)."""
    side = DESCRIPTOR_SIDE
    square = views.reshape(-1, side, side)
    turned = {"left-right": square[:, :, ::-1], "up-down": square[:, ::-1, :], "both": square[:, ::-1, ::-1]}[flip]
    return turned.reshape(len(views), side * side)


def comparable_views(descriptors: np.ndarray, flips: tuple[str, ...] = FLIPS
                     ) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """For each view (head box, whole frame, head parts): the float32 matrix of all
    images and its ``flips``, prepared once for any number of ``correlations`` calls."""
    views = []
    for view in range(descriptors.shape[1]):
        matrix = np.asarray(descriptors[:, view], np.float32)
        views.append((matrix, [_flipped(matrix, flip) for flip in flips]))
    return views


def correlations(views: list[tuple[np.ndarray, list[np.ndarray]]], rows: slice) -> np.ndarray:
    """For the images in ``rows`` against all (``views`` from ``comparable_views``): the
    correlation of each view (head box, whole frame, head parts), each the largest over
    the image as it is and its flips, as (views, rows, n)."""
    result = []
    for matrix, flips in views:
        best = matrix[rows] @ matrix.T
        for flipped in flips:
            np.maximum(best, matrix[rows] @ flipped.T, out=best)
        result.append(best)
    return np.stack(result)


def _paired(a: np.ndarray, b: np.ndarray, flips: tuple[str, ...]) -> np.ndarray:
    """Row by row, the correlation of views ``a`` and ``b`` (P, 4096): the largest over
    ``b`` as it is and its ``flips``."""
    return np.max([(a * b).sum(1)] + [(a * _flipped(b, flip)).sum(1) for flip in flips], axis=0)


def pair_correlations(descriptors: np.ndarray, pairs: np.ndarray, flips: tuple[str, ...] = FLIPS) -> np.ndarray:
    """(views, P): each listed pair's correlation on every view, as ``correlations``
    gives it, without comparing either image with all the others."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    return np.stack([_paired(np.asarray(descriptors[pairs[:, 0], view], np.float32),
                             np.asarray(descriptors[pairs[:, 1], view], np.float32), flips)
                     for view in range(descriptors.shape[1])])


def correlated_pairs(descriptors: np.ndarray, min_correlation: float = MIN_CORRELATION,
                     chunk: int = 512, flips: tuple[str, ...] = FLIPS) -> list[tuple[int, int]]:
    """All pairs (i < j) of ``contrast_descriptor``s whose head-box or head-parts views
    correlate at least ``min_correlation``, or whose whole-frame views correlate at least
    ``min_correlation + WHOLE_FRAME_MARGIN`` (a whole frame is mostly background, so
    different slices correlate higher there), as it is or flipped (FLIPS). Exact, in blocks:
    time grows with n^2 (3,000 images: a few seconds), memory with n (chunk x n)."""
    views = comparable_views(np.asarray(descriptors), flips)
    margins = np.asarray(VIEW_MARGINS[:len(views)], np.float32)[:, None, None]
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(descriptors), chunk):
        similar = (correlations(views, slice(start, start + chunk)) >= min_correlation + margins).any(axis=0)
        rows, cols = np.nonzero(similar)
        rows = rows + start
        keep = rows < cols  # each flip f is its own inverse, so f(a).b == a.f(b): symmetric
        pairs.extend(zip(rows[keep].tolist(), cols[keep].tolist()))
    return pairs


def indexed_correlated_pairs(descriptors: np.ndarray, min_correlation: float = MIN_CORRELATION,
                             neighbours: int = ANN_NEIGHBOURS, dimensions: int = ANN_DIMENSIONS,
                             seed: int = 0, chunk: int = 8192, flips: tuple[str, ...] = FLIPS
                             ) -> list[tuple[int, int]]:
    """``correlated_pairs`` in near-linear time, for data sets too large to compare
    every pair. Each view is projected to ``dimensions`` values by a fixed random
    Gaussian matrix (inner products of unit vectors survive within about
    1/sqrt(dimensions)), indexed in faiss's HNSW graph (inner product), and every image
    (and each of its flips) asks for its ``neighbours`` nearest; candidates within
    ``ANN_SLACK`` of the threshold are verified with the exact correlation of the full
    views, so no pair is accepted that ``correlated_pairs`` would refuse. What it can
    miss: a copy ranked below the ``neighbours`` nearest of both images (a slice with
    more copies than that), or projected too far under the threshold."""
    import faiss
    descriptors = np.asarray(descriptors)
    count = len(descriptors)
    rng = np.random.default_rng(seed)
    projection = (rng.standard_normal((descriptors.shape[2], dimensions)) / np.sqrt(dimensions)).astype(np.float32)
    found: set[tuple[int, int]] = set()
    thresholds = [min_correlation + margin for margin in VIEW_MARGINS[:descriptors.shape[1]]]
    k = int(min(neighbours + 1, count))
    for view, threshold in enumerate(thresholds):
        def projected(rows: slice, flip: str | None) -> np.ndarray:
            block = np.asarray(descriptors[rows, view], np.float32)
            block = _flipped(block, flip) if flip else block
            reduced = block @ projection
            return reduced / np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)
        index = faiss.IndexHNSWFlat(dimensions, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = max(64, 2 * k)
        for start in range(0, count, chunk):
            index.add(projected(slice(start, start + chunk), None))
        for flip in (None,) + tuple(flips):
            for start in range(0, count, chunk):
                rows = slice(start, min(start + chunk, count))
                similarity, ids = index.search(projected(rows, flip), k)
                query = np.repeat(np.arange(rows.start, rows.stop), k).reshape(-1, k)
                keep = (ids >= 0) & (similarity >= threshold - ANN_SLACK) & (ids != query)
                left, right = np.minimum(query[keep], ids[keep]), np.maximum(query[keep], ids[keep])
                candidates = np.unique(np.stack([left, right], 1), axis=0) if len(left) else np.zeros((0, 2), int)
                if not len(candidates):
                    continue
                exact = _paired(np.asarray(descriptors[candidates[:, 0], view], np.float32),
                                np.asarray(descriptors[candidates[:, 1], view], np.float32), flips)
                found.update(map(tuple, candidates[exact >= threshold].tolist()))
    return sorted(found)


def _phash_of(pixels: np.ndarray) -> int:
    coefficients = _DCT @ pixels @ _DCT.T
    low = coefficients[:HASH_SIZE, :HASH_SIZE].ravel()
    bits = (low > np.median(low)).astype(np.uint64)
    return int((bits * _BIT_WEIGHTS).sum())


def _popcount(values: np.ndarray) -> np.ndarray:
    return np.bitwise_count(values)


def near_duplicate_pairs(
    hashes: np.ndarray, mirrored: np.ndarray, max_distance: int, chunk: int = 2048
) -> list[tuple[int, int]]:
    """All pairs (i < j) whose hashes are within ``max_distance`` bits, directly or
    with either of them mirrored, by exhaustive comparison: O(n^2) time in vectorised
    chunks (10,000 images: about a second; 80,000: 40 s). The reference that
    ``banded_near_duplicate_pairs`` must agree with exactly.

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


def _band_keys(values: np.ndarray, bands: int) -> list[tuple[np.ndarray, int]]:
    """The 64-bit values cut into ``bands`` contiguous bit ranges (as equal as possible):
    a list of (uint64 values, width in bits)."""
    widths = [64 // bands + (1 if k < 64 % bands else 0) for k in range(bands)]
    keys, shift = [], 0
    for width in widths:
        keys.append((((values >> np.uint64(shift)) & np.uint64((1 << width) - 1)), width))
        shift += width
    return keys


def _pair_keys(values: np.ndarray, bands: int) -> list[np.ndarray]:
    """For every pair of bands, the two bands' bits side by side as one uint64 key."""
    cut = _band_keys(values, bands)
    return [(first << np.uint64(width_b)) | second
            for (first, _), (second, width_b) in itertools.combinations(cut, 2)]


def _equal_key_pairs(left: np.ndarray, right: np.ndarray, chunk: int):
    """Yield (i, j) index arrays of every pair with left[i] == right[j], in chunks of
    ``chunk`` left elements (memory: chunk x the mean bucket size)."""
    order = np.argsort(right, kind="stable")
    sorted_right = right[order]
    for start in range(0, len(left), chunk):
        keys = left[start:start + chunk]
        low = np.searchsorted(sorted_right, keys, side="left")
        high = np.searchsorted(sorted_right, keys, side="right")
        counts = high - low
        total = int(counts.sum())
        if not total:
            continue
        i = np.repeat(np.arange(start, start + len(keys)), counts)
        offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        j = order[np.repeat(low, counts) + offsets]
        yield i, j


def banded_near_duplicate_pairs(
    hashes: np.ndarray, mirrored: np.ndarray, max_distance: int, chunk: int = 65536
) -> np.ndarray:
    """The same pairs as ``near_duplicate_pairs``, by multi-index hashing. The 64 bits
    are cut into ``max_distance + 2`` bands; two hashes within ``max_distance`` bits
    differ in at most that many bands, so at least two bands agree exactly
    (pigeonhole). Every pair of bands is used as one bucket key (about 21 bits each for
    distance 4, 15 keys), and only images sharing a key are compared, directly and
    against the mirrored hashes, then verified bit by bit. Returns an [P, 2] array of
    pairs (i < j), sorted.

    Time grows with n log n (sorting each key) plus the candidates, about
    n^2 / 2^21 per key for random hashes: 1,000,000 hashes take about a minute on 2
    cores. Memory is linear in n (one chunk of candidate pairs at a time)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    mirrored = np.asarray(mirrored, dtype=np.uint64)
    if max_distance < 0 or len(hashes) < 2:
        return np.zeros((0, 2), np.int64)
    bands = max_distance + 2
    found = []
    for key_h, key_m in zip(_pair_keys(hashes, bands), _pair_keys(mirrored, bands)):
        for other_values, other_keys in ((hashes, key_h), (mirrored, key_m)):
            for i, j in _equal_key_pairs(key_h, other_keys, chunk):
                keep = (i != j) & (_popcount(hashes[i] ^ other_values[j]) <= max_distance)
                if keep.any():
                    i, j = i[keep], j[keep]
                    found.append(np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1))
    if not found:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(found), axis=0)


def similar_pairs(vectors: np.ndarray, min_similarity: float, chunk: int = 1024) -> np.ndarray:
    """[P, 2] index pairs (i < j) of unit vectors whose cosine similarity is at least
    ``min_similarity``: the "twins" test on a model's pooled features, which catches
    relatives no pixel test does (neighbouring slices of one series, heavily processed
    copies). Exact and quadratic in time (chunks of ``chunk`` rows, memory chunk x N):
    3,000 images in well under a second."""
    vectors = np.asarray(vectors, np.float32)
    found = []
    for start in range(0, len(vectors), chunk):
        sims = vectors[start:start + chunk] @ vectors.T
        rows, cols = np.nonzero(sims >= min_similarity)
        rows = rows + start
        keep = rows < cols
        found.append(np.stack([rows[keep], cols[keep]], axis=1))
    return np.concatenate(found).astype(np.int64) if found else np.zeros((0, 2), np.int64)


def group_duplicates(
    digests: list[str], hashes, mirrored, max_distance: int,
    same_source: list[str] | None = None, descriptors: np.ndarray | None = None,
    min_correlation: float = MIN_CORRELATION, extra_pairs: np.ndarray | None = None,
    flips: tuple[str, ...] = FLIPS,
) -> np.ndarray:
    """Group ids (0..G-1, ordered by first member) such that exact and near
    duplicates share a group, transitively. Images with the same non-empty
    ``same_source`` key (one patient's DICOM slices, one NIfTI volume's slices) share
    a group too, so a split can never put one patient on both sides. With
    ``descriptors`` (``contrast_descriptor`` of each image) and ``min_correlation`` > 0,
    contrast-invariant copies are merged as well. ``extra_pairs`` ([P, 2] indices) are
    merged as found by another test (``similar_pairs`` on a model's features).

    Scale: the key and hash tests are near-linear (multi-index hashing: 1,000,000
    images in about a minute, memory linear); the correlation test is quadratic and
    runs up to ``MAX_CORRELATION_IMAGES``, an indexed search with exact verification above;
    the transitive closure is one connected-
    components pass over the pairs found."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    count = len(digests)
    if not count:
        return np.zeros(0, np.int64)
    edges = []
    for keys in (digests, same_source or []):
        first_with_key: dict[str, int] = {}
        pairs = []
        for index, key in enumerate(keys):
            if key:
                first = first_with_key.setdefault(key, index)
                if first != index:
                    pairs.append((first, index))
        if pairs:
            edges.append(np.array(pairs, np.int64))
    if max_distance >= 0:
        edges.append(banded_near_duplicate_pairs(np.asarray(hashes, dtype=np.uint64),
                                                 np.asarray(mirrored, dtype=np.uint64), max_distance))
    if descriptors is not None and min_correlation > 0 and count > 1:
        if count <= MAX_CORRELATION_IMAGES:
            found = correlated_pairs(descriptors, min_correlation, flips=flips)
        else:
            log.info("%d images: contrast-invariant copies through a nearest-neighbour index "
                     "(candidates verified exactly)", count)
            found = indexed_correlated_pairs(descriptors, min_correlation, flips=flips)
        if found:
            edges.append(np.array(found, np.int64))
    if extra_pairs is not None and len(extra_pairs):
        edges.append(np.asarray(extra_pairs, np.int64).reshape(-1, 2))
    pairs = np.concatenate(edges) if edges else np.zeros((0, 2), np.int64)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(count, count))
    _, labels = connected_components(graph, directed=False)
    # Number the groups by their first member, as a reader of the manifest expects.
    first_member = np.full(labels.max() + 1, count, np.int64)
    np.minimum.at(first_member, labels, np.arange(count))
    rank = np.empty_like(first_member)
    rank[np.argsort(first_member, kind="stable")] = np.arange(len(first_member))
    return rank[labels].astype(np.int64)
