"""Decoding image files into RGB arrays: the single entry point used by training,
prediction and the UI, so that a picture is read the same way everywhere.

The file type is decided from the bytes, never from the extension (Br35H ships PNG
files named ``.jpg``). Every failure becomes :class:`ImageDecodeError` with a reason a
person can act on.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "GIF", "MPO", "WEBP")
# A 224x224 model never needs more than this; larger headers are refused before
# any pixel is decoded, which keeps decompression bombs from eating memory.
MAX_PIXELS = 50_000_000


class ImageDecodeError(ValueError):
    """The bytes are not an image this project can use; ``str(err)`` says why."""


def _open(data: bytes) -> Image.Image:
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image (content is not JPEG, PNG, BMP or TIFF)") from None
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


def decode_rgb(data: bytes) -> np.ndarray:
    """Decode image bytes to an HxWx3 uint8 array (first frame, EXIF rotation applied).

    Raises ImageDecodeError for anything that is not a usable image.
    """
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


def load_for_model(data: bytes, size: int) -> np.ndarray:
    """Bytes -> size x size x 3 float32 in [0, 1], exactly as the model sees it."""
    return resize_rgb(decode_rgb(data), size).astype(np.float32) / 255.0


def read_file_bytes(path: str) -> bytes:
    """Read a file, turning OS errors into ImageDecodeError with the reason."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as err:
        raise ImageDecodeError(f"cannot read file: {err.strerror or err}") from None
