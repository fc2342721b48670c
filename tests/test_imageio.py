import io

import numpy as np
import pytest
from PIL import Image

from engine.imageio import ImageDecodeError, decode_rgb, load_for_model


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "TIFF"])
def test_common_formats_decode_to_rgb(fmt):
    rgb = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    out = decode_rgb(encode(Image.fromarray(rgb), fmt))
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    if fmt != "JPEG":
        np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "1", "LA"])
def test_modes_become_rgb(mode):
    image = Image.new("RGB", (20, 24), (200, 100, 50)).convert(mode)
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    out = decode_rgb(encode(image, fmt))
    assert out.shape == (24, 20, 3)


def test_sixteen_bit_png_is_stretched_not_clipped():
    ramp = np.linspace(1000, 3000, 32 * 32).reshape(32, 32).astype(np.uint16)
    out = decode_rgb(encode(Image.fromarray(ramp), "PNG"))
    assert out.min() == 0 and out.max() == 255
    assert np.all(out[..., 0] == out[..., 1])


def test_type_comes_from_content_not_extension(tmp_path, png_bytes):
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes(png_bytes)
    assert decode_rgb(path.read_bytes()).shape == (48, 48, 3)


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"hello, I am text", "not a recognised image"),
    (b"%PDF-1.4\n%...", "not a recognised image"),
])
def test_bad_bytes_raise_clear_error(data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decode_rgb(data)


def test_truncated_jpeg_raises_clear_error():
    data = encode(Image.fromarray(np.full((64, 64, 3), 120, np.uint8)), "JPEG")
    with pytest.raises(ImageDecodeError):
        decode_rgb(data[: len(data) // 3])


def test_model_input_is_224_float_in_unit_range(png_bytes):
    image = load_for_model(png_bytes, 224)
    assert image.shape == (224, 224, 3) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
