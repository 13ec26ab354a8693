"""pipeline/extract/images.py: every bad file becomes a reason, every odd but valid one RGB."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import ImageError
from pipeline.extract.images import MISSING, decode_image, fingerprint_file, load_image


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def _noise(w: int = 24, h: int = 16, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _bad(data: bytes) -> str:
    with pytest.raises(ImageError) as e:
        decode_image(data, "src")
    assert e.value.source == "src"
    return e.value.reason


def test_missing_and_directory_are_failures_not_crashes(tmp_path):
    with pytest.raises(ImageError, match="missing file") as e:
        load_image(tmp_path / "nope.jpg")
    assert e.value.source == MISSING
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)
    assert fingerprint_file(tmp_path / "nope.jpg") == MISSING


def test_each_bad_kind_has_its_reason():
    png = _bytes(_noise(), "PNG")
    jpg = _bytes(_noise(), "JPEG")
    assert _bad(b"") == "empty file"
    assert _bad(b"just some text, not pixels").startswith("not an image")
    assert _bad(jpg[: len(jpg) // 2]).startswith("truncated image")
    assert _bad(png[: len(png) // 2]).startswith("truncated image")
    flipped = bytearray(png)
    flipped[len(png) // 2] ^= 0xFF  # inside the compressed pixel data
    assert _bad(bytes(flipped)).startswith("corrupt image")


def test_decompression_bombs_are_refused_warning_and_error_alike():
    # 10000 x 10000 is past MAX_IMAGE_PIXELS (PIL only warns), 14000 x 14000 past twice it (PIL raises)
    for side in (10_000, 14_000):
        assert side * side > Image.MAX_IMAGE_PIXELS
        data = _bytes(Image.new("1", (side, side)), "PNG")  # a few KB on disk
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # and no warning escapes either
            assert _bad(data).startswith("decompression bomb")


def _rgb(data: bytes) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        im = decode_image(data)
    assert im.mode == "RGB"
    return np.asarray(im)


def test_rgba_drops_alpha():
    rgb = np.asarray(_noise())
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(_rgb(_bytes(Image.fromarray(rgba, "RGBA"), "PNG")), rgb)


def test_cmyk_palette_and_transparent_palette():
    out = _rgb(_bytes(_noise().convert("CMYK"), "JPEG"))
    assert out.shape == (16, 24, 3)
    p = _noise().convert("P")
    np.testing.assert_array_equal(_rgb(_bytes(p, "PNG")), np.asarray(p.convert("RGB")))
    t = Image.new("P", (5, 4), 1)
    t.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    assert _rgb(_bytes(t, "PNG", transparency=0))[0, 0].tolist() == [200, 10, 20]


def test_gif_first_frame():
    red, blue = Image.new("RGB", (6, 6), (255, 0, 0)), Image.new("RGB", (6, 6), (0, 0, 255))
    data = _bytes(red, "GIF", save_all=True, append_images=[blue], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    px = _rgb(data)[3, 3]
    assert px[0] > 200 and px[2] < 50


def test_16bit_grey_is_rescaled_not_clipped():
    a = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    im = Image.fromarray(a)
    assert im.mode == "I;16"
    out = _rgb(_bytes(im, "PNG"))
    assert out[0, :, 0].tolist() == [0, 128, 255]
    assert (out[..., 0] == out[..., 2]).all()


def test_exif_rotation_is_applied():
    im = Image.new("RGB", (30, 10), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 5, 10))  # white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    out = _rgb(_bytes(im, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.shape == (30, 10, 3)  # upright: taller than wide
    assert out[:5, :, 0].mean() > 200 and out[-5:, :, 0].mean() < 50  # the stripe is now on top


def test_one_pixel_and_grey_and_bilevel():
    assert _rgb(_bytes(Image.new("RGB", (1, 1), (9, 8, 7)), "PNG")).tolist() == [[[9, 8, 7]]]
    assert _rgb(_bytes(Image.new("L", (3, 2), 100), "PNG"))[0, 0].tolist() == [100] * 3
    assert _rgb(_bytes(Image.new("1", (3, 2), 1), "PNG"))[0, 0].tolist() == [255] * 3
    la = Image.new("LA", (2, 2), (50, 0))
    assert _rgb(_bytes(la, "PNG"))[0, 0].tolist() == [50] * 3


def test_load_image_fingerprints_the_bytes(tmp_path):
    p = tmp_path / "a.png"
    p.write_bytes(_bytes(_noise(seed=1), "PNG"))
    im, fp = load_image(p)
    assert im.size == (24, 16) and fp == fingerprint_file(p)
    p.write_bytes(_bytes(_noise(seed=2), "PNG"))
    assert load_image(p)[1] != fp
