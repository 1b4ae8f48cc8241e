"""Class-activation maps from an exported feature map + head weights, and overlays.

numpy + OpenCV only (no torch), so the app can explain an ONNX classifier's prediction.
For a GAP + linear head this equals pytorch-grad-cam's ``GradCAM`` on the last stage:
Grad-CAM weights channel k by the spatial mean of d logit_c / d F_k = W[c, k] / (h w),
a positive constant times W[c, k], which the min-max normalisation removes. The steps
below follow pytorch-grad-cam's order (ReLU, min-max, bilinear resize, min-max again).
"""
from __future__ import annotations

import cv2
import numpy as np


def _minmax(x: np.ndarray) -> np.ndarray:
    x = x - np.min(x)
    return x / (1e-7 + np.max(x))


def cam_from_features(feature_map: np.ndarray, weight: np.ndarray, class_idx: int,
                      size: tuple[int, int] | None = None) -> np.ndarray:
    """Class-activation map of one image.

    Args:
        feature_map: last feature map, shape (Cf, h, w).
        weight: linear head weight, shape (C, Cf).
        class_idx: the class c to explain.
        size: optional output (height, width), e.g. the input image size; bilinear resize.

    Returns:
        float32 map in [0, 1], shape (h, w) or ``size``.
    """
    feature_map = np.asarray(feature_map, dtype=np.float32)
    weight = np.asarray(weight, dtype=np.float32)
    if feature_map.ndim != 3 or weight.ndim != 2 or weight.shape[1] != feature_map.shape[0]:
        raise ValueError(f"feature map (Cf, h, w) and weight (C, Cf) disagree: "
                         f"{feature_map.shape} vs {weight.shape}")
    if not 0 <= int(class_idx) < weight.shape[0]:
        raise ValueError(f"class_idx {class_idx} out of range 0..{weight.shape[0] - 1}")
    cam = np.tensordot(weight[int(class_idx)], feature_map, axes=(0, 0))  # (h, w)
    cam = _minmax(np.maximum(cam, 0)).astype(np.float32)
    if size is not None:
        h, w = int(size[0]), int(size[1])
        cam = cv2.resize(cam, (w, h), interpolation=cv2.INTER_LINEAR)
        cam = _minmax(np.maximum(cam, 0)).astype(np.float32)
    return cam


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a [0, 1] map (jet colours) onto an image.

    Args:
        image: uint8 (H, W) grayscale or (H, W, 3) RGB.
        cam: float map in [0, 1], any (h, w); resized to (H, W).
        alpha: weight of the heat map (0 = image only, 1 = heat map only).

    Returns:
        uint8 RGB overlay, shape (H, W, 3).
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W) or (H, W, 3), got {image.shape}")
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    cam = np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0)
    if cam.shape != (h, w):
        cam = cv2.resize(cam, (w, h), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(np.uint8(255 * cam), cv2.COLORMAP_JET)[:, :, ::-1]  # BGR -> RGB
    out = (1.0 - alpha) * img.astype(np.float32) + alpha * heat.astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)
