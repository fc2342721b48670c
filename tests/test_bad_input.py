"""Bad and odd image files: each gets a clear ImageDecodeError or decodes correctly,
and a fuzz test over random and mutated bytes finds nothing else."""

import io
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine.data.imageio import ImageDecodeError, decode_rgb


def save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding():
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_rgb(png_declaring(30000, 30000))
    assert time.perf_counter() - started < 5
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200, "decoding 900 million pixels would need gigabytes"


def test_exif_rotation_is_honoured():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    out = decode_rgb(save(image, "JPEG", exif=exif.tobytes()))
    assert out.shape == (40, 20, 3)


def test_animated_gif_and_multipage_tiff_use_the_first_frame():
    frames = [Image.new("L", (16, 16), value) for value in (10, 200, 90)]
    gif = save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert decode_rgb(gif)[0, 0, 0] == 10
    tiff = save(frames[0].convert("RGB"), "TIFF", save_all=True, append_images=[f.convert("RGB") for f in frames[1:]])
    assert decode_rgb(tiff)[0, 0, 0] == 10


def test_cmyk_jpeg_and_palette_png_decode():
    assert decode_rgb(save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG")).shape == (16, 16, 3)
    palette = Image.new("P", (16, 16), 3)
    palette.putpalette([0, 0, 0, 10, 10, 10, 20, 20, 20, 255, 0, 0] + [0] * 756)
    assert tuple(decode_rgb(save(palette, "PNG"))[0, 0]) == (255, 0, 0)


def test_tiny_images_are_refused():
    with pytest.raises(ImageDecodeError, match="too small"):
        decode_rgb(save(Image.new("L", (2, 2)), "PNG"))


SEED = save(Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)), "PNG")
JPEG_SEED = save(Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 24, 3), dtype=np.uint8)), "JPEG")


def check(data: bytes) -> None:
    started = time.perf_counter()
    try:
        out = decode_rgb(data)
    except ImageDecodeError:
        pass
    else:
        assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8
    assert time.perf_counter() - started < 5, "decoding must never hang"


def _dicom_seed() -> bytes:
    import tempfile
    from pathlib import Path

    from scan_fixtures import write_dicom
    with tempfile.TemporaryDirectory() as folder:
        pixels = np.random.default_rng(2).integers(0, 4000, (16, 16)).astype(np.uint16)
        return write_dicom(Path(folder) / "seed.dcm", pixels, modality="CT", bits=16,
                           intercept=-1024).read_bytes()


DICOM_SEED = _dicom_seed()
# The default run tries a few hundred inputs per test; `pytest -m fuzz` runs the same
# checks on 10,000 each (README, "Tests").
QUICK, LONG = 300, 10_000


def random_bytes(data):
    check(data)


def mutated_file(seed, flips, cut):
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    check(bytes(data[: max(cut, 8)]))


RANDOM = given(st.binary(max_size=2048))
MUTATED = given(st.sampled_from([SEED, JPEG_SEED, DICOM_SEED]),
                st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=12),
                st.integers(0, 10_000))


def _fuzz(examples):
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])


test_fuzz_random_bytes = _fuzz(QUICK)(RANDOM(random_bytes))
test_fuzz_mutated_files = _fuzz(QUICK)(MUTATED(mutated_file))
test_fuzz_random_bytes_long = pytest.mark.fuzz(_fuzz(LONG)(RANDOM(random_bytes)))
test_fuzz_mutated_files_long = pytest.mark.fuzz(_fuzz(LONG)(MUTATED(mutated_file)))
