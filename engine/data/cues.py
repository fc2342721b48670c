"""Shortcut cues: what an image says about how it was made, apart from the anatomy.

A data set whose classes come from different sources (scanners, hospitals, exports,
web collections) lets a model read the label from the file instead of the brain: on
Br35H image size alone predicts it. These cues are measured per image, without any
model, in two named sets (``CUE_SETS``):

- ``acquisition``: size and shape of the frame, file format and compression, bit depth
  and colour mode, the background outside the head box (level, spread, noise), the share
  of the frame the head fills, the sharpness of the whole frame (resampling), and for
  DICOM the acquisition tags that identify no one (manufacturer, model, field strength,
  slice thickness, pixel spacing, rows, columns, photometric interpretation).
- ``intensity``: grey-level statistics inside the head box. They can carry real signal
  (a bright lesion raises the 99th percentile), so they are a set of their own.

Categorical cues (format, colour mode, DICOM strings) are kept as text; the audit
(engine.evaluation.shortcuts) encodes them. Time and memory: one decode per image,
linear in the number of images, on ``decode_workers`` threads.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from engine.data import scans
from engine.data.health import quality_scores
from engine.data.imageio import ImageDecodeError, decode_path, decode_workers, head_box, read_file_bytes

ACQUISITION = ["width", "height", "aspect", "file_format", "bytes_per_pixel", "jpeg_quality",
               "bit_depth", "colour_mode", "border_mean", "border_std", "border_noise",
               "head_share", "sharpness"]
DICOM_TAGS = {"dicom_manufacturer": "Manufacturer", "dicom_model": "ManufacturerModelName",
              "dicom_field_strength": "MagneticFieldStrength", "dicom_slice_thickness": "SliceThickness",
              "dicom_pixel_spacing": "PixelSpacing", "dicom_rows": "Rows", "dicom_columns": "Columns",
              "dicom_photometric": "PhotometricInterpretation"}
INTENSITY = ["head_mean", "head_std", "head_p01", "head_p50", "head_p99"]
CUE_SETS = {"acquisition": ACQUISITION + list(DICOM_TAGS), "intensity": INTENSITY}
CATEGORICAL = {"file_format", "colour_mode", "dicom_manufacturer", "dicom_model", "dicom_photometric"}
# What a clinician reads instead of the column name.
CUE_LABELS = {
    "width": "image width (px)", "height": "image height (px)", "aspect": "width / height",
    "file_format": "file format", "bytes_per_pixel": "file bytes per pixel",
    "jpeg_quality": "JPEG quality (estimated)", "bit_depth": "bits per pixel",
    "colour_mode": "colour mode", "border_mean": "background level outside the head",
    "border_std": "background spread outside the head", "border_noise": "background noise",
    "head_share": "share of the frame the head fills", "sharpness": "sharpness of the frame",
    "head_mean": "mean grey level in the head", "head_std": "grey-level spread in the head",
    "head_p01": "darkest 1% in the head", "head_p50": "median grey level in the head",
    "head_p99": "brightest 1% in the head",
    **{name: f"DICOM {tag}" for name, tag in DICOM_TAGS.items()},
    # the data-health scores (engine.data.health) the per-slice table bins beside the cues
    "grey_mean": "mean grey level of the frame", "grey_std": "grey-level spread of the frame",
    "grey_p99": "brightest 1% of the frame",
}

def cue_label(name: str | None, stored: str | None = None) -> str:
    """The words for a cue or score column: today's label, else the one a report stored
    (audits written before a column had words show them too), else the column name."""
    return CUE_LABELS.get(name or "", stored or name or "")


# libjpeg's standard luminance quantisation table (quality 50), in zig-zag order as PIL
# returns tables: a file's table divided by it gives the quality it was saved at.
_STANDARD_LUMA = np.array([
    16, 11, 12, 14, 12, 10, 16, 14, 13, 14, 18, 17, 16, 19, 24, 40, 26, 24, 22, 22, 24, 49,
    35, 37, 29, 40, 58, 51, 61, 60, 57, 51, 56, 55, 64, 72, 92, 78, 64, 68, 87, 69, 55, 56,
    80, 109, 81, 87, 95, 98, 103, 104, 103, 62, 77, 113, 121, 112, 100, 120, 92, 101, 103, 99],
    np.float64)


def jpeg_quality(table) -> float:
    """Estimated JPEG quality (1-100) from a luminance quantisation table, by inverting
    libjpeg's scaling of its standard table; NaN without a table."""
    if table is None or len(table) != 64:
        return float("nan")
    scale = float(np.mean(np.asarray(table, np.float64) / _STANDARD_LUMA) * 100)
    quality = (200 - scale) / 2 if scale <= 100 else 5000 / scale
    return float(np.clip(quality, 1, 100))


def _file_cues(data: bytes) -> dict:
    """Format, compression, bit depth and colour mode from the file's own header."""
    if scans.is_dicom(data):
        cues = {"file_format": "DICOM", "jpeg_quality": float("nan"), "colour_mode": "DICOM"}
        try:
            import pydicom
            dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
            cues["bit_depth"] = float(dataset.get("BitsStored", dataset.get("BitsAllocated", np.nan)))
            for name, tag in DICOM_TAGS.items():
                value = dataset.get(tag, None)
                if value is None:
                    continue
                if name in CATEGORICAL:
                    cues[name] = str(value)
                else:
                    try:
                        cues[name] = float(value[0] if isinstance(value, (list, tuple)) or
                                           getattr(value, "VM", 1) > 1 else value)
                    except (TypeError, ValueError):
                        pass
        except Exception:  # a header pydicom cannot parse: the cues it holds stay missing
            pass
        return cues
    if scans.is_nifti(data):
        return {"file_format": "NIfTI", "jpeg_quality": float("nan"), "colour_mode": "NIfTI",
                "bit_depth": float("nan")}
    try:
        image = Image.open(io.BytesIO(data))
    except Exception:
        return {"file_format": "unknown"}
    tables = getattr(image, "quantization", None) or {}
    bits = {"1": 1, "L": 8, "P": 8, "RGB": 8, "RGBA": 8, "CMYK": 8, "I;16": 16, "I;16B": 16,
            "I": 32, "F": 32, "LA": 8, "YCbCr": 8}.get(image.mode, np.nan)
    return {"file_format": str(image.format), "colour_mode": str(image.mode),
            "bit_depth": float(bits), "jpeg_quality": jpeg_quality(tables.get(0))}


def pixel_cues(rgb: np.ndarray) -> dict:
    """The cues measured on pixels: background outside the head box, head share, the
    intensity statistics inside it and the frame's sharpness. Grey levels in [0, 1]."""
    grey = rgb.astype(np.float32).mean(axis=2) / 255.0
    height, width = grey.shape
    top, bottom, left, right = head_box(rgb)
    outside = np.ones_like(grey, bool)
    outside[top:bottom, left:right] = False
    head = grey[top:bottom, left:right]
    # The background: the frame outside the head box, or the outer tenth of the image
    # when the head fills the frame (a crop with no margin).
    if outside.mean() < 0.02:
        ring = max(1, min(height, width) // 10)
        outside[ring:-ring, ring:-ring] = False
    values = grey[outside]
    # Noise floor: differences of horizontally neighbouring background pixels (0 for a
    # synthetic black frame, a few grey levels for a real scanner's).
    pairs = outside[:, 1:] & outside[:, :-1]
    steps = np.abs(np.diff(grey, axis=1))[pairs]
    p01, p50, p99 = np.percentile(head, [1, 50, 99])
    return {
        "border_mean": float(values.mean()) if values.size else float("nan"),
        "border_std": float(values.std()) if values.size else float("nan"),
        "border_noise": float(np.median(steps)) if steps.size else float("nan"),
        "head_share": float((bottom - top) * (right - left) / (height * width)),
        "head_mean": float(head.mean()), "head_std": float(head.std()),
        "head_p01": float(p01), "head_p50": float(p50), "head_p99": float(p99),
        "sharpness": float(quality_scores(rgb)["sharpness"]),
    }


def image_cues(path: str) -> dict:
    """Every cue of one manifest address (a picture, or one slice of a scan file). A file
    that no longer reads gets its cues missing (NaN), never a crash."""
    file_path, slice_index = scans.split_slice_path(path)
    cues: dict = {"path": path}
    try:
        data = read_file_bytes(file_path)
        rgb = decode_path(path)
    except ImageDecodeError:
        return cues
    height, width = rgb.shape[:2]
    cues.update({"width": float(width), "height": float(height), "aspect": width / height})
    cues.update(_file_cues(data))
    # For a slice of a volume: the whole file over one slice's pixels (a property of the
    # file that all its slices share).
    cues["bytes_per_pixel"] = len(data) / float(width * height)
    cues.update(pixel_cues(rgb))
    return cues


def measure_cues(paths: list[str], workers: int | None = None) -> list[dict]:
    """``image_cues`` of every path, in order, on threads (decoding releases the GIL)."""
    if not paths:
        return []
    with ThreadPoolExecutor(decode_workers(workers)) as pool:
        return list(pool.map(image_cues, paths, chunksize=16))


def cue_columns(rows: list[dict]) -> dict[str, list[str]]:
    """The cue sets restricted to the cues these images have (DICOM tags only where some
    image carries them; a cue missing everywhere is left out)."""
    present = {name for row in rows for name, value in row.items()
               if name != "path" and value is not None and not (isinstance(value, float) and np.isnan(value))}
    return {name: [c for c in columns if c in present] for name, columns in CUE_SETS.items()}

