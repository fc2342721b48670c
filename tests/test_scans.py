"""DICOM and NIfTI in: pixel handling per the DICOM standard, slices of volumes,
patient-level grouping, and patient identifiers kept out of everything written."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from engine.data import scans
from engine.data.imageio import ImageDecodeError, decode_path, decode_rgb, read_file_bytes
from scan_fixtures import FAKE_IDENTIFIERS, head_slice, write_dicom, write_nifti

import pydicom  # noqa: E402,F401 - in requirements.txt: never a silent skip
import nibabel  # noqa: E402,F401


def gray(path) -> np.ndarray:
    return decode_rgb(read_file_bytes(str(path)))[:, :, 0].astype(int)


def test_8bit_mr_is_recognised_by_content_and_scaled_by_percentiles(tmp_path):
    pixels = head_slice(64, tumor=True).astype(np.uint8)
    path = write_dicom(tmp_path / "no_extension", pixels)  # no .dcm: found by DICM marker
    data = read_file_bytes(str(path))
    assert scans.is_dicom(data) and not scans.is_nifti(data)
    low, high = np.percentile(pixels.astype(float), [1, 99])
    expected = np.clip((pixels - low) / (high - low), 0, 1) * 255
    assert np.abs(gray(path) - expected.round()).max() <= 1
    scan = scans.read_scan(data)
    assert scan.modality == "MRI" and scan.had_identifiers


def test_16bit_ct_applies_the_intercept_and_the_brain_window(tmp_path):
    hu = np.array([[-1000, 0, 20, 40], [60, 79, 80, 1000]] * 4, dtype=float)
    hu = np.tile(hu, (2, 2))  # 16 x 8
    hu = np.pad(hu, ((0, 0), (0, 8)), constant_values=-1000)
    stored = (hu + 1024).astype(np.uint16)
    path = write_dicom(tmp_path / "ct.dcm", stored, modality="CT", bits=16, intercept=-1024)
    image = gray(path)
    # Window centre 40, width 80 (PS3.3 linear window): -0.5 - 39.5 = -40 maps to 0 ... below 0
    # for air, HU 40 to the middle, 80 and above to 255.
    assert image[0, 0] == 0 and image[0, 1] == 0  # air, water at the window's lower edge
    assert abs(image[0, 3] - 128) <= 2 and image[1, 2] == 255 and image[1, 3] == 255
    assert scans.read_scan(read_file_bytes(str(path))).modality == "CT"


def test_the_files_own_window_wins_and_monochrome1_is_inverted(tmp_path):
    stored = np.tile(np.arange(0, 256, 2, dtype=np.uint16), (16, 1))  # 16 x 128
    windowed = gray(write_dicom(tmp_path / "w.dcm", stored, bits=16, window=(100, 100)))
    assert windowed[0, 25] == 0 and windowed[0, 75] == 255  # values 50 and 150: window edges
    plain = gray(write_dicom(tmp_path / "m2.dcm", stored, bits=16, window=(100, 100)))
    inverted = gray(write_dicom(tmp_path / "m1.dcm", stored, bits=16, window=(100, 100),
                                photometric="MONOCHROME1"))
    np.testing.assert_array_equal(inverted, 255 - plain)


def test_multiframe_dicom_gives_one_slice_per_frame(tmp_path):
    frames = np.stack([head_slice(48, seed=i) for i in range(3)]).astype(np.uint8)
    path = write_dicom(tmp_path / "multi.dcm", frames)
    scan = scans.read_scan(read_file_bytes(str(path)))
    assert scan.indices == [0, 1, 2] and len(scan.slices) == 3
    middle = decode_path(scans.slice_path(str(path), 1))
    np.testing.assert_array_equal(middle, scan.rgb(1))


def test_rle_compressed_dicom_decodes_and_a_broken_one_says_why(tmp_path):
    pixels = head_slice(32).astype(np.uint8)
    rle = write_dicom(tmp_path / "rle.dcm", pixels, compress_rle=True)
    assert np.abs(gray(rle) - gray(write_dicom(tmp_path / "raw.dcm", pixels))).max() == 0
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(rle.read_bytes()[:400])
    with pytest.raises(ImageDecodeError, match="DICOM"):
        decode_rgb(broken.read_bytes())


def test_nifti_volume_keeps_the_slices_with_brain_content(tmp_path):
    volume = np.zeros((40, 40, 20), np.float32)
    for k in range(6, 14):  # eight slices with a head in them
        volume[:, :, k] = head_slice(40, seed=k)
    path = write_nifti(tmp_path / "brain.nii.gz", volume)
    data = read_file_bytes(str(path))
    assert scans.is_nifti(data) and not scans.is_dicom(data)
    scan = scans.read_scan(data, name=str(path))
    assert scan.indices == list(range(6, 14)) and scan.kind == "NIfTI"
    assert all(s.shape == (40, 40) for s in scan.slices)


def test_two_dicom_slices_of_one_patient_never_land_in_different_splits(tmp_path):
    """Ten patients, four slices each (different pictures): every patient's slices
    share one duplicate group, so they share one split; the summary counts patients."""
    from engine.data.manifest import build_manifest
    for patient in range(10):
        for index in range(4):
            tumor = patient % 2 == 0
            folder = tmp_path / ("yes" if tumor else "no")
            folder.mkdir(exist_ok=True)
            write_dicom(folder / f"p{patient}_{index}.dcm",
                        head_slice(48, tumor=tumor, seed=100 * patient + index).astype(np.uint8),
                        patient_id=f"PATIENT-{patient}")
    rows, summary = build_manifest(str(tmp_path), (0.6, 0.2, 0.2), seed=3, dedup_distance=-1)
    by_patient: dict[str, set] = {}
    for row in rows:
        by_patient.setdefault(row.patient_key, set()).add((row.split, row.group))
    assert len(by_patient) == 10 and all(len(v) == 1 for v in by_patient.values())
    assert sum(summary["patients"].values()) == 10
    assert all("PATIENT-" not in row.patient_key for row in rows)


def test_identifiers_never_reach_the_run_folder_and_dicom_trains(tmp_path):
    """The bar: Br35H-like slices as DICOM (MR 8-bit and CT 16-bit with Rescale
    Intercept -1024, all carrying a fake name and ID) train for an epoch, and no file
    of the run folder contains any of the fake identifiers."""
    from engine.config import tiny_config
    from engine.training.loop import train_and_evaluate
    data = tmp_path / "data"
    for label, name in ((1, "yes"), (0, "no")):
        (data / name).mkdir(parents=True)
        for index in range(16):
            picture = head_slice(48, tumor=bool(label), seed=1000 * label + index)
            if index % 2:
                write_dicom(data / name / f"s{index}.dcm", picture.astype(np.uint8),
                            patient_id=f"{FAKE_IDENTIFIERS[1]}-{label}-{index}")
            else:
                hu = picture / 255 * 80  # 0..80 HU, inside the brain window
                write_dicom(data / name / f"s{index}.dcm", (hu + 1024).astype(np.uint16), modality="CT",
                            bits=16, intercept=-1024, patient_id=f"{FAKE_IDENTIFIERS[1]}-{label}-{index}")
    folder = tmp_path / "run"
    status = train_and_evaluate(tiny_config(data_dir=str(data), epochs=1, dedup_distance=-1), folder)
    assert status["state"] == "finished", status.get("error")
    manifest = (folder / "manifest.csv").read_text()
    assert "CT" in manifest and "MRI" in manifest  # modality from the tag
    checked = 0
    for path in folder.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for secret in FAKE_IDENTIFIERS:
                assert secret.encode() not in content, f"{secret} found in {path}"
            checked += 1
    assert checked > 10


def test_predict_cli_on_dicom_and_nifti_gives_probabilities_without_identifiers(tmp_path):
    """The shipped model on a Br35H slice written as an MR DICOM, as a CT DICOM in
    HU, and inside a NIfTI volume: probabilities, no identifier in the output."""
    from engine.data.manifest import read_manifest, rows_for_split
    row = next(r for r in rows_for_split(read_manifest(ROOT / "checkpoints" / "manifest.csv"), "test")
               if r.label == 1)
    picture = decode_rgb(read_file_bytes(row.path))[:, :, 0].astype(float)
    mr = write_dicom(tmp_path / "mr.dcm", picture.astype(np.uint8))
    ct = write_dicom(tmp_path / "ct.dcm", (picture / 255 * 80 + 1024).astype(np.uint16), modality="CT",
                     bits=16, intercept=-1024)
    volume = np.zeros(picture.shape[::-1] + (3,), np.float32)
    volume[:, :, 1] = np.flipud(picture).T  # undo the viewer orientation of engine.data.scans
    nifti = write_nifti(tmp_path / "one.nii", volume)
    out = subprocess.run([sys.executable, "-m", "engine.predict", "--json", str(mr), str(ct), str(nifti)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["path"] for r in records] == [str(mr), str(ct), scans.slice_path(str(nifti), 1)]
    assert all(0.0 <= r["probability"] <= 1.0 for r in records)
    assert records[0]["identifiers_withheld"] and not records[2]["identifiers_withheld"]
    for secret in FAKE_IDENTIFIERS:
        assert secret not in out.stdout and secret not in out.stderr
    # The same picture in three containers is seen the same way: MR (percentiles) and
    # the NIfTI (percentiles of non-zero voxels) agree closely.
    assert abs(records[0]["probability"] - records[2]["probability"]) < 0.15


def _jpeg_dicom(tmp_path, pixels):
    import io

    import pydicom
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit
    dataset = pydicom.dcmread(write_dicom(tmp_path / "plain.dcm", pixels))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    dataset.PixelData = encapsulate([buffer.getvalue()])
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    path = tmp_path / "jpeg.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_jpeg_compressed_dicom_decodes_through_the_plugin_and_a_missing_one_is_named(tmp_path, monkeypatch):
    pixels = head_slice(64, tumor=True).astype(np.uint8)
    path = _jpeg_dicom(tmp_path, pixels)
    # Lossy JPEG at quality 95: within a few grey levels of the uncompressed file.
    assert np.abs(gray(path) - gray(tmp_path / "plain.dcm")).mean() < 3
    import pydicom

    def no_decoder(self):
        raise RuntimeError("Unable to decode the pixel data as a (1.2.840.10008.1.2.4.50) 'JPEG Baseline "
                           "(Process 1)' plugin is required: no decoding plugins are available")
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoder))
    with pytest.raises(ImageDecodeError, match="needs a decoder plugin.*pylibjpeg"):
        decode_rgb(path.read_bytes())


def test_ct_is_told_from_mr_by_the_share_of_air_not_by_one_negative_voxel(tmp_path):
    """nibabel's own MR volume (values -610 to 30393, 2 voxels below -500) is MR and
    keeps its contrast; a CT-like volume in HU (air at -1000 around a 30 HU head with a
    bone rim) is CT; an MR volume with interpolation undershoot (a ring of values down
    to -700) is MR."""
    from pathlib import Path

    import nibabel
    mr_file = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    scan = scans.read_scan(mr_file.read_bytes(), name=str(mr_file))
    assert scan.modality == "MRI"
    middle = scan.slices[len(scan.slices) // 2].astype(np.float32)
    assert (middle >= 250).mean() < 0.5, "an MR slice read with the CT window turns white"
    assert middle.std() > 20

    yy, xx = np.mgrid[:64, :64]
    inside = ((yy - 32) ** 2 + (xx - 32) ** 2) <= 24 ** 2
    rim = inside & (((yy - 32) ** 2 + (xx - 32) ** 2) >= 22 ** 2)
    ct = np.where(inside, 30.0, -1000.0)
    ct[rim] = 1000.0
    ct_volume = np.repeat(ct[:, :, None], 10, axis=2).astype(np.float32)
    assert scans.looks_like_ct_in_hu(ct_volume)
    ct_scan = scans.read_scan(write_nifti(tmp_path / "ct.nii", ct_volume).read_bytes(), name="ct.nii")
    assert ct_scan.modality == "CT"

    mr = np.where(inside, 400.0, 0.0)
    ring = inside & (((yy - 32) ** 2 + (xx - 32) ** 2) >= 23 ** 2)
    mr[ring] = -700.0 * (yy[ring] % 2)  # Gibbs-like undershoot at the head's edge
    mr_volume = np.repeat(mr[:, :, None], 10, axis=2).astype(np.float32)
    assert mr_volume.min() < -500 and not scans.looks_like_ct_in_hu(mr_volume)
    assert scans.read_scan(write_nifti(tmp_path / "mr.nii", mr_volume).read_bytes(), name="mr.nii").modality == "MRI"
