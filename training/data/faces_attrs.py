"""Facial attributes for the generated faces (the Seq-FaceAttr variant of the generator).

The five attributes of Seq-FaceAttr, in id order: 1 bangs, 2 eyeglasses, 3 beard,
4 smiling, 5 young. An original face may already have bangs, eyeglasses or a beard (each
with probability 1/4), smiles a little or not at all, and carries age lines (forehead lines,
crow's feet, nasolabial folds). A manipulation sets the attribute as an attribute editor
would: bangs / eyeglasses / beard are added (or, if present, replaced by different ones),
"smiling" gives a broad smile with teeth, "young" removes the age lines and smooths the skin.

Each attribute has a region (:func:`attribute_masks`); the regions overlap (young's
forehead/eye-corner/fold zones with bangs, eyeglasses, smiling and beard; smiling with
beard), so a later edit overwrites part of an earlier one, as in the components variant.
All coordinates are in the 256 x 256 frame of :mod:`training.data.faces_synth`.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from training.data.seqdeepfake import ATTRIBUTE_NAMES

ATTRIBUTES: tuple[str, ...] = ATTRIBUTE_NAMES
"""Attribute names in id order (id = index + 1), as Seq-FaceAttr (the loader's names)."""


def _pts(points: list[tuple[float, float]]) -> np.ndarray:
    """Points (x, y) in pixels -> int32 fixed point for OpenCV's ``shift=4`` (shared with
    :mod:`training.data.faces_render`, which draws on top of this module)."""
    return np.round(np.asarray(points, dtype=np.float64) * 16).astype(np.int32)  # shift=4


def sample_attribute(rng: np.random.Generator, name: str, face: dict[str, Any]) -> Any:
    """New parameters for attribute ``name`` (what an editor setting it would produce)."""
    if name == "bangs":
        return {"len": rng.uniform(0.55, 1.0), "tilt": rng.uniform(-10, 10),
                "jag": rng.uniform(2, 7), "teeth": int(rng.integers(6, 14))}
    if name == "eyeglasses":
        return {"round": bool(rng.uniform() < 0.5), "rx": rng.uniform(13, 18),
                "ry": rng.uniform(9, 13), "thick": rng.uniform(1.5, 3.5),
                "color": rng.uniform(0, 140, 3), "tint": rng.uniform(0.0, 0.35)}
    if name == "beard":
        return {"top": rng.uniform(0.15, 0.6), "density": rng.uniform(0.55, 1.0),
                "shade": rng.uniform(0.55, 1.0), "seed": int(rng.integers(2**31))}
    if name == "smiling":
        return rng.uniform(0.75, 1.2)
    if name == "young":
        return {"age": float(face["attrs"]["young"]["age"]) * rng.uniform(0.0, 0.15),
                "tex": rng.uniform(0.2, 0.45)}
    raise ValueError(f"unknown attribute {name!r}")


def base_attributes(rng: np.random.Generator, face: dict[str, Any]) -> dict[str, Any]:
    """The attributes of an original face (before any manipulation)."""
    attrs: dict[str, Any] = {"young": {"age": rng.uniform(0.45, 1.0), "tex": 1.0},
                             "smiling": rng.uniform(-0.15, 0.35)}
    face = {**face, "attrs": attrs}
    for name in ("bangs", "eyeglasses", "beard"):
        attrs[name] = sample_attribute(rng, name, face) if rng.uniform() < 0.25 else None
    return attrs


def smiling_lip(lip: dict[str, Any], smile: float) -> dict[str, Any]:
    """Lip parameters with ``smile`` applied (corners up, wider)."""
    return {**lip, "curve": lip["curve"] + 7.0 * smile,
            "w": lip["w"] * (1 + 0.22 * max(0.0, smile))}


def _forehead_box(face: dict[str, Any], g: dict[str, Any]) -> tuple[float, float, float, float]:
    cx, fa = face["cx"], face["fa"]
    return cx - fa * 0.85, g["hairline"] - 6, cx + fa * 0.85, g["brow_y"] + 3


def draw_under_features(img: np.ndarray, face: dict[str, Any], g: dict[str, Any]) -> np.ndarray:
    """Age lines and beard, drawn on the skin before eyebrows, eyes, nose and lips."""
    attrs = face["attrs"]
    cx, skin = face["cx"], np.asarray(face["skin"], np.float32)
    age = float(attrs["young"]["age"])
    if age > 0.02:
        layer = np.zeros(img.shape[:2], np.float32)
        x0, y0, x1, y1 = _forehead_box(face, g)
        for k in range(3):
            y = y0 + (y1 - y0) * (0.35 + 0.18 * k)
            xs = np.linspace(cx - (x1 - x0) * 0.32, cx + (x1 - x0) * 0.32, 9)
            cv2.polylines(layer, [_pts([(x, y + 2.5 * np.cos((x - cx) / 18)) for x in xs])], False,
                          1.0, 2, cv2.LINE_AA, shift=4)
        for side, (ex, ey) in zip((-1, 1), g["eyes"]):
            corner = ex + side * (face["eye"]["rx"] + 3)
            for dy in (-4, 0, 4):
                cv2.line(layer, tuple(_pts([(corner, ey + dy * 0.5)])[0]),
                         tuple(_pts([(corner + side * 8, ey + dy * 1.6)])[0]), 1.0, 1, cv2.LINE_AA,
                         shift=4)
            nose_w = face["nose"]["w"]
            drop = g["mouth_y"] - g["nose_tip"] + 6
            fold = [(cx + side * (nose_w + 4 + 6 * t), g["nose_tip"] + t * drop)
                    for t in np.linspace(0, 1, 7)]
            cv2.polylines(layer, [_pts(fold)], False, 1.0, 2, cv2.LINE_AA, shift=4)
        layer = cv2.GaussianBlur(layer, (0, 0), 0.8) * (0.45 * age)
        img = img * (1 - layer[..., None]) + (skin * 0.55) * layer[..., None]
    beard = attrs["beard"]
    if beard is not None:
        m = np.zeros(img.shape[:2], np.float32)
        cv2.ellipse(m, tuple(_pts([(cx, face["cy"])])[0]),
                    (int(face["fa"] * 16), int(face["fb"] * 16)), 0, 0, 360, 1.0, -1,
                    cv2.LINE_AA, shift=4)
        top = g["nose_tip"] + beard["top"] * (g["mouth_y"] - g["nose_tip"])
        m[: int(top)] = 0
        m = cv2.GaussianBlur(m, (0, 0), 2.5) * beard["density"]
        tex = _hair_texture(beard["seed"], img.shape[:2])
        col = np.asarray(face["hair"]["color"], np.float32) * beard["shade"]
        img = img * (1 - m[..., None]) + (col + 28 * tex[..., None]) * m[..., None]
    return img


def _hair_texture(seed: int, shape: tuple[int, int]) -> np.ndarray:
    r = np.random.default_rng(seed)
    n = r.standard_normal(shape).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), 0.7)
    return n / max(1e-6, float(n.std()))


def draw_over_features(img: np.ndarray, face: dict[str, Any], g: dict[str, Any]) -> np.ndarray:
    """Teeth of a broad smile, bangs and eyeglasses, drawn over the facial features."""
    attrs = face["attrs"]
    cx = face["cx"]
    smile = float(attrs["smiling"])
    if smile > 0.6:
        lp = smiling_lip(face["lip"], smile)
        cv2.ellipse(img, tuple(_pts([(cx, g["mouth_y"] - 0.5)])[0]),
                    (int(lp["w"] * 0.62 * 16), int(max(1.5, lp["h"] * 0.45 * smile) * 16)),
                    0, 0, 180, (235, 232, 225), -1, cv2.LINE_AA, shift=4)
    bangs = attrs["bangs"]
    if bangs is not None:
        x0, y0, x1, _ = _forehead_box(face, g)
        bottom = g["hairline"] + bangs["len"] * (g["brow_y"] - g["hairline"] + 4)
        n = bangs["teeth"]
        pts = [(x0, y0 - 4), (x1, y0 - 4)]
        for k in range(n + 1):
            x = x1 - (x1 - x0) * k / n
            tilt = bangs["tilt"] * (x - cx) / (x1 - x0)
            pts.append((x, bottom + tilt - (bangs["jag"] if k % 2 else 0)))
        cv2.fillPoly(img, [_pts(pts)], tuple(float(c) for c in face["hair"]["color"]), cv2.LINE_AA,
                     shift=4)
    glasses = attrs["eyeglasses"]
    if glasses is not None:
        col = tuple(float(c) for c in glasses["color"])
        lens = np.zeros(img.shape[:2], np.float32)
        for ex, ey in g["eyes"]:
            c = tuple(_pts([(ex, ey)])[0])
            axes = (int(glasses["rx"] * 16), int(glasses["ry"] * 16))
            if glasses["round"]:
                cv2.ellipse(lens, c, axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA, shift=4)
            else:
                cv2.rectangle(lens, tuple(_pts([(ex - glasses["rx"], ey - glasses["ry"])])[0]),
                              tuple(_pts([(ex + glasses["rx"], ey + glasses["ry"])])[0]), 1.0, -1,
                              cv2.LINE_AA, shift=4)
        tint = glasses["tint"] * lens[..., None]
        img = img * (1 - tint) + tint * np.asarray(col)
        t = max(1, int(round(glasses["thick"])))
        for side, (ex, ey) in zip((-1, 1), g["eyes"]):
            c = tuple(_pts([(ex, ey)])[0])
            if glasses["round"]:
                cv2.ellipse(img, c, (int(glasses["rx"] * 16), int(glasses["ry"] * 16)), 0, 0, 360,
                            col, t, cv2.LINE_AA, shift=4)
            else:
                cv2.rectangle(img, tuple(_pts([(ex - glasses["rx"], ey - glasses["ry"])])[0]),
                              tuple(_pts([(ex + glasses["rx"], ey + glasses["ry"])])[0]), col, t,
                              cv2.LINE_AA, shift=4)
            outer = ex + side * glasses["rx"]
            temple_end = (cx + side * face["fa"] * 0.98, ey - 5)
            cv2.line(img, tuple(_pts([(outer, ey - 2)])[0]), tuple(_pts([temple_end])[0]), col, t,
                     cv2.LINE_AA, shift=4)
        (lx, ly), (rx_, ry_) = g["eyes"]
        cv2.line(img, tuple(_pts([(lx + glasses["rx"], ly - 2)])[0]),
                 tuple(_pts([(rx_ - glasses["rx"], ry_ - 2)])[0]), col, t, cv2.LINE_AA, shift=4)
    return img


def attribute_masks(face: dict[str, Any], g: dict[str, Any]) -> dict[str, np.ndarray]:
    """Region masks (float32 (256, 256)) of the five attributes, with margins."""
    cx, fa = face["cx"], face["fa"]
    out = {k: np.zeros((256, 256), np.float32) for k in ATTRIBUTES}
    x0, y0, x1, y1 = _forehead_box(face, g)
    cv2.rectangle(out["bangs"], (int(x0), int(y0 - 8)), (int(x1), int(y1 + 4)), 1.0, -1)
    for ex, ey in g["eyes"]:
        cv2.rectangle(out["eyeglasses"], (int(ex - 23), int(ey - 18)), (int(ex + 23), int(ey + 18)),
                      1.0, -1)
    ey = g["eyes"][0][1]  # bridge and temples: a band across the face at eye level
    cv2.rectangle(out["eyeglasses"], (int(cx - fa - 4), int(ey - 12)),
                  (int(cx + fa + 4), int(ey + 5)), 1.0, -1)
    cv2.ellipse(out["beard"], (int(cx), int(face["cy"])), (int(fa + 9), int(face["fb"] + 9)),
                0, 0, 360, 1.0, -1)
    out["beard"][: int(g["nose_tip"] + 0.15 * (g["mouth_y"] - g["nose_tip"]) - 9)] = 0
    lp = smiling_lip(face["lip"], 1.2)
    cv2.ellipse(out["smiling"], (int(cx), int(g["mouth_y"])),
                (int(lp["w"] + 12), int(lp["h"] + 14)), 0, 0, 360, 1.0, -1)
    # young: forehead lines, crow's feet and nasolabial folds, with margins
    cv2.rectangle(out["young"], (int(cx - (x1 - x0) * 0.4), int(y0 + (y1 - y0) * 0.2)),
                  (int(cx + (x1 - x0) * 0.4), int(y1)), 1.0, -1)
    for side, (ex, ey) in zip((-1, 1), g["eyes"]):
        corner = ex + side * (face["eye"]["rx"] + 7)
        cv2.circle(out["young"], (int(corner), int(ey)), 11, 1.0, -1)
        nose_w = face["nose"]["w"]
        cv2.line(out["young"], (int(cx + side * (nose_w + 4)), int(g["nose_tip"])),
                 (int(cx + side * (nose_w + 10)), int(g["mouth_y"] + 6)), 1.0, 14)
    return out
