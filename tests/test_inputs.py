"""Bad-input suite for image/bag/query validation (no models needed)."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.settings import current as limits
from app.inputs import (InputError, clean_query, display_rgb, load_bag,
                        load_image)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that declares w x h pixels but carries almost no data (bomb-style header)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _rgb(w=64, h=48):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


BAD = {
    "empty file": (b"", "empty file"),
    "random bytes": (bytes(range(256)) * 4, "not an image"),
    "text file": (b"hello, this is not a picture\n" * 10, "not an image"),
    "truncated png": (_png_bytes(_rgb())[:60], "damaged or truncated|could not be read"),
    "truncated jpeg": (_jpeg_bytes(_rgb(200, 200))[:300], "damaged or truncated|could not be read"),
    "1x1 image": (_png_bytes(Image.new("RGB", (1, 1))), "at least"),
    "20000x20000 header": (_png_header_only(20000, 20000), "megapixels|decompression bomb"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_images_get_clear_messages(name):
    data, pattern = BAD[name]
    with pytest.raises(InputError, match=pattern):
        load_image(data)


def test_missing_path_and_none():
    with pytest.raises(InputError, match="not found"):
        load_image("/nonexistent/file.png")
    with pytest.raises(InputError, match="No image"):
        load_image(None)


@pytest.mark.parametrize("make", [
    lambda: Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)),  # 16-bit
    lambda: _rgb().convert("CMYK"),
    lambda: _rgb().convert("L"),
    lambda: _rgb().convert("RGBA"),
    lambda: _rgb().convert("P"),
])
def test_odd_modes_become_rgb(make, tmp_path):
    img = make()
    fmt = "JPEG" if img.mode == "CMYK" else ("TIFF" if img.mode.startswith("I") else "PNG")
    path = tmp_path / f"x.{fmt.lower()}"
    img.save(path, format=fmt)
    arr = load_image(path)
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    assert arr.shape[:2] == (img.height, img.width)


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    arr = load_image(tmp_path / "a.gif")
    assert arr.shape == (40, 40, 3) and arr[0, 0, 0] > 200 and arr[0, 0, 1] < 50


def test_large_photo_downscaled():
    arr = load_image(_png_bytes(_rgb(3000, 1500)))
    assert max(arr.shape[:2]) == limits().max_side and arr.shape[1] == limits().max_side


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=2048))
def test_random_bytes_never_crash(data):
    try:
        arr = load_image(data)
    except InputError as exc:
        assert str(exc)
    else:
        assert arr.dtype == np.uint8 and arr.ndim == 3


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=400))
def test_corrupted_png_tails_never_crash(tail):
    good = _png_bytes(_rgb(32, 32))
    try:
        load_image(good[:50] + tail)
    except InputError as exc:
        assert str(exc)


def test_bags():
    with pytest.raises(InputError, match="empty"):
        load_bag([])
    with pytest.raises(InputError, match="empty"):
        load_bag(None)
    png = _png_bytes(_rgb(28, 28))
    with pytest.raises(InputError, match="limit"):
        load_bag([png] * (limits().max_bag + 1))
    with pytest.raises(InputError, match="Image 2 of the bag"):
        load_bag([png, b"garbage"])
    assert len(load_bag([png, png])) == 2


@pytest.mark.parametrize("text,ok", [
    ("Sneaker", "sneaker"), ("  ankle boot ", "ankle boot"), ("ＢＡＧ", "bag"),
])
def test_query_normalised(text, ok):
    assert clean_query(text) == ok


@pytest.mark.parametrize("text,pattern", [
    ("", "Type a query"), ("   ", "Type a query"), (None, "Type a query"),
    ("x" * 500, "limit"), ("bag\x00", "control"),
])
def test_query_refused(text, pattern):
    with pytest.raises(InputError, match=pattern):
        clean_query(text)


@pytest.mark.parametrize("word,pattern", [("-", "empty"), ("_ -", "empty"), ("qwzxv", "qwzxv")])
def test_query_words_without_vectors_are_input_errors(word, pattern):
    """Punctuation-only or unknown words reach the user as messages, not internal errors."""
    from app.services.qmil import query_vector

    with pytest.raises(InputError, match=pattern):
        query_vector(clean_query(word))


def _transparent_png(path):
    """A light-grey disc on a fully transparent background whose hidden colour is white."""
    rgba = np.zeros((40, 48, 4), np.uint8)
    rgba[..., :3] = 255                          # what a white flattening would show
    yy, xx = np.mgrid[:40, :48]
    disc = (yy - 20) ** 2 + (xx - 24) ** 2 < 12 ** 2
    rgba[disc] = (200, 180, 160, 255)
    rgba[disc & (xx > 24), 3] = 128              # half of it semi-transparent
    Image.fromarray(rgba, "RGBA").save(path)
    return path


@pytest.mark.parametrize("channels", [1, 3])
def test_transparency_is_left_to_the_models_preprocessing(tmp_path, channels):
    """An RGBA upload reaches ``to_input`` with its alpha, so the app's input equals the
    training-time preprocessing of the same file (``FileDataset.load`` + ``to_array``):
    black background for a 1-channel model, white for an RGB one."""
    from runtime.preprocess import FASHION_MNIST, PreprocessSpec, normalize, to_array, to_input
    from training.data.folders import FileDataset

    path = _transparent_png(tmp_path / "t.png")
    arr = load_image(path)
    assert arr.shape == (40, 48, 4)               # alpha kept
    spec = FASHION_MNIST if channels == 1 else PreprocessSpec(
        size=(32, 32), channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    served = to_input([arr], spec)
    train = FileDataset([str(path)], np.zeros(1, np.int64), ("x",))
    trained = normalize(to_array(train.load(0), spec)[None], spec)
    np.testing.assert_array_equal(served, trained)
    corner = served[0, :, 0, 0] * np.asarray(spec.std) + np.asarray(spec.mean)
    np.testing.assert_allclose(corner, 0.0 if channels == 1 else 1.0, atol=1e-6)
    if channels == 1:  # the old flattening on white gave a white background instead
        white = to_input([display_rgb(arr)], spec)
        assert not np.allclose(white, trained)


def test_display_rgb_flattens_on_white_and_opaque_rgba_is_rgb(tmp_path):
    """What is shown (and what face detection sees) is the white flattening that the RGB
    models' preprocessing applies; an opaque RGBA upload is plain RGB."""
    from runtime.preprocess import to_pil

    arr = load_image(_transparent_png(tmp_path / "t.png"))
    shown = display_rgb(arr)
    assert shown.shape == (40, 48, 3) and tuple(shown[0, 0]) == (255, 255, 255)
    assert tuple(shown[20, 18]) == (200, 180, 160)
    np.testing.assert_array_equal(shown, np.asarray(to_pil(arr, channels=3)))
    rgb = _rgb()
    opaque = load_image(_png_bytes(rgb.convert("RGBA")))  # alpha 255 everywhere
    np.testing.assert_array_equal(opaque, np.asarray(rgb))
    bag = load_bag([_png_bytes(Image.open(tmp_path / "t.png"))])
    assert bag[0].shape == (40, 48, 4)
