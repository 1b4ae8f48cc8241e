"""The one preprocessing function, shared by training, export and serving.

Training datasets, the ONNX parity tests and the app all call :func:`to_input`, so the
pixels a model sees at serving time are prepared exactly as during training. numpy and
Pillow only (no torch), so the app can import it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class PreprocessSpec:
    """How raw pixels become a model input.

    Attributes:
        size: (height, width) the image is resized to.
        channels: 1 (grayscale) or 3 (RGB).
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided by.
    """

    size: tuple[int, int] = (28, 28)
    channels: int = 1
    mean: tuple[float, ...] = field(default=(0.2860,))
    std: tuple[float, ...] = field(default=(0.3530,))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessSpec":
        return cls(
            size=tuple(int(s) for s in d["size"]),  # type: ignore[arg-type]
            channels=int(d["channels"]),
            mean=tuple(float(m) for m in d["mean"]),
            std=tuple(float(s) for s in d["std"]),
        )


FASHION_MNIST = PreprocessSpec()
IMAGENET_RGB = PreprocessSpec(size=(224, 224), channels=3, mean=(0.485, 0.456, 0.406),
                              std=(0.229, 0.224, 0.225))


def to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit or 32-bit image (modes ``I;16*``, ``I``, ``F``) as 8-bit mode L, its value
    range stretched to 0..255 (Pillow's ``convert("L")`` would clip 16-bit values at 255).
    The app decodes uploads with it too (:func:`app.inputs.load_image`), so training files
    and uploads get the same pixels. Other modes are returned unchanged."""
    if not (image.mode.startswith("I") or image.mode == "F"):
        return image
    arr = np.nan_to_num(np.asarray(image, dtype=np.float64))
    lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
    return Image.fromarray(((arr - lo) / (hi - lo + 1e-12) * 255.0).astype(np.uint8))


def to_pil(image: np.ndarray | Image.Image, channels: int) -> Image.Image:
    """Convert an array (H, W) / (H, W, C) uint8 or a PIL image (any mode: gray, RGB, RGBA,
    palette, 16-bit) to mode L or RGB; transparency is flattened, 16-bit ranges stretched
    (:func:`to_8bit`)."""
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        image = Image.fromarray(arr)
    image = to_8bit(image)
    mode = "L" if channels == 1 else "RGB"
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        bg = Image.new("RGBA", image.size, (0, 0, 0, 255) if channels == 1 else (255, 255, 255, 255))
        image = Image.alpha_composite(bg, image)
    return image.convert(mode)


def to_uint8(image: np.ndarray | Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Resize and convert one image to the spec's size and channels: uint8 (H, W) for
    1 channel, (H, W, 3) for 3 (what :func:`to_array` scales; training pools store it)."""
    pil = to_pil(image, spec.channels)
    h, w = spec.size
    if pil.size != (w, h):
        pil = pil.resize((w, h), Image.BILINEAR)
    return np.asarray(pil, dtype=np.uint8)


def to_array(image: np.ndarray | Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Resize and convert one image; returns float32 (C, H, W) in [0, 1], not normalised."""
    arr = to_uint8(image, spec).astype(np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


def normalize(x: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Normalise float arrays in [0, 1] of shape (..., C, H, W) with the spec's mean/std."""
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(-1, 1, 1)
    return ((x - mean) / std).astype(np.float32)


def to_input(images: Sequence[np.ndarray | Image.Image] | np.ndarray | Image.Image,
             spec: PreprocessSpec) -> np.ndarray:
    """Prepare images for a model.

    Args:
        images: one image or a sequence of images (uint8 arrays (H, W[, C]) or PIL images).
        spec: the model's preprocessing.

    Returns:
        float32 array of shape (N, C, H, W), normalised.
    """
    if isinstance(images, (Image.Image, np.ndarray)) and not (
        isinstance(images, np.ndarray) and images.ndim == 4
    ):
        images = [images]
    batch = np.stack([to_array(im, spec) for im in images])
    return normalize(batch, spec)
