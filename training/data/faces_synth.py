"""Offline generator of sequentially manipulated faces, written in the Seq-DeepFake layout.

No face data set can be downloaded here, so the default sequential-deepfake model trains on
procedurally drawn faces (DESIGN.md, "Faces"). Each face has the five Seq-FaceComp
components (1 nose, 2 eye, 3 eyebrow, 4 lip, 5 hair). A sample gets a manipulation sequence
of length 0..5 (lengths equally likely, components in a random order). One manipulation
"transplants"
a component from another (virtual) source face: the component is redrawn with new
shape/colour and blended into the image through a feathered region mask. The editing
generator re-synthesises, at every step, the union of all regions edited so far (as a
sequential editor that keeps a running edit mask does), and each pass leaves the same
generator fingerprint (a fixed medium-frequency colour pattern per image) in that union.
After every step the whole image is re-encoded (a mild blur, then a JPEG re-save at a random
quality). Two cues make the order recoverable from pixels:

* an edit made at step j of K has been through K - j + 1 generator passes, so its
  fingerprint is stronger the earlier it was made (the first edit carries the most);
* regions overlap (eyebrow/eye, nose/lip, hair/eyebrow), and the later edit overwrites the
  overlap, resetting the fingerprint there to its own count.

The direction of the first cue matters for the thesis' model, which orders the detected
components by decreasing probability: evidence that grows with how early an edit was made
is what such a decoder can express. (Version 3 of this generator gave each edit fresh grain
that later re-encodings blurred away, i.e. the *last* edit was the most evident; no model
ordered better than chance on it, reports/seqfake.md.)

Faces vary in geometry, skin tone, lighting, hair, and background (gradients or crops of
scikit-image's sample images; train/val and test use disjoint background images, and every
face is drawn from its own seeded random stream, so test faces are not training faces).

Output layout (as the real data, see SPEC.md)::

    OUT/facial_components/annotations/{train,val,test}.csv   # file_path,label
    OUT/facial_components/images/{split}/{seq-name|original}/{index:06d}.jpg
    OUT/facial_components/landmarks/{split}.csv              # extra: 5 landmarks + boxes

``file_path`` is relative to ``OUT/facial_components``; ``label`` is a 5-slot list such as
``[1, 2, 4, 0, 0]``. The landmark files are not part of the Seq-DeepFake format; the loader
uses them when present (for landmark-based augmentation) and falls back to canonical ones.

CLI::

    python -m training.data.faces_synth --out DIR --n-train 3000 --n-val 300 --n-test 600
"""
from __future__ import annotations

import argparse
import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from training.data import faces_attrs
from training.data.faces_attrs import _pts

COMPONENTS: tuple[str, ...] = ("nose", "eye", "eyebrow", "lip", "hair")
"""Component names in id order (id = index + 1), as Seq-FaceComp."""
TASKS = {"components": "facial_components", "attributes": "facial_attributes"}
"""Generator task -> the Seq-DeepFake folder it writes."""


def task_names(task: str = "components") -> tuple[str, ...]:
    """The five manipulation names of ``task`` in id order."""
    if task == "attributes":
        return faces_attrs.ATTRIBUTES
    if task != "components":
        raise ValueError(f"task must be one of {tuple(TASKS)}, got {task!r}")
    return COMPONENTS
MAX_LEN = 5
SPLITS = ("train", "val", "test")
_SPLIT_STREAM = {"train": 11, "val": 22, "test": 33}
# Background images from scikit-image that ship inside the package; disjoint per split.
_BG_IMAGES = {"train": ("brick", "grass", "coffee", "rocket", "camera", "hubble_deep_field"),
              "val": ("brick", "grass", "coffee", "rocket", "camera", "hubble_deep_field"),
              "test": ("gravel", "chelsea", "moon", "immunohistochemistry", "cat")}
GENERATOR_VERSION = 4  # bump when the pictures change, so stale generated sets are remade
LANDMARK_COLUMNS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


# ----------------------------------------------------------------------------------------
# Face parameters
# ----------------------------------------------------------------------------------------
def _skin(rng: np.random.Generator) -> np.ndarray:
    """A skin tone (RGB float 0..255) between dark and light."""
    dark, light = np.array([95, 60, 40.0]), np.array([245, 210, 185.0])
    t = rng.uniform(0, 1)
    return (dark + t * (light - dark)) * rng.uniform(0.93, 1.07, 3)


def sample_face(rng: np.random.Generator, size: int = 256, task: str = "components"
                ) -> dict[str, Any]:
    """Sample the geometry and colours of one face (all coordinates in a 256 frame).

    ``task="attributes"`` adds the face's attributes (``face["attrs"]``, see
    :mod:`training.data.faces_attrs`)."""
    cx, cy = 128 + rng.uniform(-8, 8), 140 + rng.uniform(-8, 8)
    face = {
        "cx": cx, "cy": cy, "fa": rng.uniform(66, 82), "fb": rng.uniform(88, 104),
        "skin": _skin(rng), "light_dir": rng.uniform(0, 2 * np.pi),
        "light_amp": rng.uniform(0.05, 0.22), "skin_tex": rng.uniform(2.0, 6.0),
        "eye_y": cy - rng.uniform(8, 20), "tex_seed": int(rng.integers(2**31)),
    }
    for name in COMPONENTS:
        face[name] = sample_component(rng, name, face)
    if task == "attributes":
        face["attrs"] = faces_attrs.base_attributes(rng, face)
    return face


def sample_component(rng: np.random.Generator, name: str, face: dict[str, Any]
                     ) -> dict[str, Any]:
    """Sample new parameters for one component of ``face`` (as a source face would give)."""
    ey = face["eye_y"]
    if name == "eye":
        return {"dx": rng.uniform(26, 34), "rx": rng.uniform(10, 15), "ry": rng.uniform(4.5, 8),
                "iris": rng.uniform(20, 200, 3), "iris_r": rng.uniform(3.5, 5.5)}
    if name == "eyebrow":
        return {"dy": rng.uniform(12, 18), "half": rng.uniform(12, 19), "arch": rng.uniform(-1, 7),
                "thick": rng.uniform(3, 7), "tilt": rng.uniform(-4, 4),
                "color": rng.uniform(15, 120, 3)}
    if name == "nose":
        return {"len": rng.uniform(22, 34), "w": rng.uniform(7, 13),
                "shade": rng.uniform(0.55, 0.85), "nostril": rng.uniform(2, 4)}
    if name == "lip":
        return {"dy": rng.uniform(16, 24), "w": rng.uniform(14, 24), "h": rng.uniform(4, 8),
                "curve": rng.uniform(-4, 5), "color": rng.uniform([120, 30, 40], [230, 110, 130])}
    if name == "hair":
        return {"line": rng.uniform(8, 24), "part": rng.uniform(-30, 30),
                "vol": rng.uniform(8, 22), "side": rng.uniform(0.2, 0.75),
                "color": rng.uniform(10, 200, 3) * np.array([1.0, rng.uniform(0.6, 1.0), rng.uniform(0.3, 0.9)])}
    raise ValueError(f"unknown component {name!r}")


def _geometry(face: dict[str, Any]) -> dict[str, Any]:
    """Derived positions: eye centres, brow line, nose tip, mouth, hairline."""
    cx, ey = face["cx"], face["eye_y"]
    e, b, n, lp, h = (face[k] for k in COMPONENTS[1:2] + ("eyebrow", "nose", "lip", "hair"))
    nose_tip = ey + n["len"]
    mouth_y = nose_tip + lp["dy"]
    brow_y = ey - b["dy"]
    return {"eyes": [(cx - e["dx"], ey), (cx + e["dx"], ey)], "brow_y": brow_y,
            "nose_tip": nose_tip, "mouth_y": mouth_y,
            "hairline": brow_y - h["line"]}


# ----------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------
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


def _noise_field(seed: int, shape: tuple[int, int], cell: int, channels: int = 1) -> np.ndarray:
    """Smooth random noise (mean 0, std ~1) with features about ``cell`` pixels wide."""
    r = np.random.default_rng(seed)
    small = r.standard_normal((shape[0] // cell + 2, shape[1] // cell + 2, channels)).astype(np.float32)
    big = cv2.resize(small, (shape[1] + 2 * cell, shape[0] + 2 * cell), interpolation=cv2.INTER_CUBIC)
    big = big.reshape(big.shape[0], big.shape[1], channels)[cell:cell + shape[0], cell:cell + shape[1]]
    return big / max(1e-6, float(big.std()))


def render_face(face: dict[str, Any], background: np.ndarray) -> np.ndarray:
    """Draw ``face`` over ``background`` (float32 (256, 256, 3), 0..255); returns float32."""
    img = background.astype(np.float32).copy()
    g = _geometry(face)
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
    img += tex * _noise_field(face["tex_seed"], (256, 256), 2)
    return np.clip(img, 0, 255)


def component_masks(face: dict[str, Any]) -> dict[str, np.ndarray]:
    """Binary region masks (float32 (256, 256)) of the five components, with margins.

    Regions overlap on purpose: eyebrow/eye, nose/lip and hair/eyebrow.
    """
    g = _geometry(face)
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
        return faces_attrs.attribute_masks(face, _geometry(face))
    return component_masks(face)


def landmarks(face: dict[str, Any]) -> np.ndarray:
    """5 landmarks (left eye, right eye, nose tip, mouth left, mouth right), float (5, 2) x,y."""
    g = _geometry(face)
    my, w, cx = g["mouth_y"], face["lip"]["w"], face["cx"]
    return np.array([g["eyes"][0], g["eyes"][1], (cx, g["nose_tip"]), (cx - w, my), (cx + w, my)],
                    dtype=np.float32)


def component_boxes(face: dict[str, Any], task: str = "components"
                    ) -> dict[str, tuple[int, int, int, int]]:
    """Bounding boxes (x0, y0, x1, y1) of the regions of ``task``."""
    boxes = {}
    for k, m in region_masks(face, task).items():
        ys, xs = np.nonzero(m > 0.5)
        boxes[k] = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())) if len(xs) else (0, 0, 0, 0)
    return boxes


# ----------------------------------------------------------------------------------------
# Backgrounds, re-encoding, manipulation
# ----------------------------------------------------------------------------------------
def _load_bg_images(split: str) -> list[np.ndarray]:
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


def reencode(img: np.ndarray, rng: np.random.Generator, blur: tuple[float, float] = (2.5, 3.0),
             quality: tuple[int, int] = (40, 85)) -> tuple[np.ndarray, bytes]:
    """One re-encoding: Gaussian blur (re-synthesis) then a JPEG save at a random quality.

    Returns the decoded float32 image and the JPEG bytes (RGB order in the array).
    """
    sigma = rng.uniform(*blur)
    out = cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.float32), (0, 0), sigma)
    q = int(rng.integers(quality[0], quality[1] + 1))
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.clip(out + 0.5, 0, 255).astype(np.uint8),
                                                cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    dec = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return dec.astype(np.float32), buf.tobytes()


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the generator (defaults are the ones the reports use).

    Attributes:
        fingerprint: (min, max) amplitude (0..255 scale) the generator's fingerprint gains
            in the edited union at each pass; it accumulates over passes.
        grain_cell: fingerprint feature size in pixels (256 frame).
        feather: Gaussian sigma of the blend mask edge.
        blur: (min, max) sigma of the per-step re-synthesis blur.
        quality: (min, max) JPEG quality of each re-save.
        pre_saves: (min, max) re-encodings every image gets before any manipulation.
    """

    fingerprint: tuple[float, float] = (14.0, 18.0)
    grain_cell: int = 10
    feather: float = 3.0
    blur: tuple[float, float] = (0.8, 1.4)
    quality: tuple[int, int] = (60, 90)
    pre_saves: tuple[int, int] = (1, 3)


def sample_sequence(rng: np.random.Generator, length: int | None = None) -> list[int]:
    """A manipulation sequence: length uniform in 0..5, distinct ids 1..5 in random order."""
    k = int(rng.integers(0, MAX_LEN + 1)) if length is None else length
    return [int(c) + 1 for c in rng.permutation(MAX_LEN)[:k]]


def make_sample(rng: np.random.Generator, sequence: list[int], bg_pool: list[np.ndarray],
                cfg: SynthConfig = SynthConfig(), task: str = "components"
                ) -> tuple[bytes, np.ndarray, dict[str, Any]]:
    """Draw one face and apply ``sequence`` (ids 1..5 of ``task``'s names) to it.

    Returns:
        the final JPEG bytes, the 5 landmarks (5, 2) of the final face, and the final face
        parameters.
    """
    names = task_names(task)
    face = sample_face(rng, task=task)
    img = render_face(face, sample_background(rng, bg_pool))
    data = b""
    for _ in range(int(rng.integers(cfg.pre_saves[0], cfg.pre_saves[1] + 1))):
        img, data = reencode(img, rng, cfg.blur, cfg.quality)
    bg = None
    edited = np.zeros((256, 256, 1), np.float32)  # soft union of the regions edited so far
    fingerprint = _noise_field(int(rng.integers(2**31)), (256, 256), cfg.grain_cell, 3)
    for cid in sequence:
        name = names[cid - 1]
        old_mask = region_masks(face, task)[name]
        face = dict(face)
        if task == "attributes":
            face["attrs"] = {**face["attrs"], name: faces_attrs.sample_attribute(rng, name, face)}
        else:
            face[name] = sample_component(rng, name, face)
        region = np.maximum(old_mask, region_masks(face, task)[name])
        if bg is None:  # the source face shares the scene; only the region is used
            bg = img.copy()
        soft = cv2.GaussianBlur(region, (0, 0), cfg.feather)[..., None]
        # the new component replaces the region (and whatever fingerprint it held) ...
        img = img * (1 - soft) + render_face(face, bg) * soft
        # ... then the generator re-synthesises every edited region, adding its fingerprint
        edited = np.maximum(edited, soft)
        img = img + rng.uniform(*cfg.fingerprint) * fingerprint * edited
        img, data = reencode(img, rng, cfg.blur, cfg.quality)
    return data, landmarks(face), face


# ----------------------------------------------------------------------------------------
# Data set writer
# ----------------------------------------------------------------------------------------
def sequence_name(sequence: list[int], task: str = "components") -> str:
    """Folder name as in Seq-DeepFake: 'eyebrow-eye-hair' or 'original'."""
    names = task_names(task)
    return "-".join(names[c - 1] for c in sequence) or "original"


def format_label(sequence: list[int]) -> str:
    """'[1, 2, 4, 0, 0]' for the sequence (1, 2, 4)."""
    return "[" + ", ".join(str(c) for c in list(sequence) + [0] * (MAX_LEN - len(sequence))) + "]"


def _balanced_lengths(rng: np.random.Generator, n: int) -> np.ndarray:
    """n lengths with each of 0..5 as equally frequent as n allows, shuffled."""
    lengths = np.arange(n) % (MAX_LEN + 1)
    return rng.permutation(lengths)


def generate_split(out: str | os.PathLike[str], split: str, n: int, seed: int = 0,
                   cfg: SynthConfig = SynthConfig(),
                   progress: Callable[[int, int], None] | None = None,
                   task: str = "components") -> Path:
    """Write ``n`` samples of one split; returns the annotations CSV path."""
    names = task_names(task)
    root = Path(out) / TASKS[task]
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split]])
    lengths = _balanced_lengths(rng, n)
    pool = _load_bg_images(split)
    rows, lm_rows = [], []
    for i in range(n):
        srng = np.random.default_rng([seed, _SPLIT_STREAM[split], i])
        seq = sample_sequence(srng, int(lengths[i]))
        data, lm, face = make_sample(srng, seq, pool, cfg, task)
        rel = f"images/{split}/{sequence_name(seq, task)}/{i:06d}.jpg"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append((rel, format_label(seq)))
        boxes = component_boxes(face, task)
        lm_rows.append([rel] + [f"{v:.1f}" for v in lm.reshape(-1)] +
                       [" ".join(str(v) for v in boxes[k]) for k in names])
        if progress is not None:
            progress(i + 1, n)
    ann = root / "annotations" / f"{split}.csv"
    ann.parent.mkdir(parents=True, exist_ok=True)
    with open(ann, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_path", "label"])
        w.writerows(rows)
    lmk = root / "landmarks" / f"{split}.csv"
    lmk.parent.mkdir(parents=True, exist_ok=True)
    with open(lmk, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_path"] + [f"{p}_{a}" for p in LANDMARK_COLUMNS for a in "xy"] +
                   [f"box_{k}" for k in names])
        w.writerows(lm_rows)
    return ann


def generate(out: str | os.PathLike[str], n_train: int = 3000, n_val: int = 150,
             n_test: int = 600, seed: int = 0, cfg: SynthConfig = SynthConfig(),
             verbose: bool = True, task: str = "components") -> Path:
    """Write the three splits under ``out``; returns ``out/facial_components`` (or
    ``out/facial_attributes`` for ``task="attributes"``).

    A ``DONE`` marker (with the sizes and seed) is written last, so a half-written folder is
    regenerated rather than used.
    """
    out = Path(out)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        t0 = time.time()

        def _progress(i: int, total: int, split: str = split) -> None:
            if verbose and (i == total or i % 500 == 0):
                print(f"[faces_synth] {split}: {i}/{total} ({time.time() - t0:.0f} s)", flush=True)

        generate_split(out, split, n, seed, cfg, _progress, task)
    marker = out / TASKS[task] / "DONE"
    marker.write_text(_marker_text(n_train, n_val, n_test, seed) + "\n")
    return out / TASKS[task]


def is_generated(out: str | os.PathLike[str], n_train: int, n_val: int, n_test: int,
                 seed: int, task: str = "components") -> bool:
    """True if ``out`` holds a complete generated set with exactly these sizes and seed."""
    marker = Path(out) / TASKS[task] / "DONE"
    return marker.is_file() and marker.read_text().strip() == _marker_text(n_train, n_val, n_test, seed)


def _marker_text(n_train: int, n_val: int, n_test: int, seed: int) -> str:
    return (f"n_train={n_train} n_val={n_val} n_test={n_test} seed={seed} "
            f"version={GENERATOR_VERSION}")


def iter_preview(seed: int = 0, n: int = 6, task: str = "components"
                 ) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Decoded samples (uint8 (256, 256, 3), sequence) of lengths 0..5, for figures/tests."""
    pool = _load_bg_images("train")
    for i in range(n):
        rng = np.random.default_rng([seed, 99, i])
        seq = sample_sequence(rng, i % (MAX_LEN + 1))
        data, _, _ = make_sample(rng, seq, pool, task=task)
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
        yield img, seq


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.data.faces_synth",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True,
                   help="output folder (facial_components/ or facial_attributes/ is made in it)")
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-val", type=int, default=150)
    p.add_argument("--n-test", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", choices=tuple(TASKS), default="components",
                   help="facial components (Seq-FaceComp) or attributes (Seq-FaceAttr)")
    a = p.parse_args(argv)
    t0 = time.time()
    root = generate(a.out, a.n_train, a.n_val, a.n_test, a.seed, task=a.task)
    print(f"[faces_synth] wrote {root} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
