"""SBI's face crop: the face box widened by an eighth of its size on every side, resized.

Written from reading the authors' inference code (mapooon/SelfBlendedImages,
``src/inference/preprocess.py``: ``extract_face`` / ``extract_frames`` call ``crop_face``
with the RetinaFace box, ``crop_by_bbox=True``, ``margin=False``, ``phase='test'``): each side
of the box ``(x0, y0, x1, y1)`` gets a margin of a quarter of the box's width (left, right) or
height (top, bottom), halved at test time, i.e. ``w / 8`` and ``h / 8``. The window is
truncated to integers as Python's ``int`` does (toward zero), clipped to the image, and its
far edges are exclusive after ``+ 1``::

    top    = max(0, int(y0 - h / 8))      bottom = min(H, int(y1 + h / 8) + 1)
    left   = max(0, int(x0 - w / 8))      right  = min(W, int(x1 + w / 8) + 1)

The window ``rgb[top:bottom, left:right]`` is resized to 380 x 380 with OpenCV's bilinear
interpolation (``cv2.resize``'s default), without keeping the aspect ratio; the model reads
it as RGB / 255. No landmarks are used: the crop is not rotated. The box comes from this
app's detector (MTCNN by default; RetinaFace, the authors' detector, with the user's
weights file), see :mod:`app.faces`.

numpy and OpenCV only.
"""
from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

SIZE = 380         # the crop's side (SBI's image_size)
MARGIN = 1 / 8     # of the box's width / height, on each side (a quarter, halved at test time)
NAME = "sbi"       # the crop's name in the alignment registry and the manifest


def crop_window(box: Sequence[float], height: int, width: int, margin: float = MARGIN
                ) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of SBI's crop of ``box`` = (x0, y0, x1, y1) in an
    image of ``height`` x ``width``; ``right`` and ``bottom`` are exclusive."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    top, bottom = max(0, int(y0 - h * margin)), min(height, int(y1 + h * margin) + 1)
    left, right = max(0, int(x0 - w * margin)), min(width, int(x1 + w * margin) + 1)
    return left, top, right, bottom


def sbi_crop(rgb: np.ndarray, box: Sequence[float], size: int = SIZE) -> np.ndarray:
    """SBI's crop of ``box`` from ``rgb`` (H, W, 3) uint8: uint8 (size, size, 3).

    Raises:
        ValueError: the box lies outside the image (an empty window).
    """
    left, top, right, bottom = crop_window(box, rgb.shape[0], rgb.shape[1])
    if right <= left or bottom <= top:
        raise ValueError(f"the face box {tuple(round(float(v), 1) for v in box)} lies outside "
                         f"the {rgb.shape[1]} x {rgb.shape[0]} image")
    return cv2.resize(np.ascontiguousarray(rgb[top:bottom, left:right]), (size, size),
                      interpolation=cv2.INTER_LINEAR)


def align(rgb: np.ndarray, face: Any, size: int = SIZE) -> np.ndarray:
    """The alignment-registry entry: SBI's crop of a detected face (an object with a
    ``box``, as :class:`app.faces.Face`); its landmarks are not used."""
    return sbi_crop(rgb, face.box, size)
