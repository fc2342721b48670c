"""DICOM and NIfTI files written by the tests themselves (pydicom, nibabel), with fake
patient identifiers where a test needs to prove they are kept out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FAKE_NAME = "Testperson^Fakename"
FAKE_ID = "FAKEID-0042-XYZ"
FAKE_BIRTH = "19010203"
FAKE_ACCESSION = "ACC-998877"
FAKE_INSTITUTION = "Fictional General Hospital"
FAKE_IDENTIFIERS = (FAKE_NAME, FAKE_ID, FAKE_BIRTH, FAKE_ACCESSION, FAKE_INSTITUTION)


def write_dicom(path: Path, pixels: np.ndarray, *, modality: str = "MR", bits: int = 8,
                intercept: float = 0.0, slope: float = 1.0, photometric: str = "MONOCHROME2",
                window: tuple[float, float] | None = None, patient_id: str = FAKE_ID,
                patient_name: str = FAKE_NAME, study_uid: str | None = None,
                compress_rle: bool = False) -> Path:
    """A DICOM file (with the 128-byte preamble and DICM marker). ``pixels`` is
    (rows, cols) or (frames, rows, cols) of stored values."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4" if modality == "MR" else "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName, ds.PatientID = patient_name, patient_id
    ds.PatientBirthDate, ds.AccessionNumber = FAKE_BIRTH, FAKE_ACCESSION
    ds.InstitutionName = FAKE_INSTITUTION
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    stored = np.asarray(pixels)
    if stored.ndim == 3:
        ds.NumberOfFrames = stored.shape[0]
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    if intercept or slope != 1.0:
        ds.RescaleIntercept, ds.RescaleSlope = intercept, slope
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = stored.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
    if compress_rle:
        ds.compress(RLELossless)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return Path(path)


def write_nifti(path: Path, volume: np.ndarray) -> Path:
    import nibabel as nib
    nib.save(nib.Nifti1Image(volume.astype(np.float32), np.eye(4)), str(path))
    return Path(path)


def head_slice(size: int = 64, tumor: bool = False, seed: int = 0) -> np.ndarray:
    """A bright ellipse (a head) on black, with a brighter blob for a tumor; 0..255."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    head = ((yy - size / 2) / (0.42 * size)) ** 2 + ((xx - size / 2) / (0.35 * size)) ** 2 < 1
    image = np.where(head, 110.0, 0.0) + rng.normal(0, 6, (size, size)) * head
    if tumor:
        cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 10) ** 2] = 230
    return np.clip(image, 0, 255)
