"""Scanner formats: DICOM files and NIfTI volumes turned into the 8-bit slices the
rest of the project reads, plus the one thing each file says about who it belongs to
(a salted hash, never the identifier itself).

What is done to each format (the README repeats this):

- DICOM (recognised by the ``DICM`` marker after the 128-byte preamble, whatever the
  file is called): pixel data through pydicom (compressed transfer syntaxes through
  the pylibjpeg plugins in requirements.txt), Rescale Slope/Intercept applied (CT in
  Hounsfield units), then the file's own window (VOI LUT sequence, else Window
  Center/Width), else a default per modality: the CT brain window (centre 40 HU,
  width 80 HU), or for MR and others the 1st to 99th percentile of the frame.
  MONOCHROME1 is inverted so that bright means dense everywhere. Every frame of a
  multi-frame file is a slice. The Modality tag sets CT or MRI.
- NIfTI (``.nii`` or ``.nii.gz``, recognised by the header): reoriented to the closest
  RAS+ orientation with nibabel, sliced along the third (axial, inferior to superior)
  axis; a 4-D file uses its first volume. Intensities: a volume with at least 2% of its
  voxels at air (-1000 HU) or FOV padding is taken as CT in HU and gets the brain
  window (``looks_like_ct_in_hu``), any other the 1st to 99th
  percentile of its non-zero voxels. A slice is kept when at least 5% of its pixels
  are brighter than 10% of that range (the rest is air above and below the head).

Identifiers: the grouping key of a file is a salted SHA-256 of its Patient ID (else
Study Instance UID, else the file path for NIfTI and DICOM without either); no name,
ID, date, accession number or institution is returned to callers, only whether the
file carried any.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
from dataclasses import dataclass, field

import numpy as np

CT_BRAIN_WINDOW = (40.0, 80.0)  # centre, width in HU
MIN_FOREGROUND_SHARE = 0.05
FOREGROUND_LEVEL = 0.1
SLICE_MARK = "#slice="
MAX_VOXELS = 200_000_000  # refused before decoding, like imageio.MAX_PIXELS for pictures
_SLICE_SUFFIX = re.compile(r"^(?P<file>.+)#slice=(?P<index>\d+)$")
# Tags whose presence is reported (never their values); the PS3.15 basic profile's
# most common direct identifiers.
IDENTIFYING_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientAddress",
                    "OtherPatientIDs", "AccessionNumber", "InstitutionName",
                    "InstitutionAddress", "ReferringPhysicianName", "PatientTelephoneNumbers")


class ScanError(ValueError):
    """The file is a DICOM or NIfTI that cannot be turned into slices; says why."""


@dataclass
class Scan:
    """The slices of one file: uint8 gray images, the index of each in the file, the
    modality, a salted grouping key and whether identifiers were present."""
    slices: list[np.ndarray]
    indices: list[int]
    modality: str
    group_key: str
    had_identifiers: bool = False
    kind: str = "DICOM"
    notes: list[str] = field(default_factory=list)

    def rgb(self, position: int) -> np.ndarray:
        gray = self.slices[position]
        return np.repeat(gray[:, :, None], 3, axis=2)

    def addressed(self, name: str):
        """(address, slice index or None, RGB) per kept slice: a single-frame DICOM is
        addressed by its file name, the slices of a volume or multi-frame file as
        ``name#slice=K`` (slice_path)."""
        several = self.kind == "NIfTI" or len(self.indices) > 1
        for position, index in enumerate(self.indices):
            yield (slice_path(name, index) if several else name, index if several else None,
                   self.rgb(position))

    def rgb_of(self, index: int | None) -> np.ndarray:
        """The RGB slice with file index ``index`` (None = the middle kept slice)."""
        return self.rgb(self.position_of(index))

    def position_of(self, index: int | None) -> int:
        """The position of the slice with file index ``index``; None = the middle one."""
        if index is None:
            return len(self.indices) // 2
        try:
            return self.indices.index(int(index))
        except ValueError:
            raise ScanError(f"slice {index} is not one of the kept slices of this file") from None


def is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def is_nifti(data: bytes) -> bool:
    """NIfTI-1 or NIfTI-2 header (either byte order), plain or gzip-compressed."""
    head = data[:540]
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as handle:
                head = handle.read(540)
        except (OSError, EOFError):
            return False
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return int.from_bytes(head[:4], "little") == 348 or int.from_bytes(head[:4], "big") == 348
    return len(head) >= 540 and head[4:12] in (b"n+2\x00\r\n\x1a\n",)


def is_scan(data: bytes) -> bool:
    return is_dicom(data) or is_nifti(data)


def slice_path(path: str, index: int) -> str:
    """The manifest address of one slice of a multi-slice file."""
    return f"{path}{SLICE_MARK}{int(index)}"


def split_slice_path(path: str) -> tuple[str, int | None]:
    """(file path, slice index or None) from a manifest address."""
    match = _SLICE_SUFFIX.match(path)
    if not match:
        return path, None
    return match.group("file"), int(match.group("index"))


def salted_key(value: str, salt: bytes) -> str:
    return hashlib.sha256(salt + value.encode("utf-8", "replace")).hexdigest()[:20]


def read_scan(data: bytes, *, salt: bytes = b"", name: str = "") -> Scan:
    """Every usable slice of a DICOM or NIfTI file. ``name`` (the file's path) keys
    files that carry no patient or study identifier."""
    if not is_scan(data):
        raise ScanError("not a DICOM or NIfTI file")
    kind = "DICOM" if is_dicom(data) else "NIfTI"
    try:
        return _read_dicom(data, salt, name) if kind == "DICOM" else _read_nifti(data, salt, name)
    except ScanError:
        raise
    except Exception as err:  # noqa: BLE001 - pydicom parses lazily: any tag read can raise
        detail = str(err).splitlines()[0] if str(err) else ""
        raise ScanError(f"unreadable {kind} ({type(err).__name__}{': ' + detail if detail else ''})") from None


# ---------------------------------------------------------------- DICOM

def _read_dicom(data: bytes, salt: bytes, name: str) -> Scan:
    import pydicom
    from pydicom.errors import InvalidDicomError
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as err:
        raise ScanError(f"unreadable DICOM: {err}") from None
    if "PixelData" not in dataset and "FloatPixelData" not in dataset:
        raise ScanError("DICOM without pixel data (a report or structured document?)")
    voxels = int(dataset.get("Rows", 0)) * int(dataset.get("Columns", 0)) * int(dataset.get("NumberOfFrames", 1) or 1)
    if voxels > MAX_VOXELS:
        raise ScanError(f"DICOM too large: {voxels:,} pixels in all frames (limit {MAX_VOXELS:,})")
    try:
        pixels = dataset.pixel_array
    except Exception as err:  # noqa: BLE001 - pydicom raises many kinds
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        label = getattr(syntax, "name", str(syntax))
        text = str(err)
        if "plugin" in text.lower() or "handler" in text.lower() or "decod" in text.lower():
            raise ScanError(f"DICOM pixel data in {label} needs a decoder plugin that is not "
                            "installed (pylibjpeg with pylibjpeg-libjpeg / pylibjpeg-openjpeg, "
                            f"or python-gdcm): {text.splitlines()[0]}") from None
        raise ScanError(f"DICOM pixel data cannot be decoded ({label}): {text.splitlines()[0]}") from None
    samples = int(dataset.get("SamplesPerPixel", 1))
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if samples == 1:
        stack = pixels.reshape((frames,) + pixels.shape[-2:]) if frames > 1 else pixels[None]
    else:
        stack = pixels.reshape((frames,) + pixels.shape[-3:]) if frames > 1 else pixels[None]
    modality_tag = str(dataset.get("Modality", "")).upper()
    modality = {"CT": "CT", "MR": "MRI"}.get(modality_tag, "unknown")
    try:
        slices = [_dicom_frame_to_uint8(frame, dataset, modality_tag, samples) for frame in stack]
    except Exception as err:  # noqa: BLE001 - a broken rescale or window tag, found by the fuzz test
        raise ScanError(f"DICOM pixel values cannot be interpreted (rescale or window tags): "
                        f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    key_source = (str(dataset.get("PatientID", "") or "").strip()
                  or str(dataset.get("StudyInstanceUID", "") or "").strip())
    group_key = salted_key(("patient:" + key_source) if key_source else ("file:" + name), salt)
    had_identifiers = any(str(dataset.get(tag, "") or "").strip() for tag in IDENTIFYING_TAGS)
    return Scan(slices, list(range(len(slices))), modality, group_key, had_identifiers, "DICOM")


def _dicom_frame_to_uint8(frame: np.ndarray, dataset, modality_tag: str, samples: int) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, convert_color_space
    if samples == 3:
        photometric = str(dataset.get("PhotometricInterpretation", "RGB"))
        if photometric.startswith("YBR"):
            frame = convert_color_space(frame, photometric, "RGB")
        rgb = frame.astype(np.float64)
        low, high = float(rgb.min()), float(rgb.max())
        gray = rgb.mean(axis=2)
        return _scale(gray, low, high)
    values = apply_modality_lut(frame, dataset).astype(np.float64)
    if "VOILUTSequence" in dataset:
        windowed = apply_voi_lut(frame, dataset, index=0).astype(np.float64)
        bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2]) or 16
        out = _scale(windowed, 0.0, float(2 ** bits - 1))
    elif "WindowCenter" in dataset and "WindowWidth" in dataset:
        centre, width = _first(dataset.WindowCenter), _first(dataset.WindowWidth)
        out = _window(values, centre, width)
    elif modality_tag == "CT":
        out = _window(values, *CT_BRAIN_WINDOW)
    else:
        low, high = np.percentile(values, [1, 99])
        out = _scale(values, float(low), float(high))
    if str(dataset.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        out = 255 - out
    return out


def _first(value) -> float:
    try:
        return float(value[0])
    except (TypeError, IndexError):
        return float(value)


def _window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """The linear DICOM window (PS3.3 C.11.2.1.2.1) onto 0..255."""
    width = max(float(width), 1.0)
    low = centre - 0.5 - (width - 1) / 2
    scaled = (values - low) / max(width - 1, 1.0)
    return (np.clip(scaled, 0.0, 1.0) * 255).round().astype(np.uint8)


def _scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return (np.clip((values - low) / (high - low), 0.0, 1.0) * 255).round().astype(np.uint8)


# ---------------------------------------------------------------- NIfTI

AIR_HU = (-1200.0, -800.0)  # air in Hounsfield units is -1000
PADDING_HU = -1500.0  # scanners pad outside the field of view with -2048 or -3024
MIN_AIR_SHARE = 0.02


def looks_like_ct_in_hu(volume: np.ndarray) -> bool:
    """A volume is CT in Hounsfield units when at least 2% of its voxels are air (-1000
    HU, give or take 200) or field-of-view padding (below -1500). A head CT always has
    air around the head; an MR volume never has a mass of voxels near -1000, only the
    odd negative value of interpolation undershoot (nibabel's anatomical.nii: 2 voxels
    of 33,825 below -500, which the old "minimum below -500" rule took for CT)."""
    values = np.asarray(volume, np.float32)
    if not values.size:
        return False
    air = ((values >= AIR_HU[0]) & (values <= AIR_HU[1])) | (values < PADDING_HU)
    return float(air.mean()) >= MIN_AIR_SHARE


def _read_nifti(data: bytes, salt: bytes, name: str) -> Scan:
    import nibabel as nib
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    try:
        image = nib.Nifti1Image.from_bytes(raw) if raw[344:348] in (b"n+1\x00", b"ni1\x00") \
            else nib.Nifti2Image.from_bytes(raw)
        if int(np.prod(image.shape)) > MAX_VOXELS:
            raise ScanError(f"NIfTI too large: shape {image.shape} (limit {MAX_VOXELS:,} voxels)")
        image = nib.as_closest_canonical(image)
        volume = np.asanyarray(image.dataobj, dtype=np.float32)
    except ScanError:
        raise
    except Exception as err:  # noqa: BLE001 - nibabel raises many kinds
        raise ScanError(f"unreadable NIfTI: {err}") from None
    if volume.ndim == 4:
        volume = volume[..., 0]
    if volume.ndim != 3 or min(volume.shape[:2]) < 8:
        raise ScanError(f"NIfTI of shape {volume.shape} is not a volume of 2-D slices")
    finite = np.nan_to_num(volume, nan=0.0, posinf=0.0, neginf=0.0)
    if looks_like_ct_in_hu(finite):
        scaled = _window(finite, *CT_BRAIN_WINDOW)
        modality = "CT"
    else:
        inside = finite[finite != 0]
        low, high = np.percentile(inside, [1, 99]) if inside.size else (0.0, 1.0)
        scaled = _scale(finite, float(low), float(high))
        modality = "MRI"
    slices, indices = [], []
    for index in range(scaled.shape[2]):
        # RAS+: rows = x (right to left of the picture), columns = y; transpose and
        # flip so anterior is up and the patient's right is on the left, as radiology
        # viewers show axial slices.
        picture = np.flipud(scaled[:, :, index].T)
        if np.mean(picture > FOREGROUND_LEVEL * 255) >= MIN_FOREGROUND_SHARE:
            slices.append(np.ascontiguousarray(picture))
            indices.append(index)
    if not slices:
        raise ScanError("NIfTI volume has no slice with enough brain content")
    group_key = salted_key("file:" + name, salt)
    return Scan(slices, indices, modality, group_key, False, "NIfTI",
                notes=[f"{len(indices)} of {scaled.shape[2]} axial slices kept"])
