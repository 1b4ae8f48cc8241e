"""Rendering of the generated faces (:mod:`training.data.faces_synth`): a face's parameters
(:mod:`training.data.faces_params`) drawn over a background, the region masks and boxes of
the five manipulations of a task, and the backgrounds (two-colour gradients or tinted crops
of scikit-image's sample images; train/val and test use disjoint images).

All drawing is in a 256 x 256 frame, float32 RGB 0..255.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from training.data import faces_attrs
from training.data.faces_attrs import _pts
from training.data.faces_params import COMPONENTS, geometry

# Background images from scikit-image that ship inside the package; disjoint per split.
_BG_IMAGES = {"train": ("brick", "grass", "coffee", "rocket", "camera", "hubble_deep_field"),
              "val": ("brick", "grass", "coffee", "rocket", "camera", "hubble_deep_field"),
              "test": ("gravel", "chelsea", "moon", "immunohistochemistry", "cat")}


def _hair_polygon(face: dict[str, Any], g: dict[str, Any]) -> np.ndarray:
    """The hair region above/around the face as a polygon (256 frame)."""
    cx, cy, fa, fb, h = face["cx"], face["cy"], face["fa"], face["fb"], face["hair"]
    top = cy - fb - h["vol"]
    line = g["hairline"]
    pts = []
    # outer contour: from the left side down to the ears, over the top to the right side
    side_y = cy + fb * (h["side"] - 0.3)
    for t in np.linspace(np.pi, 2 * np.pi, 24):
        pts.append((cx + (fa + h["vol"]) * np.cos(t), min(side_y, cy + (cy - top) * np.sin(t))))
    pts.append((cx + fa + h["vol"] * 0.4, side_y))
    pts.append((cx + fa * 0.92, side_y))
    # inner contour (hairline) back to the left, with a parting
    for t in np.linspace(0, 1, 16):
        x = cx + fa * 0.92 - t * 2 * fa * 0.92
        bump = -6 * np.exp(-((x - cx - h["part"]) / 10) ** 2)
        y = line + bump + 10 * (abs(x - cx) / fa) ** 2 * (1 - h["side"])
        y = y if abs(x - cx) < fa * 0.75 else min(side_y, y + (abs(x - cx) - fa * 0.75) * 2.5)
        pts.append((x, y))
    pts.append((cx - fa * 0.92, side_y))
    pts.append((cx - fa - h["vol"] * 0.4, side_y))
    return _pts(pts)


def noise_field(seed: int, shape: tuple[int, int], cell: int, channels: int = 1) -> np.ndarray:
    """Smooth random noise (mean 0, std ~1) with features about ``cell`` pixels wide."""
    r = np.random.default_rng(seed)
    small = r.standard_normal((shape[0] // cell + 2, shape[1] // cell + 2, channels)).astype(np.float32)
    big = cv2.resize(small, (shape[1] + 2 * cell, shape[0] + 2 * cell), interpolation=cv2.INTER_CUBIC)
    big = big.reshape(big.shape[0], big.shape[1], channels)[cell:cell + shape[0], cell:cell + shape[1]]
    return big / max(1e-6, float(big.std()))


def render_face(face: dict[str, Any], background: np.ndarray) -> np.ndarray:
    """Draw ``face`` over ``background`` (float32 (256, 256, 3), 0..255); returns float32."""
    img = background.astype(np.float32).copy()
    g = geometry(face)
    cx, cy, fa, fb = face["cx"], face["cy"], face["fa"], face["fb"]
    hair_poly = _hair_polygon(face, g)
    hair_col = tuple(float(c) for c in face["hair"]["color"])
    # back hair (behind the face): the outer shape
    cv2.fillPoly(img, [hair_poly], hair_col, cv2.LINE_AA, shift=4)
    # face + neck
    skin = tuple(float(c) for c in face["skin"])
    cv2.rectangle(img, (int(cx - fa * 0.45), int(cy + fb * 0.6)), (int(cx + fa * 0.45), 256),
                  tuple(c * 0.85 for c in skin), -1, cv2.LINE_AA)
    cv2.ellipse(img, _pts([(cx, cy)])[0], (int(fa * 16), int(fb * 16)), 0, 0, 360, skin, -1,
                cv2.LINE_AA, shift=4)
    # front hair (fringe down to the hairline)
    mask = np.zeros(img.shape[:2], np.float32)
    cv2.fillPoly(mask, [hair_poly], 1.0, cv2.LINE_AA, shift=4)
    img = img * (1 - mask[..., None]) + mask[..., None] * np.array(hair_col, np.float32)
    attrs = face.get("attrs")
    if attrs is not None:  # age lines and beard (attributes variant)
        img = faces_attrs.draw_under_features(img, face, g)
    # eyebrows
    b = face["eyebrow"]
    bcol = tuple(float(c) for c in b["color"])
    for side, (ex, _) in zip((-1, 1), g["eyes"]):
        xs = np.linspace(-b["half"], b["half"], 9)
        pts = [(ex + x, g["brow_y"] - b["arch"] * (1 - (x / b["half"]) ** 2) + side * b["tilt"] * x / b["half"])
               for x in xs]
        cv2.polylines(img, [_pts(pts)], False, bcol, int(round(b["thick"])), cv2.LINE_AA, shift=4)
    # eyes
    e = face["eye"]
    for ex, ey in g["eyes"]:
        c = _pts([(ex, ey)])[0]
        cv2.ellipse(img, c, (int(e["rx"] * 16), int(e["ry"] * 16)), 0, 0, 360, (240, 240, 235), -1,
                    cv2.LINE_AA, shift=4)
        cv2.circle(img, c, int(min(e["iris_r"], e["ry"]) * 16), tuple(float(v) for v in e["iris"]), -1,
                   cv2.LINE_AA, shift=4)
        cv2.circle(img, c, int(min(e["iris_r"], e["ry"]) * 7), (10, 10, 10), -1, cv2.LINE_AA, shift=4)
        cv2.ellipse(img, c, (int(e["rx"] * 16), int(e["ry"] * 16)), 0, 180, 360, (40, 30, 30), 2,
                    cv2.LINE_AA, shift=4)
    # nose: a shaded ridge and nostrils
    n = face["nose"]
    dark = tuple(float(c) * n["shade"] for c in face["skin"])
    tip = g["nose_tip"]
    cv2.polylines(img, [_pts([(cx - 3, face["eye_y"] + 2), (cx - n["w"] * 0.5, tip - 3),
                              (cx - n["w"], tip), (cx, tip + 4), (cx + n["w"], tip)])],
                  False, dark, 2, cv2.LINE_AA, shift=4)
    for s in (-1, 1):
        cv2.circle(img, _pts([(cx + s * n["w"] * 0.5, tip + 1)])[0], int(n["nostril"] * 16),
                   tuple(c * 0.6 for c in dark), -1, cv2.LINE_AA, shift=4)
    # lips
    lp = (face["lip"] if attrs is None
          else faces_attrs.smiling_lip(face["lip"], float(attrs["smiling"])))
    lcol = tuple(float(c) for c in lp["color"])
    my = g["mouth_y"]
    upper = [(cx + x, my - lp["h"] * (1 - (x / lp["w"]) ** 2) * 0.9) for x in np.linspace(-lp["w"], lp["w"], 11)]
    lower = [(cx + x, my + lp["h"] * (1 - (x / lp["w"]) ** 2) - lp["curve"] * (x / lp["w"]) ** 2)
             for x in np.linspace(lp["w"], -lp["w"], 11)]
    cv2.fillPoly(img, [_pts(upper + lower)], lcol, cv2.LINE_AA, shift=4)
    cv2.polylines(img, [_pts([(cx + x, my - lp["curve"] * (x / lp["w"]) ** 2)
                              for x in np.linspace(-lp["w"], lp["w"], 11)])], False,
                  tuple(c * 0.5 for c in lcol), 1, cv2.LINE_AA, shift=4)
    if attrs is not None:  # teeth, bangs, eyeglasses (attributes variant)
        img = faces_attrs.draw_over_features(img, face, g)
    # lighting and skin texture
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    d = np.cos(face["light_dir"]) * (xx - 128) + np.sin(face["light_dir"]) * (yy - 128)
    img = img * (1 + face["light_amp"] * d / 128)[..., None]
    tex = face["skin_tex"] * (1.0 if attrs is None else float(attrs["young"]["tex"]))
    img += tex * noise_field(face["tex_seed"], (256, 256), 2)
    return np.clip(img, 0, 255)


def component_masks(face: dict[str, Any]) -> dict[str, np.ndarray]:
    """Binary region masks (float32 (256, 256)) of the five components, with margins.

    Regions overlap on purpose: eyebrow/eye, nose/lip and hair/eyebrow.
    """
    g = geometry(face)
    cx = face["cx"]
    out = {k: np.zeros((256, 256), np.float32) for k in COMPONENTS}
    e, b, n, lp = face["eye"], face["eyebrow"], face["nose"], face["lip"]
    for ex, ey in g["eyes"]:
        cv2.ellipse(out["eye"], _pts([(ex, ey)])[0], (int((e["rx"] + 7) * 16), int((e["ry"] + 9) * 16)),
                    0, 0, 360, 1.0, -1, cv2.LINE_AA, shift=4)
        xs = np.linspace(-b["half"] - 5, b["half"] + 5, 9)
        pts = [(ex + x, g["brow_y"] - b["arch"] * max(0.0, 1 - (x / b["half"]) ** 2)) for x in xs]
        cv2.polylines(out["eyebrow"], [_pts(pts)], False, 1.0, int(b["thick"] + 16), cv2.LINE_AA, shift=4)
    tip = g["nose_tip"]
    cv2.fillPoly(out["nose"], [_pts([(cx - 7, face["eye_y"] - 2), (cx + 7, face["eye_y"] - 2),
                                     (cx + n["w"] + 9, tip + 2), (cx + n["w"] + 5, tip + 12),
                                     (cx - n["w"] - 5, tip + 12), (cx - n["w"] - 9, tip + 2)])],
                 1.0, cv2.LINE_AA, shift=4)
    cv2.ellipse(out["lip"], _pts([(cx, g["mouth_y"])])[0], (int((lp["w"] + 8) * 16), int((lp["h"] + 10) * 16)),
                0, 0, 360, 1.0, -1, cv2.LINE_AA, shift=4)
    hair = np.zeros((256, 256), np.float32)
    cv2.fillPoly(hair, [_hair_polygon(face, g)], 1.0, cv2.LINE_AA, shift=4)
    out["hair"] = cv2.dilate(hair, np.ones((15, 15), np.uint8))
    return out


def region_masks(face: dict[str, Any], task: str = "components") -> dict[str, np.ndarray]:
    """Region masks of the five manipulations of ``task`` (float32 (256, 256) each)."""
    if task == "attributes":
        return faces_attrs.attribute_masks(face, geometry(face))
    return component_masks(face)


def component_boxes(face: dict[str, Any], task: str = "components"
                    ) -> dict[str, tuple[int, int, int, int]]:
    """Bounding boxes (x0, y0, x1, y1) of the regions of ``task``."""
    boxes = {}
    for k, m in region_masks(face, task).items():
        ys, xs = np.nonzero(m > 0.5)
        boxes[k] = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())) if len(xs) else (0, 0, 0, 0)
    return boxes


def _load_bg_images(split: str) -> list[np.ndarray]:
    """The background images of ``split`` (uint8 RGB); those that need a download are left out."""
    import skimage.data

    out = []
    for name in _BG_IMAGES[split]:
        try:
            im = getattr(skimage.data, name)()
        except Exception:  # an image that needs a download is skipped (offline)
            continue
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(im[..., :3]))
    return out


def sample_background(rng: np.random.Generator, pool: list[np.ndarray]) -> np.ndarray:
    """A 256x256 background: a two-colour gradient, or a tinted crop of a sample image."""
    if pool and rng.uniform() < 0.5:
        im = pool[int(rng.integers(len(pool)))]
        s = int(rng.integers(128, min(im.shape[:2]) + 1))
        y, x = int(rng.integers(0, im.shape[0] - s + 1)), int(rng.integers(0, im.shape[1] - s + 1))
        crop = cv2.resize(im[y:y + s, x:x + s], (256, 256), interpolation=cv2.INTER_AREA).astype(np.float32)
        return np.clip(crop * rng.uniform(0.5, 1.1, 3) + rng.uniform(-30, 30, 3), 0, 255)
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, 256, dtype=np.float32)
    grad = t[:, None] if rng.uniform() < 0.5 else t[None, :]
    return np.broadcast_to(a + (b - a) * grad[..., None], (256, 256, 3)).astype(np.float32).copy()
