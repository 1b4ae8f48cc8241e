"""SimCLR augmentations for small grayscale images (28-32 px), batched in torch.

Two independent views per image: random resized crop, horizontal flip, and (with
probability ``jitter_p``) brightness/contrast jitter; no blur (at 28 px it erases the
object). The views are float in [0, 1]; :func:`two_views` then applies the shared
:func:`runtime.preprocess.normalize`, so training and serving normalise identically.

All randomness comes from torch's global generator (or the one passed), which the
training engine seeds and checkpoints, so augmented batches are reproducible on resume.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from runtime.preprocess import PreprocessSpec, normalize


@dataclass(frozen=True)
class AugConfig:
    """Augmentation strengths.

    Attributes:
        crop_scale: (min, max) area fraction kept by the random resized crop.
        crop_ratio: (min, max) aspect ratio of the crop.
        flip_p: probability of a horizontal flip.
        brightness: brightness factor drawn from [1 - b, 1 + b].
        contrast: contrast factor drawn from [1 - c, 1 + c].
        jitter_p: probability of applying brightness/contrast jitter.
        channel_shuffle_p: probability of a random permutation of a colour image's RGB
            channels (a hue change: a tint is then no shortcut between two views).
        gray_p: probability of turning a colour view gray.

    No defaults: the values come from the ``aug`` section of ``training/configs/dcl.yaml``.
    """

    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    flip_p: float
    brightness: float
    contrast: float
    jitter_p: float
    channel_shuffle_p: float
    gray_p: float

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "AugConfig":
        d = dict(d or {})
        d.pop("user_data", None)  # a config section's overlay for a user's images
        for key in ("crop_scale", "crop_ratio"):
            if key in d:
                d[key] = tuple(float(v) for v in d[key])
        return cls(**d)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def augment(x: torch.Tensor, cfg: AugConfig,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """One random view of each image.

    Args:
        x: images in [0, 1]. Shape: (B, C, H, W), float.
        cfg: augmentation strengths.
        generator: torch generator (default: the global one).

    Returns:
        Augmented images in [0, 1]. Shape: (B, C, H, W).
    """
    b = x.shape[0]
    # random resized crop + flip as one affine sampling grid (normalised coordinates)
    area = _uniform(b, *cfg.crop_scale, generator)
    log_r = _uniform(b, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), generator)
    ratio = torch.exp(log_r)
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width as a fraction of the image
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (2 * torch.rand(b, generator=generator) - 1) * (1 - w)
    cy = (2 * torch.rand(b, generator=generator) - 1) * (1 - h)
    flip = torch.where(torch.rand(b, generator=generator) < cfg.flip_p, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    theta = theta.to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if out.shape[1] == 3:  # colour: no random numbers drawn where both are off
        out = _colour(out, cfg, generator)
    # brightness / contrast jitter
    apply = (torch.rand(b, generator=generator) < cfg.jitter_p).to(x.device, x.dtype)
    bright = _uniform(b, 1 - cfg.brightness, 1 + cfg.brightness, generator).to(x.device, x.dtype)
    contr = _uniform(b, 1 - cfg.contrast, 1 + cfg.contrast, generator).to(x.device, x.dtype)
    bright = 1 + apply * (bright - 1)
    contr = 1 + apply * (contr - 1)
    out = out * bright.view(b, 1, 1, 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contr.view(b, 1, 1, 1) + mean
    return out.clamp(0.0, 1.0)


def _colour(x: torch.Tensor, cfg: AugConfig, generator: torch.Generator | None
            ) -> torch.Tensor:
    """Colour views (B, 3, H, W): RGB channels permuted with ``channel_shuffle_p``, then
    gray (ITU-R BT.601 luma) with ``gray_p``."""
    b = x.shape[0]
    if cfg.channel_shuffle_p > 0:
        perm = torch.stack([torch.randperm(3, generator=generator) for _ in range(b)])
        keep = torch.rand(b, generator=generator) >= cfg.channel_shuffle_p
        perm[keep] = torch.arange(3)
        x = x.gather(1, perm.to(x.device).view(b, 3, 1, 1).expand_as(x))
    if cfg.gray_p > 0:
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
        pick = (torch.rand(b, generator=generator) < cfg.gray_p).to(x.device).view(b, 1, 1, 1)
        x = torch.where(pick, gray, x)
    return x


def uint8_to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) or (B, H, W, C) -> float (B, C, H, W) in [0, 1]."""
    x = images.float() / 255.0
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)


def two_views(images: torch.Tensor, spec: PreprocessSpec, cfg: AugConfig,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented, normalised views of a batch.

    Args:
        images: uint8 images. Shape: (B, H, W) or (B, H, W, C), H x W = ``spec.size``.
        spec: the model's preprocessing (mean/std via :func:`runtime.preprocess.normalize`).
        cfg: augmentation strengths.

    Returns:
        Two float tensors of shape (B, C, H, W), normalised.
    """
    x = uint8_to_unit(images)
    if tuple(x.shape[-2:]) != tuple(spec.size):
        x = F.interpolate(x, size=tuple(spec.size), mode="bilinear", align_corners=False)
    views = []
    for _ in range(2):
        v = augment(x, cfg, generator)
        views.append(torch.from_numpy(normalize(v.numpy(), spec)))
    return views[0], views[1]
