"""Decoding image files into RGB arrays: the single entry point used by training,
prediction and the UI, so that a picture is read the same way everywhere.

The file type is decided from the bytes, never from the extension (Br35H ships PNG
files named ``.jpg``). Every failure becomes :class:`ImageDecodeError` with a reason a
person can act on.
"""

from __future__ import annotations

import functools
import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.data import scans

SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "GIF", "MPO", "WEBP")
# A 224x224 model never needs more than this; larger headers are refused before
# any pixel is decoded, which keeps decompression bombs from eating memory.
MAX_PIXELS = 50_000_000


class ImageDecodeError(ValueError):
    """The bytes are not an image this project can use; ``str(err)`` says why."""


def decode_workers(workers: int | None = None) -> int:
    """Threads for decoding a data set: ``workers`` if given, else the cores plus two (the
    pool waits on file reads as well as decoding), at most 8."""
    return workers or min(8, (os.cpu_count() or 1) + 2)

def _open(data: bytes) -> Image.Image:
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image (content is not JPEG, PNG, BMP, TIFF, GIF, "
                               "WebP, DICOM or NIfTI)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(f"image too large (over {MAX_PIXELS:,} pixels)") from None
    except Exception as err:  # PIL raises many types for bad headers
        raise ImageDecodeError(f"unreadable image header: {err}") from None
    if image.format not in SUPPORTED_FORMATS:
        raise ImageDecodeError(f"unsupported image format {image.format}")
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(
            f"image too large: {width}x{height} is over the {MAX_PIXELS:,}-pixel limit"
        )
    if width < 8 or height < 8:
        raise ImageDecodeError(f"image too small: {width}x{height}")
    return image


def _to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """Any mode (1, L, P, RGB, RGBA, CMYK, I;16, I, F) -> HxWx3 uint8."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float images: stretch their real range to 0..255 rather than
        # clipping, since medical exports rarely use the full 16-bit range.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        gray = ((array - low) * scale).round().astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "RGBA" or mode == "LA" or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode_rgb(data: bytes, slice_index: int | None = None) -> np.ndarray:
    """Decode image bytes to an HxWx3 uint8 array (first frame, EXIF rotation applied).
    DICOM and NIfTI bytes give one slice (engine.data.scans): ``slice_index`` in the file,
    or the middle kept slice when None.

    Raises ImageDecodeError for anything that is not a usable image.
    """
    if scans.is_scan(data):
        return _slice_of(read_scan(data), slice_index)
    image = _open(data)
    try:
        image.seek(0)
        image = ImageOps.exif_transpose(image)
        image.load()
        return _to_rgb_uint8(image)
    except ImageDecodeError:
        raise
    except Exception as err:  # truncated data, broken chunks, bad EXIF ...
        raise ImageDecodeError(f"corrupt image data: {err}") from None


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize an HxWx3 uint8 image to size x size with antialiasing (aspect not kept,
    as every training image is treated the same way)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR, reducing_gap=None))


def head_box(rgb: np.ndarray, *, level: float = 0.1, min_share: float = 0.02,
             margin: float = 0.02) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the head in a slice: rows and columns where at
    least ``min_share`` of the pixels are brighter than ``level`` x the brightest.

    Why the share: scanner exports carry burnt-in text, rulers and noise in the black
    background; a few bright pixels in a row must not widen the box. Falls back to the
    whole image when nothing (or almost nothing) is found, so a blank or unusual image
    is never cropped to a sliver.
    """
    height, width = rgb.shape[:2]
    gray = rgb.astype(np.float32).mean(axis=2)
    peak = float(gray.max())
    if peak <= 0:
        return 0, height, 0, width
    bright = gray > level * peak
    rows = np.nonzero(bright.mean(axis=1) >= min_share)[0]
    cols = np.nonzero(bright.mean(axis=0) >= min_share)[0]
    if len(rows) == 0 or len(cols) == 0:
        return 0, height, 0, width
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if (bottom - top) < 0.1 * height or (right - left) < 0.1 * width:
        return 0, height, 0, width
    pad_y, pad_x = int(round(margin * height)), int(round(margin * width))
    return (max(0, top - pad_y), min(height, bottom + pad_y),
            max(0, left - pad_x), min(width, right + pad_x))


def crop_to_head(rgb: np.ndarray) -> np.ndarray:
    """The head's bounding box, padded with black to a square around its centre, so
    the resize to the model's square input keeps the aspect ratio. Br35H slices come
    in many sizes with the head filling 40 to 100% of the frame; cropping makes the
    head the same size in every input."""
    top, bottom, left, right = head_box(rgb)
    crop = rgb[top:bottom, left:right]
    height, width = crop.shape[:2]
    side = max(height, width)
    square = np.zeros((side, side, 3), dtype=rgb.dtype)
    y0, x0 = (side - height) // 2, (side - width) // 2
    square[y0:y0 + height, x0:x0 + width] = crop
    return square


def prepare_rgb(rgb: np.ndarray, size: int, crop: bool = False) -> np.ndarray:
    """The one transformation from a decoded image to the model's input size (uint8):
    optional crop to the head, then resize. Training, evaluation, prediction and the
    Errors page all call this, so they agree pixel for pixel."""
    return resize_rgb(crop_to_head(rgb) if crop else rgb, size)


def load_for_model(data: bytes, size: int, crop: bool = False) -> np.ndarray:
    """Bytes -> size x size x 3 float32 in [0, 1], exactly as the model sees it."""
    return prepare_rgb(decode_rgb(data), size, crop).astype(np.float32) / 255.0


def read_scan(data: bytes, *, salt: bytes = b"", name: str = "") -> "scans.Scan":
    """engine.data.scans.read_scan with its errors as ImageDecodeError."""
    try:
        return scans.read_scan(data, salt=salt, name=name)
    except scans.ScanError as err:
        raise ImageDecodeError(str(err)) from None


@functools.lru_cache(maxsize=4)
def _scan_at(path: str, mtime: float) -> "scans.Scan":
    # A volume's slices are read one after another (manifest, pipeline, Errors page):
    # decode it once, not once per slice.
    return read_scan(read_file_bytes(path), name=path)


def decode_path(path: str) -> np.ndarray:
    """A manifest address -> HxWx3 uint8: a picture file, or one slice of a scan file
    (``file#slice=K``, see engine.data.scans.slice_path)."""
    file_path, index = scans.split_slice_path(path)
    if index is None:
        return decode_rgb(read_file_bytes(path))
    try:
        scan = _scan_at(file_path, os.path.getmtime(file_path))
    except OSError as err:
        raise ImageDecodeError(f"cannot read file: {err.strerror or err}") from None
    return _slice_of(scan, index)


def _slice_of(scan: "scans.Scan", index: int | None) -> np.ndarray:
    try:
        return scan.rgb_of(index)
    except scans.ScanError as err:
        raise ImageDecodeError(str(err)) from None


def read_file_bytes(path: str) -> bytes:
    """Read a file, turning OS errors into ImageDecodeError with the reason."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as err:
        raise ImageDecodeError(f"cannot read file: {err.strerror or err}") from None


def classes_without_images(sources, sample: int = 16) -> list[str]:
    """The classes ("tumor", "no tumor") of a discovered folder none of whose first
    ``sample`` files decode: a folder of text files or broken downloads is refused before
    a run starts, not three seconds into it. Reads at most ``sample`` files a class."""
    missing = []
    for label, name in ((1, "tumor"), (0, "no tumor")):
        paths = [s.path for s in sources if s.label == label][:sample]
        readable = False
        for path in paths:
            try:
                decode_path(path)
                readable = True
                break
            except ImageDecodeError:
                continue
        if not readable:
            missing.append(f"the {name} class")
    return missing
