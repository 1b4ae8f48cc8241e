"""Face alignment: how a detected face becomes the square crop a model was trained on.

Each model's manifest entry names its alignment in ``preprocess.alignment``
(:func:`alignment_of`; none named: :data:`DEFAULT`). :data:`ALIGNMENTS` maps each name to
a function ``fn(rgb, face, size) -> crop`` (``rgb`` uint8 (H, W, 3), ``face`` with ``box``
(x1, y1, x2, y2) and ``landmarks`` (5, 2): left eye, right eye, nose, left and right mouth
corner as the image shows them, or None), imported only when used:

* ``crop45``: the margin crop of the generated-face models (:func:`app.services.face.crop_face`,
  a square 1.9 times the face box, eyes levelled);
* ``ffhq``: the FFHQ procedure (NVlabs/ffhq-dataset, ``recreate_aligned_images``), from the
  eye centres and the mouth corners: the faces of Seq-FaceAttr;
* ``celebahq``: the CelebA-HQ procedure (Karras et al., ``dataset_tool.py create_celebahq``),
  from the same five points: the faces of Seq-FaceComp (CelebAMask-HQ is CelebA-HQ).

Both published procedures choose the same oriented square from the eyes and the mouth:
``x = e2e - rot90(e2m)`` normalised, scaled to ``max(2.0 |e2e|, 1.8 |e2m|)``, ``y =
rot90(x)``, centre ``eye_avg + 0.1 e2m``, corners ``c - x - y, c - x + y, c + x + y,
c + x - y`` (top-left, bottom-left, bottom-right, top-right), with ``rot90(v) = (-v_y, v_x)``.
They differ in where the points come from (FFHQ: means of dlib's 68-point eye contours and
the outer-lip corners; CelebA-HQ: CelebA's 5 annotated points, each moved by half a pixel)
and in that half pixel: CelebA-HQ's quad is FFHQ's plus (0.5, 0.5) for the same points.
Here the points are the face detector's. The square is then resampled to ``size`` (PIL's
QUAD convention: its corners are the crop's pixel edges, with the +0.5 both scripts add);
outside the image the picture is mirrored (the scripts also blur that padding, which is not
reproduced). numpy and OpenCV only.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

import cv2
import numpy as np

DEFAULT = "crop45"  # the alignment of a model whose manifest names none
ALIGNMENTS: dict[str, str] = {
    "crop45": "app.services.face:crop_face",
    "ffhq": "runtime.align:ffhq_crop",
    "celebahq": "runtime.align:celebahq_crop",
    "sbi": "runtime.align_sbi:align",
}
DESCRIPTIONS: dict[str, str] = {
    "crop45": "margin crop (face box x 1.9, eyes levelled)",
    "ffhq": "FFHQ alignment from the eyes and mouth corners",
    "celebahq": "CelebA-HQ alignment from the eyes and mouth corners",
    "sbi": "SBI's crop: the face box with an eighth of its size added on each side, "
           "resized to the model's side (380 px), not rotated",
}


class AlignmentError(ValueError):
    """The alignment cannot be computed for this face (no landmarks, unknown name)."""


def alignment_of(entry: dict[str, Any]) -> str:
    """The alignment a manifest entry names (``preprocess.alignment``), else :data:`DEFAULT`."""
    return str((entry.get("preprocess") or {}).get("alignment") or DEFAULT)


def crop_side(entry: dict[str, Any]) -> int:
    """The side of the crop a model reads: its input's (``preprocess.size``), so the crop is
    made at that size and not resized again."""
    size = (entry.get("preprocess") or {}).get("size") or [256]
    return int(size[0])


def aligner(name: str) -> Callable[[np.ndarray, Any, int], np.ndarray]:
    """The crop function registered as ``name``.

    Raises:
        AlignmentError: ``name`` is not registered.
    """
    if name not in ALIGNMENTS:
        raise AlignmentError(f"unknown face alignment {name!r}; known: "
                             f"{', '.join(sorted(ALIGNMENTS))}")
    module, _, attr = ALIGNMENTS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def _rot90(v: np.ndarray) -> np.ndarray:
    """(-v_y, v_x): ``v`` turned by 90 degrees (clockwise on screen, y pointing down)."""
    return np.array([-v[1], v[0]], dtype=np.float64)


def oriented_quad(eye_left: np.ndarray, eye_right: np.ndarray, mouth_left: np.ndarray,
                  mouth_right: np.ndarray, shift: float = 0.0) -> np.ndarray:
    """The published square (4, 2) from eye centres and mouth corners (image left first);
    ``shift`` is added to the eye and mouth midpoints (CelebA-HQ's 0.5)."""
    eye_left, eye_right = np.asarray(eye_left, np.float64), np.asarray(eye_right, np.float64)
    eye_avg = (eye_left + eye_right) * 0.5 + shift
    mouth_avg = (np.asarray(mouth_left, np.float64) + np.asarray(mouth_right, np.float64)) * 0.5 + shift
    e2e, e2m = eye_right - eye_left, mouth_avg - eye_avg
    x = e2e - _rot90(e2m)
    x = x / np.hypot(*x) * max(np.hypot(*e2e) * 2.0, np.hypot(*e2m) * 1.8)
    y = _rot90(x)
    c = eye_avg + e2m * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """FFHQ's square from 5 points (eyes, nose, mouth corners)."""
    lm = np.asarray(landmarks, np.float64)
    return oriented_quad(lm[0], lm[1], lm[3], lm[4])


def celebahq_quad(landmarks: np.ndarray) -> np.ndarray:
    """CelebA-HQ's square from 5 points (its +0.5 on the eye and mouth midpoints)."""
    lm = np.asarray(landmarks, np.float64)
    return oriented_quad(lm[0], lm[1], lm[3], lm[4], shift=0.5)


def quad_matrix(quad: np.ndarray, size: int) -> np.ndarray:
    """The 2 x 3 affine matrix from crop pixel centres to source pixel centres that puts the
    quad's corners (in PIL's continuous coordinates after the scripts' +0.5) on the crop's
    corner edges: top-left (0, 0), bottom-left (0, size), bottom-right (size, size)."""
    src = np.asarray(quad, np.float64)[:3] + 0.5          # the scripts' (quad + 0.5)
    dst = np.array([[0, 0], [0, size], [size, size]], np.float64)
    # continuous crop point p -> continuous source point: A p + t, from the 3 corners
    a = np.linalg.solve(np.c_[dst, np.ones(3)], src).T    # (2, 3)
    # pixel centres: crop (u, v) is continuous (u + .5, v + .5); source continuous q is the
    # pixel-centre coordinate q - .5
    m = a.copy()
    m[:, 2] = a[:, :2] @ np.array([0.5, 0.5]) + a[:, 2] - 0.5
    return m


def warp_quad(rgb: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """``rgb`` resampled inside ``quad`` to (size, size, 3) uint8; a square much larger than
    the crop is first area-averaged by an integer factor, as both scripts shrink first."""
    quad = np.asarray(quad, np.float64)
    qsize = float(np.hypot(*(quad[3] - quad[0])))
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        h, w = rgb.shape[:2]
        small = (max(1, round(w / shrink)), max(1, round(h / shrink)))
        rgb = cv2.resize(rgb, small, interpolation=cv2.INTER_AREA)
        quad = quad * np.array([small[0] / w, small[1] / h])
    m = quad_matrix(quad, size)
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def _landmarks(face: Any, name: str) -> np.ndarray:
    lm = getattr(face, "landmarks", None)
    if lm is None or np.asarray(lm).shape != (5, 2):
        raise AlignmentError(f"the {name} alignment needs the face's 5 landmarks (eyes, nose, "
                             f"mouth corners); this detector gave none")
    return np.asarray(lm, np.float64)


def ffhq_crop(rgb: np.ndarray, face: Any, size: int = 256) -> np.ndarray:
    """The FFHQ-aligned crop (size, size, 3) of ``face``."""
    return warp_quad(rgb, ffhq_quad(_landmarks(face, "ffhq")), size)


def celebahq_crop(rgb: np.ndarray, face: Any, size: int = 256) -> np.ndarray:
    """The CelebA-HQ-aligned crop (size, size, 3) of ``face``."""
    return warp_quad(rgb, celebahq_quad(_landmarks(face, "celebahq")), size)
