import io

import numpy as np
import pytest
from PIL import Image

from engine.data.imageio import ImageDecodeError, decode_rgb, load_for_model


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


def test_head_crop_finds_the_head_ignores_burnt_in_text_and_keeps_the_aspect_ratio():
    from engine.data.imageio import crop_to_head, head_box, prepare_rgb
    rgb = np.zeros((200, 300, 3), np.uint8)
    yy, xx = np.mgrid[:200, :300]
    rgb[((yy - 100) / 60) ** 2 + ((xx - 150) / 90) ** 2 <= 1] = 180  # an elliptic "head"
    rgb[5:8, 5:10] = 255  # a few bright pixels of burnt-in text in the corner (under 2% of a row)
    top, bottom, left, right = head_box(rgb)
    # The ellipse spans rows 40..160 and columns 60..240 (rows and columns with at least
    # 2% bright pixels start a little inside its tips); the margin is 2% per side.
    assert 34 <= top <= 40 and 160 <= bottom <= 166
    assert 52 <= left <= 60 and 240 <= right <= 248
    square = crop_to_head(rgb)
    assert square.shape[0] == square.shape[1] == right - left
    assert prepare_rgb(rgb, 64, crop=True).shape == (64, 64, 3)
    # A blank image is never cropped to a sliver.
    assert head_box(np.zeros((50, 80, 3), np.uint8)) == (0, 50, 0, 80)


def test_training_pipeline_and_inference_prepare_an_image_identically(tmp_path):
    """One transformation everywhere: the tf.data pipeline (training, evaluation) and
    LoadedModel.model_input (prediction, Errors, Label review) give the same pixels."""
    from engine.data import pipeline
    from engine.data.imageio import prepare_rgb
    rgb = np.zeros((90, 140, 3), np.uint8)
    rgb[20:70, 30:120] = np.random.default_rng(0).integers(40, 255, (50, 90, 3), dtype=np.uint8)
    path = tmp_path / "slice.png"
    Image.fromarray(rgb).save(path)
    decoded = pipeline.decoded_dataset([str(path)], [1], 48, cache="none", crop_to_head=True)
    from_pipeline = next(iter(decoded))[0].numpy()
    np.testing.assert_array_equal(from_pipeline, prepare_rgb(rgb, 48, crop=True))
