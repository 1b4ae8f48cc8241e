"""Face detection behind one interface, and the aligned crop the deepfake model sees.

Detectors return :class:`Face` objects (box, 5 landmarks, score):

* :class:`OnnxMTCNNDetector`: the default, torch-free: facenet-pytorch's MTCNN networks
  exported to ONNX at export time (``<artifacts>/detector/``, :mod:`export.mtcnn`) and its
  cascade in numpy (:mod:`runtime.mtcnn`); the same boxes and landmarks as facenet-pytorch
  (within 1e-4 px on the test images, ``reports/mtcnn_parity.md``).
* :class:`MTCNNDetector` (facenet-pytorch, torch): used when the artifacts hold no ONNX
  detector and torch is installed; its weights ship in the wheel.
* :class:`RetinaFaceDetector` (retinaface-pytorch): used when the user configures its
  weights file (``REPLENS_RETINAFACE_WEIGHTS`` or ``--retinaface-weights``); nothing is
  downloaded.

Landmark order: left eye, right eye, nose, left mouth corner, right mouth corner (image
coordinates, the person's left eye is on the image's left as in both detectors' output).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np


@dataclass
class Face:
    """One detected face. box: (x1, y1, x2, y2) pixels; landmarks: (5, 2) or None."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = field(default=None, repr=False)

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 1) for v in self.box], "score": round(self.score, 4),
                "landmarks": None if self.landmarks is None
                else np.round(self.landmarks, 1).tolist()}


class FaceDetector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 image (H, W, 3), largest first."""


MTCNN_MIN_SCORE = 0.9    # faces MTCNN scores lower are dropped
MTCNN_DETECT_SIDE = 640  # MTCNN runs on a copy at most this long (its cost grows with pixels)


def _shrunk(rgb: np.ndarray, detect_side: int) -> tuple[np.ndarray, float]:
    """``rgb`` (H, W, 3) area-resized so its longer side is at most ``detect_side``, and the
    scale applied (1.0: unchanged)."""
    scale = min(1.0, detect_side / max(rgb.shape[:2]))
    if scale == 1.0:
        return rgb, scale
    return cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)),
                      interpolation=cv2.INTER_AREA), scale


def _mtcnn_faces(boxes: np.ndarray, probs: Any, points: np.ndarray, scale: float,
                 min_score: float) -> list[Face]:
    """Faces from MTCNN's boxes (N, 4), scores (N,) and landmarks (N, 5, 2) found at
    ``scale``, mapped back to the original image, at least ``min_score``, largest first."""
    boxes, points = np.asarray(boxes) / scale, np.asarray(points) / scale
    faces = [Face(tuple(map(float, b)), float(p), np.asarray(l, dtype=np.float32))
             for b, p, l in zip(boxes, probs, points) if p is not None and p >= min_score]
    return sorted(faces, key=lambda f: -f.area)


class MTCNNDetector:
    """facenet-pytorch's MTCNN (torch; weights inside the wheel; runs offline)."""

    name = "MTCNN (facenet-pytorch)"

    def __init__(self, min_score: float = MTCNN_MIN_SCORE, device: str = "cpu",
                 detect_side: int = MTCNN_DETECT_SIDE) -> None:
        from facenet_pytorch import MTCNN

        self.min_score, self.detect_side = min_score, detect_side
        self._mtcnn = MTCNN(keep_all=True, device=device)
        self._lock = threading.Lock()  # MTCNN's torch modules are not re-entrant on CPU threads

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Detect on a copy at most ``detect_side`` px long (MTCNN's cost grows with the
        pixel count); boxes and landmarks are mapped back to ``rgb``'s coordinates."""
        small, scale = _shrunk(rgb, self.detect_side)
        with self._lock:
            boxes, probs, points = self._mtcnn.detect(small, landmarks=True)
        if boxes is None:  # numpy 2: probs is [None] when nothing is found
            return []
        return _mtcnn_faces(boxes, probs, points, scale, self.min_score)


class OnnxMTCNNDetector:
    """MTCNN without torch: the ONNX networks of ``<artifacts>/detector/`` and the numpy
    cascade of :class:`runtime.mtcnn.MTCNNCascade`; the same faces as :class:`MTCNNDetector`.

    Raises:
        runtime.mtcnn.DetectorUnavailableError: the files are missing or do not match.
    """

    name = "MTCNN (ONNX, facenet-pytorch weights)"

    def __init__(self, artifacts: str | os.PathLike[str], min_score: float = MTCNN_MIN_SCORE,
                 detect_side: int = MTCNN_DETECT_SIDE) -> None:
        from runtime.mtcnn import MTCNNCascade

        self.min_score, self.detect_side = min_score, detect_side
        self._cascade = MTCNNCascade(artifacts)  # onnxruntime sessions: thread-safe

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """As :meth:`MTCNNDetector.detect`."""
        small, scale = _shrunk(rgb, self.detect_side)
        boxes, probs, points = self._cascade.detect(np.ascontiguousarray(small))
        return _mtcnn_faces(boxes, probs, points, scale, self.min_score)


class RetinaFaceDetector:
    """retinaface-pytorch with a local weights file (no download)."""

    name = "RetinaFace (retinaface-pytorch)"

    def __init__(self, weights: str, min_score: float = 0.7, max_size: int = 1024,
                 device: str = "cpu") -> None:
        import torch
        from retinaface.predict_single import Model

        if not os.path.isfile(weights):
            raise FileNotFoundError(f"RetinaFace weights file not found: {weights}")
        self._model = Model(max_size=max_size, device=device)
        state = torch.load(weights, map_location=device, weights_only=True)
        self._model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        self._model.eval()
        self.min_score = min_score
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[Face]:
        with self._lock:
            found = self._model.predict_jsons(rgb, confidence_threshold=self.min_score)
        faces = [Face(tuple(map(float, f["bbox"])), float(f["score"]),
                      np.asarray(f["landmarks"], dtype=np.float32))
                 for f in found if f.get("bbox")]
        return sorted(faces, key=lambda f: -f.area)


def default_detector(retinaface_weights: str | None = None,
                     artifacts: str | os.PathLike[str] | None = None) -> FaceDetector:
    """RetinaFace when its weights are configured; else the ONNX MTCNN of ``artifacts``
    (default: :func:`runtime.artifacts.artifacts_dir`) when it was exported; else
    facenet-pytorch's MTCNN when torch is installed.

    Raises:
        runtime.mtcnn.DetectorUnavailableError: no ONNX detector and no facenet-pytorch
            (the torch-free serving install), or the ONNX files do not match their record.
    """
    from app.inputs import option_hint
    from runtime.artifacts import artifacts_dir
    from runtime.mtcnn import RECORD_FILE, DetectorUnavailableError

    weights = retinaface_weights or os.environ.get("REPLENS_RETINAFACE_WEIGHTS")
    if weights:
        return RetinaFaceDetector(weights)
    art = artifacts_dir(artifacts)
    if (art / RECORD_FILE).is_file():
        return OnnxMTCNNDetector(art)
    try:
        return MTCNNDetector()
    except ImportError as exc:
        raise DetectorUnavailableError(
            f"no face detector: {art} holds no ONNX MTCNN ({RECORD_FILE}) and "
            f"facenet-pytorch cannot be imported here ({exc}). Export the detector in the "
            f"full environment with `python -m export.mtcnn --artifacts {art}`, or "
            f"{option_hint('Image is already a face crop', '--crop')}.") from exc


def align_crop(rgb: np.ndarray, face: Face, size: int = 256, margin: float = 0.45) -> np.ndarray:
    """Rotate so the eyes are level and crop a square around the face with a margin.

    The square's side is ``(1 + 2 * margin)`` times the face box's longer side, centred a
    little above the box centre so hair and bangs fit (Seq-DeepFake crops include them).

    Returns:
        uint8 (size, size, 3) crop; out-of-image areas are filled by edge replication.
    """
    x1, y1, x2, y2 = face.box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cy -= 0.08 * side
    angle = 0.0
    if face.landmarks is not None:
        (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
        angle = float(np.degrees(np.arctan2(ry - ly, rx - lx)))
    scale = size / side
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    m[0, 2] += size / 2 - cx
    m[1, 2] += size / 2 - cy
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def draw_faces(rgb: np.ndarray, faces: list[Face], selected: int = 0) -> np.ndarray:
    """Boxes (selected in green, others in amber) with their index and landmarks."""
    out = rgb.copy()
    thick = max(2, round(max(rgb.shape[:2]) / 300))
    for i, f in enumerate(faces):
        color = (40, 200, 60) if i == selected else (240, 170, 20)
        x1, y1, x2, y2 = (int(round(v)) for v in f.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thick)
        cv2.putText(out, f"#{i + 1}", (x1, max(12, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5 * thick, color, thick)
        if f.landmarks is not None:
            for x, y in f.landmarks:
                cv2.circle(out, (int(x), int(y)), thick + 1, color, -1)
    return out
