"""Edits of the generated faces (:mod:`training.data.faces_synth`): manipulation sequences,
the sequential editor that applies them, and the re-encoding after every step.

One manipulation "transplants" a component (or sets an attribute) from another (virtual)
source face: the part is redrawn with new parameters and blended in through a feathered
region mask. The editor re-synthesises, at every step, the union of all regions edited so
far, adding the same generator fingerprint there at each pass; then the whole image is
re-encoded (a mild blur, then a JPEG re-save at a random quality).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from training.data import faces_attrs
from training.data.faces_params import landmarks, sample_component, sample_face, task_names
from training.data.faces_render import noise_field, region_masks, render_face, sample_background
from training.data.seqdeepfake import SLOTS

MAX_LEN = SLOTS
"""Longest manipulation sequence: the five label slots of Seq-DeepFake."""


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
    fingerprint = noise_field(int(rng.integers(2**31)), (256, 256), cfg.grain_cell, 3)
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
