"""Face augmentations of thesis section 5.4 ("Data augmentation"), configurable in YAML.

* Weak: horizontal flip, colour jitter, random crop (resized back), optional Gaussian blur.
* Strong: a self-blended pseudo-fake in the spirit of SBI (Shiohara & Yamasaki, 2022): from
  a real face, a slightly transformed copy of the same face (colour, sharpness, a small
  shift/scale) is blended back through a soft mask built from *perturbed* landmarks, so the
  result is a realistic-looking face with a blending boundary. In component mode the mask
  covers one component region (eye, nose or lip) and the label becomes that component; in
  binary mode the mask covers the inner face and the label is "fake".

Images are float32 (3, H, W) in [0, 1] (before ``runtime.preprocess.normalize``); labels are
5-slot int64 sequences; landmarks (5, 2) x, y in pixels (eyes, nose tip, mouth corners).
Randomness comes from numpy's global generator, which the training engine seeds and saves
in checkpoints (exact resume).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

_RNG = np.random  # the global RandomState (seeded/restored by the engine)
REGION_LABEL = {"nose": 1, "eye": 2, "lip": 4, "face": 1}


@dataclass(frozen=True)
class WeakAug:
    """Weak augmentation.

    Attributes:
        hflip: probability of a horizontal flip.
        brightness, contrast, saturation: jitter strengths (factor in [1 - s, 1 + s]).
        crop_scale: smallest side fraction of the random crop (1.0 = no crop).
        blur_p: probability of a Gaussian blur (sigma in ``blur_sigma``).
    """

    hflip: float
    brightness: float
    contrast: float
    saturation: float
    crop_scale: float
    blur_p: float
    blur_sigma: tuple[float, float]

    def __call__(self, img: np.ndarray, rng: Any = _RNG) -> np.ndarray:
        """Shape: (3, H, W) -> (3, H, W)."""
        c, h, w = img.shape
        if rng.random() < self.hflip:
            img = img[:, :, ::-1]
        if self.crop_scale < 1.0:
            s = rng.uniform(self.crop_scale, 1.0)
            ch, cw = max(2, int(round(h * s))), max(2, int(round(w * s)))
            y, x = rng.randint(0, h - ch + 1), rng.randint(0, w - cw + 1)
            crop = np.ascontiguousarray(img[:, y:y + ch, x:x + cw].transpose(1, 2, 0))
            img = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
        img = jitter(img, rng, self.brightness, self.contrast, self.saturation)
        if self.blur_p and rng.random() < self.blur_p:
            sigma = rng.uniform(*self.blur_sigma)
            img = cv2.GaussianBlur(np.ascontiguousarray(img.transpose(1, 2, 0)), (0, 0),
                                   sigma).transpose(2, 0, 1)
        return np.clip(img, 0, 1).astype(np.float32)


def jitter(img: np.ndarray, rng: Any, brightness: float, contrast: float, saturation: float
           ) -> np.ndarray:
    """Brightness, contrast and saturation jitter. Shape (3, H, W) -> (3, H, W)."""
    img = img * rng.uniform(1 - brightness, 1 + brightness)
    mean = img.mean()
    img = (img - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean
    gray = img.mean(axis=0, keepdims=True)
    return (img - gray) * rng.uniform(1 - saturation, 1 + saturation) + gray


def region_mask(region: str, lm: np.ndarray, h: int, w: int, rng: Any = _RNG) -> np.ndarray:
    """A binary mask (H, W) float32 of a face region built from landmarks (5, 2)."""
    m = np.zeros((h, w), np.float32)
    eye_d = float(np.linalg.norm(lm[1] - lm[0])) or w * 0.3
    if region == "eye":
        for p in lm[:2]:
            ax = (int(eye_d * rng.uniform(0.22, 0.32)), int(eye_d * rng.uniform(0.12, 0.2)))
            cv2.ellipse(m, (int(p[0]), int(p[1])), ax, 0, 0, 360, 1.0, -1)
    elif region == "nose":
        mid = lm[:2].mean(0)
        hw = eye_d * rng.uniform(0.15, 0.25)
        pts = np.array([[mid[0] - hw * 0.5, mid[1]], [mid[0] + hw * 0.5, mid[1]],
                        [lm[2][0] + hw, lm[2][1] + eye_d * 0.08],
                        [lm[2][0] - hw, lm[2][1] + eye_d * 0.08]], np.int32)
        cv2.fillPoly(m, [pts], 1.0)
    elif region == "lip":
        c = lm[3:].mean(0)
        half = float(np.linalg.norm(lm[4] - lm[3])) / 2
        cv2.ellipse(m, (int(c[0]), int(c[1])), (int(half * rng.uniform(1.1, 1.4)),
                                                  int(eye_d * rng.uniform(0.12, 0.2))), 0, 0, 360, 1.0, -1)
    elif region == "face":
        c = lm.mean(0)
        hull = cv2.convexHull(((lm - c) * rng.uniform(1.3, 1.7) + c).astype(np.int32))
        cv2.fillConvexPoly(m, hull, 1.0)
    else:
        raise ValueError(f"unknown region {region!r} (eye, nose, lip, face)")
    return m


@dataclass(frozen=True)
class StrongAug:
    """SBI-style self-blended pseudo-fakes from real faces.

    Attributes:
        p: probability of turning a real sample into a pseudo-fake.
        regions: regions to choose from (component mode: eye, nose, lip; binary: face).
        landmark_jitter: std of the landmark perturbation, as a fraction of the image side.
        shift: largest translation of the source copy (fraction of the side).
        blend: (min, max) blend ratio inside the mask.
    """

    p: float
    regions: tuple[str, ...]
    landmark_jitter: float
    shift: float
    blend: tuple[float, float]

    def __call__(self, img: np.ndarray, label: np.ndarray, lm: np.ndarray, rng: Any = _RNG
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Shapes: img (3, H, W), label (5,), lm (5, 2) -> (img, label)."""
        if label.any() or not self.regions or rng.random() >= self.p:
            return img, label
        return self_blend(img, lm, str(self.regions[rng.randint(len(self.regions))]), rng,
                          self.landmark_jitter, self.shift, self.blend)


def self_blend(img: np.ndarray, lm: np.ndarray, region: str, rng: Any = _RNG,
               landmark_jitter: float = 0.02, shift: float = 0.02,
               blend: tuple[float, float] = (0.6, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Blend a transformed copy of ``img`` into ``region``; returns (img, 5-slot label)."""
    c, h, w = img.shape
    hwc = np.ascontiguousarray(img.transpose(1, 2, 0))
    src = jitter(hwc.transpose(2, 0, 1), rng, 0.15, 0.15, 0.3).transpose(1, 2, 0)
    src = src + rng.uniform(-0.06, 0.06, size=(1, 1, 3))
    if rng.random() < 0.5:
        blur = cv2.GaussianBlur(np.ascontiguousarray(src, dtype=np.float32), (0, 0), 1.0)
        src = src + rng.uniform(-0.8, 0.8) * (src - blur)  # sharpen or soften
    s = 1 + rng.uniform(-shift, shift)
    mat = np.array([[s, 0, rng.uniform(-shift, shift) * w], [0, s, rng.uniform(-shift, shift) * h]],
                   np.float32)
    src = cv2.warpAffine(np.ascontiguousarray(src, dtype=np.float32), mat, (w, h),
                         borderMode=cv2.BORDER_REFLECT)
    lm_p = lm + rng.normal(0, landmark_jitter * max(h, w), lm.shape)
    mask = region_mask(region, lm_p, h, w, rng)
    mask = cv2.GaussianBlur(mask, (0, 0), rng.uniform(0.5, 2.0) * max(h, w) / 64)
    mask = (mask * rng.uniform(*blend))[..., None]
    out = hwc * (1 - mask) + src * mask
    label = np.zeros(5, np.int64)
    label[0] = REGION_LABEL[region]
    return np.clip(out, 0, 1).transpose(2, 0, 1).astype(np.float32), label


@dataclass(frozen=True)
class FaceAugment:
    """Strong (on real samples, first) then weak augmentation, from a YAML section.

    ``FaceAugment.from_config(cfg["aug"], task)`` with the validated ``aug`` section of
    ``training/configs/seqfake.yaml`` (every key present: no defaults here);
    ``enabled: false`` in a section switches it off.
    """

    weak: WeakAug | None
    strong: StrongAug | None

    @classmethod
    def from_config(cls, cfg: dict[str, Any], task: str) -> "FaceAugment":
        w, s = dict(cfg["weak"]), dict(cfg["strong"])
        weak = None if not w.pop("enabled") else WeakAug(**{
            k: tuple(v) if isinstance(v, list) else v for k, v in w.items()})
        strong = None
        if s.pop("enabled") and task != "attributes":
            if task == "binary":  # one class: a pseudo-fake of any region is "fake"
                s["regions"] = ["face"]
            strong = StrongAug(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.items()})
        return cls(weak, strong)

    def __call__(self, img: np.ndarray, label: np.ndarray, lm: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        if self.strong is not None:
            img, label = self.strong(img, label, lm)
        if self.weak is not None:
            img = self.weak(img)
        return img, label
