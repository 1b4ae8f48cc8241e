"""A user's image files decoded once into an in-memory pool at the model's input size.

Any mode Pillow reads is accepted (1-bit, gray, gray + alpha, RGB, RGBA, palette, CMYK,
16-bit, float): files are opened, their first frame taken, EXIF orientation applied (as
the app does with uploads, :func:`app.inputs.load_image`), and converted and resized by
the one preprocessing path (:func:`runtime.preprocess.to_uint8`: 16-bit ranges stretched,
transparency flattened). The pool stores uint8 pixels at the model's size, so an epoch
decodes nothing: (N, H, W) for 1 channel, (N, H, W, 3) for 3 (memory: N x H x W x C
bytes, 12 kB per image at 64 x 64 RGB). A file that fails to decode (a truncated JPEG
passes the header check of :func:`training.data.folders.unreadable`) is left out, counted
and logged, never a crash.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from runtime.preprocess import PreprocessSpec, to_uint8
from training.data.fashion_mnist import ArrayDataset
from training.data.folders import FileDataset, report_skipped

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# normalisation of a user's images when the config sets none: ImageNet's statistics (what
# pretrained backbones expect), and their mean over the channels for grayscale data
RGB_MEAN, RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GRAY_MEAN, GRAY_STD = (0.449,), (0.226,)


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """The decoded first frame of ``path``, EXIF orientation applied (file closed)."""
    with Image.open(path) as im:
        if getattr(im, "is_animated", False):
            im.seek(0)
        im.load()
        return ImageOps.exif_transpose(im) or im.copy()


def data_channels(paths: Sequence[str | os.PathLike[str]]) -> int:
    """1 when every file is grayscale by its mode (headers only), else 3: grayscale data
    stays 1-channel, colour data (RGB, RGBA, palette, CMYK, ...) 3."""
    for p in paths:
        try:
            with Image.open(p) as im:
                if im.mode not in GRAY_MODES:
                    return 3
        except Exception:  # noqa: BLE001 - unreadable files are skipped when decoded
            continue
    return 1


def user_spec(size: int, channels: int, mean: Sequence[float] | None,
              std: Sequence[float] | None) -> PreprocessSpec:
    """The preprocessing of a model trained on a user's images: ``size`` x ``size``,
    ``channels``, and ``mean``/``std`` (None: :data:`RGB_MEAN` / :data:`GRAY_MEAN`)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    dm, ds = (GRAY_MEAN, GRAY_STD) if channels == 1 else (RGB_MEAN, RGB_STD)
    m, s = tuple(float(v) for v in (mean or dm)), tuple(float(v) for v in (std or ds))
    if len(m) != channels or len(s) != channels:
        raise ValueError(f"mean and std need {channels} value(s) for {channels}-channel "
                         f"data, got {list(m)} and {list(s)}")
    return PreprocessSpec(size=(int(size), int(size)), channels=channels, mean=m, std=s)


@dataclass
class DecodedPool:
    """Decoded images with their labels and files.

    Attributes:
        data: uint8 images (N, H, W) or (N, H, W, 3) and int64 labels (N,).
        paths: the file of each image.
        skipped: files that could not be decoded (left out).
    """

    data: ArrayDataset
    paths: list[str]
    skipped: tuple[str, ...]


def decode_files(files: FileDataset, spec: PreprocessSpec, where: str = "") -> DecodedPool:
    """Decode ``files`` at ``spec``'s size and channels (see the module docstring)."""
    h, w = spec.size
    shape = (h, w) if spec.channels == 1 else (h, w, 3)
    out = np.zeros((len(files), *shape), dtype=np.uint8)
    keep: list[int] = []
    skipped: list[str] = []
    for i, path in enumerate(files.paths):
        try:
            out[len(keep)] = to_uint8(open_image(path), spec)
        except Exception:  # noqa: BLE001 - a damaged file is skipped, never a crash
            skipped.append(path)
            continue
        keep.append(i)
    report_skipped(where or "decoding", skipped)
    idx = np.asarray(keep, dtype=np.int64)
    return DecodedPool(ArrayDataset(out[:len(keep)], files.labels[idx], files.class_names),
                       [files.paths[i] for i in keep], tuple(skipped))
