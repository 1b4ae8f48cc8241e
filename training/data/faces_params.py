"""Face parameters of the generated faces (:mod:`training.data.faces_synth`): a face's
geometry and colours, the parameters of its five components, and the positions derived from
them (eye centres, brow line, nose tip, mouth, hairline; the 5 landmarks).

A face is a plain dict in a 256 x 256 frame; each component (names and id order of the
Seq-DeepFake loader, :data:`training.data.seqdeepfake.COMPONENT_NAMES`) is a sub-dict under
its name, and the attributes variant adds ``face["attrs"]`` (:mod:`training.data.faces_attrs`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from training.data import faces_attrs
from training.data.seqdeepfake import ATTRIBUTE_NAMES, COMPONENT_NAMES, TASK_DIRS

COMPONENTS: tuple[str, ...] = COMPONENT_NAMES
"""Component names in id order (id = index + 1), as Seq-FaceComp."""


def task_names(task: str = "components") -> tuple[str, ...]:
    """The five manipulation names of ``task`` in id order."""
    if task == "attributes":
        return ATTRIBUTE_NAMES
    if task != "components":
        raise ValueError(f"task must be one of {tuple(TASK_DIRS)}, got {task!r}")
    return COMPONENTS


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


def geometry(face: dict[str, Any]) -> dict[str, Any]:
    """Derived positions: eye centres, brow line, nose tip, mouth, hairline."""
    cx, ey = face["cx"], face["eye_y"]
    e, b, n, lp, h = (face[k] for k in ("eye", "eyebrow", "nose", "lip", "hair"))
    nose_tip = ey + n["len"]
    mouth_y = nose_tip + lp["dy"]
    brow_y = ey - b["dy"]
    return {"eyes": [(cx - e["dx"], ey), (cx + e["dx"], ey)], "brow_y": brow_y,
            "nose_tip": nose_tip, "mouth_y": mouth_y,
            "hairline": brow_y - h["line"]}


def landmarks(face: dict[str, Any]) -> np.ndarray:
    """5 landmarks (left eye, right eye, nose tip, mouth left, mouth right), float (5, 2) x,y."""
    g = geometry(face)
    my, w, cx = g["mouth_y"], face["lip"]["w"], face["cx"]
    return np.array([g["eyes"][0], g["eyes"][1], (cx, g["nose_tip"]), (cx - w, my), (cx + w, my)],
                    dtype=np.float32)
