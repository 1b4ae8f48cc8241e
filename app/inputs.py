"""Validation and safe decoding of everything a user can upload or type.

Every problem becomes an :class:`InputError` whose message is shown as-is in the UI and
printed by the CLI. Images are decoded with Pillow under size limits: the file size and
the pixel count from the header are checked *before* decoding (a decompression bomb is
refused), animated images give their first frame, 16-bit / CMYK / palette images are
converted, EXIF orientation is applied, and large photos are downscaled. The limits are
the serving settings in force (:mod:`app.settings`, defaults in ``app/serve.yaml``).

Transparency is kept (an RGBA array) and left to the model's own preprocessing
(:func:`runtime.preprocess.to_input`), which composites it as training did: on black for
the 1-channel models, on white for the RGB ones. :func:`display_rgb` flattens it for
showing (and for RGB-only steps such as face detection).
"""
from __future__ import annotations

import contextlib
import contextvars
import io
import os
import time
import unicodedata
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.settings import current as limits  # the limits in force (app/serve.yaml, flags, env)
from runtime.preprocess import to_8bit


# what a folder of images is read for (batch analysis, a qMIL bag folder)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class InputError(ValueError):
    """A user input that cannot be processed; the message is meant for the user."""


_CLI_REQUEST: contextvars.ContextVar[bool] = contextvars.ContextVar("cli_request", default=False)


@contextlib.contextmanager
def cli_requests() -> Iterator[None]:
    """Within it, :func:`option_hint` names the CLI's flags (``python -m app.cli``)."""
    token = _CLI_REQUEST.set(True)
    try:
        yield
    finally:
        _CLI_REQUEST.reset(token)


def option_hint(checkbox: str, flag: str) -> str:
    """How to turn an option on, in the words of the caller's surface: the page's checkbox
    ("tick 'Frames are face crops'") or, under :func:`cli_requests`, the flag ("pass
    --crop")."""
    return f"pass {flag}" if _CLI_REQUEST.get() else f"tick '{checkbox}'"


def _read_settled(path: Path, tries: int = 5, wait: float = 0.05) -> bytes:
    """Read a file; if it is empty and was modified in the last two seconds, wait for the
    writer. Gradio's upload cache stores byte-identical uploads under one path, so two
    concurrent uploads of the same file can make one request see it mid-write."""
    data = path.read_bytes()
    for _ in range(tries):
        if data or time.time() - path.stat().st_mtime > 2.0:
            break
        time.sleep(wait)
        data = path.read_bytes()
    return data


def _open(source: Any) -> tuple[Image.Image, str]:
    if source is None:
        raise InputError("No image was given. Upload an image file (PNG, JPEG, WebP, BMP, GIF).")
    if isinstance(source, Image.Image):
        return source, "image"
    if isinstance(source, np.ndarray):
        if source.size == 0:
            raise InputError("The image is empty (zero pixels).")
        arr = source
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        return Image.fromarray(arr), "array"
    if isinstance(source, (bytes, bytearray)):
        data, name = bytes(source), "upload"
    else:
        path = Path(os.fspath(source))
        name = path.name
        if path.is_dir():
            raise InputError(f"{name} is a folder, not an image file (give one image; a bag "
                             f"query takes a folder with --bag)")
        if not path.is_file():
            raise InputError(f"File not found: {name}")
        size = path.stat().st_size
        if size > limits().max_upload_bytes:
            raise InputError(f"{name} is {size / 2**20:.1f} MB; the limit is "
                             f"{limits().max_upload_mb:g} MB.")
        data = _read_settled(path)
    if len(data) == 0:
        raise InputError(f"{name} is an empty file (0 bytes), not an image.")
    if len(data) > limits().max_upload_bytes:
        raise InputError(f"{name} is larger than {limits().max_upload_mb:g} MB.")
    max_pixels = limits().max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:  # from the header, before any decoding
                raise Image.DecompressionBombError(f"{w * h} pixels")
    except (UnidentifiedImageError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise InputError(f"{name} is not an image Pillow can read (PNG, JPEG, WebP, BMP, "
                             f"GIF, TIFF).") from exc
        raise InputError(f"{name} declares too many pixels (decompression bomb?); the limit "
                         f"is {max_pixels / 1e6:.0f} megapixels.") from exc
    except Exception as exc:  # malformed headers raise assorted errors
        raise InputError(f"{name} could not be read as an image: {exc}") from exc
    return img, name


def load_image(source: Any, max_side: int | None = None, min_side: int | None = None
               ) -> np.ndarray:
    """Decode an upload into an RGB uint8 array (H, W, 3) within the size limits; an image
    with transparent pixels gives RGBA (H, W, 4), its alpha left to the model's
    preprocessing (:func:`runtime.preprocess.to_input`; :func:`display_rgb` for showing it).

    Args:
        source: a path, bytes, a PIL image or a numpy array.
        max_side: longer side after downscaling (None: the ``max_side`` setting).
        min_side: smaller images are refused (None: the ``min_side`` setting).

    Raises:
        InputError: with a message for the user.
    """
    max_side = limits().max_side if max_side is None else max_side
    min_side = limits().min_side if min_side is None else min_side
    img, name = _open(source)
    w, h = img.size
    if w * h > limits().max_pixels:
        raise InputError(f"{name} is {w} x {h} pixels; the limit is "
                         f"{limits().max_pixels / 1e6:.0f} megapixels.")
    if min(w, h) < min_side:
        raise InputError(f"{name} is only {w} x {h} pixels; images must be at least "
                         f"{min_side} x {min_side}.")
    try:
        if getattr(img, "is_animated", False):
            img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img) or img
        img = to_8bit(img)  # 16-bit / float: range stretched, as training files are
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
            if img.getchannel("A").getextrema()[0] == 255:  # opaque: nothing to composite
                img = img.convert("RGB")
            # else: kept; the model's preprocessing (to_input) composites it as in training
        else:
            img = img.convert("RGB")
    except InputError:
        raise
    except Exception as exc:  # truncated data is found while decoding
        raise InputError(f"{name} is damaged or truncated and could not be decoded ({exc}).") from exc
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8).copy()


def display_rgb(image: np.ndarray) -> np.ndarray:
    """An image from :func:`load_image` as RGB uint8 (H, W, 3) for showing: transparency
    flattened on white, as the RGB models' preprocessing does (:func:`runtime.preprocess.to_pil`).
    RGB arrays are returned as they are."""
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    img = Image.fromarray(image)
    if img.mode in ("RGBA", "LA"):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def load_bag(sources: list[Any] | None, max_bag: int | None = None) -> list[np.ndarray]:
    """Decode a bag of images (RGB, or RGBA where transparent, as :func:`load_image`); an
    empty bag or one over ``max_bag`` (None: the ``max_bag`` setting) is refused."""
    max_bag = limits().max_bag if max_bag is None else max_bag
    sources = [s for s in (sources or []) if s is not None]
    if not sources:
        raise InputError("The bag is empty: upload at least one image (or a video).")
    if len(sources) > max_bag:
        raise InputError(f"The bag has {len(sources)} images; the limit is {max_bag}.")
    images = []
    for i, src in enumerate(sources):
        try:
            images.append(load_image(src, min_side=8))
        except InputError as exc:
            raise InputError(f"Image {i + 1} of the bag: {exc}") from exc
    return images


def clean_query(text: Any) -> str:
    """Normalise a typed query word (NFKC, trimmed, lower-case); refuse empty/over-long ones."""
    if text is None or not str(text).strip():
        raise InputError("Type a query word, for example 'sneaker' or 'bag'.")
    text = unicodedata.normalize("NFKC", str(text)).strip().lower()
    if len(text) > limits().max_query_chars:
        raise InputError(f"The query is {len(text)} characters long; the limit is "
                         f"{limits().max_query_chars}.")
    if any(unicodedata.category(c).startswith("C") for c in text):
        raise InputError("The query contains control characters; type a plain word.")
    return text
