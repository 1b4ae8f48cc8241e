"""Linking detected faces across the sampled frames of a video into tracks (one per person).

Each sampled frame gives a list of :class:`app.faces.Face` (box ``(x1, y1, x2, y2)``,
landmarks ``(5, 2)`` or None). A track's position in the next frame is predicted at
constant velocity (from its last two observations, per second when the frames' times
are given: sampled frames need not be evenly spaced), then every live track is paired with
at most one face of the frame by the Hungarian algorithm on

    cost = (1 - IoU(predicted box, face box)) + distance(predicted landmarks, face landmarks)

where the distance is the mean landmark distance (box centres when a face has no
landmarks) divided by the face size (the mean of the two boxes' ``sqrt(area)``). A pair is
allowed only if its IoU reaches ``min_iou`` or its distance is at most ``max_distance``.
A face left unpaired starts a new track; a track unpaired for more than ``max_gap``
consecutive sampled frames ends. Track ids are 1-based, numbered by first appearance
(faces first seen in the same frame: left to right by box centre).

numpy (and scipy's ``linear_sum_assignment``) only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from app.faces import Face

_FORBIDDEN = 1e6  # cost of a pair outside the gate (never kept)


@dataclass(frozen=True)
class TrackerConfig:
    """How faces are linked.

    Attributes:
        min_iou: a pair with at least this IoU (predicted box vs face box) may be linked.
        max_distance: ... or one whose landmark distance, in face sizes, is at most this.
        max_gap: sampled frames a track may miss in a row and still continue.
        min_frames: tracks seen in fewer frames are dropped (1 keeps every face).
    """

    min_iou: float = 0.1
    max_distance: float = 1.5
    max_gap: int = 2
    min_frames: int = 1

    def __post_init__(self) -> None:
        if not (0.0 <= self.min_iou <= 1.0 and self.max_distance >= 0.0 and self.max_gap >= 0
                and self.min_frames >= 1):
            raise ValueError(f"invalid tracker settings: {self}")


@dataclass
class Observation:
    """A face of a track: ``frame`` indexes the sampled frames, ``index`` that frame's faces."""

    frame: int
    index: int
    face: Face


@dataclass
class Track:
    """One person over the clip: observations in frame order, at most one per frame."""

    track_id: int
    observations: list[Observation] = field(default_factory=list)

    @property
    def frames(self) -> list[int]:
        """Sampled-frame indices where the track was seen, increasing."""
        return [o.frame for o in self.observations]

    @property
    def boxes(self) -> np.ndarray:
        """(n, 4) float boxes ``(x1, y1, x2, y2)``, one per observation."""
        return np.asarray([o.face.box for o in self.observations], dtype=np.float64).reshape(-1, 4)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``a`` (n, 4) and ``b`` (m, 4) -> (n, m) in [0, 1]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _points(box: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
    """Landmarks (5, 2), or the box centre (1, 2) when there are none."""
    if landmarks is not None:
        return np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    return np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]])


def _size(box: np.ndarray) -> float:
    """sqrt(area) of a box (4,), at least 1 pixel."""
    return float(np.sqrt(max(box[2] - box[0], 1.0) * max(box[3] - box[1], 1.0)))


def point_distance(box_a: np.ndarray, lm_a: np.ndarray | None,
                   box_b: np.ndarray, lm_b: np.ndarray | None) -> float:
    """Mean landmark distance of two faces in face sizes (the mean ``sqrt(area)`` of boxes
    (4,)); box centres are compared when either face has no landmarks (5, 2)."""
    if lm_a is None or lm_b is None:
        lm_a = lm_b = None
    pa, pb = _points(box_a, lm_a), _points(box_b, lm_b)
    d = float(np.linalg.norm(pa - pb, axis=1).mean())
    return d / (0.5 * (_size(box_a) + _size(box_b)))


class _Live:
    """A track being built: its observations and its constant-velocity prediction."""

    def __init__(self, key: int, obs: Observation, times: Sequence[float]) -> None:
        self.key, self.obs, self.times = key, [obs], times

    @property
    def last(self) -> Observation:
        return self.obs[-1]

    def velocity(self) -> np.ndarray:
        """(2,) box-centre displacement per unit of time from the last two observations."""
        if len(self.obs) < 2:
            return np.zeros(2)
        a, b = self.obs[-2], self.obs[-1]
        ca = np.add(a.face.box[:2], a.face.box[2:]) / 2
        cb = np.add(b.face.box[:2], b.face.box[2:]) / 2
        dt = self.times[b.frame] - self.times[a.frame]
        return (cb - ca) / dt if dt > 0 else np.zeros(2)

    def predict(self, frame: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Predicted box (4,) and landmarks (5, 2) or None at ``frame``."""
        shift = self.velocity() * (self.times[frame] - self.times[self.last.frame])
        box = np.asarray(self.last.face.box, dtype=np.float64) + np.tile(shift, 2)
        lm = self.last.face.landmarks
        return box, None if lm is None else np.asarray(lm, dtype=np.float64) + shift


def _cost(tracks: list[_Live], frame: int, faces: Sequence[Face], cfg: TrackerConfig
          ) -> np.ndarray:
    """(tracks, faces) link costs; pairs outside the gate cost ``_FORBIDDEN``."""
    cost = np.full((len(tracks), len(faces)), _FORBIDDEN)
    if not tracks or not faces:
        return cost
    preds = [t.predict(frame) for t in tracks]
    boxes = np.asarray([f.box for f in faces], dtype=np.float64)
    iou = iou_matrix(np.stack([p[0] for p in preds]), boxes)
    for i, (pbox, plm) in enumerate(preds):
        for j, f in enumerate(faces):
            d = point_distance(pbox, plm, boxes[j], f.landmarks)
            if iou[i, j] >= cfg.min_iou or d <= cfg.max_distance:
                cost[i, j] = (1.0 - iou[i, j]) + d
    return cost


def track_faces(faces_per_frame: Sequence[Sequence[Face]],
                config: TrackerConfig | None = None,
                times: Sequence[float] | None = None) -> list[Track]:
    """Link the faces of consecutive sampled frames into tracks.

    Args:
        faces_per_frame: for each sampled frame (in time order), its detected faces.
        config: linking thresholds (defaults: :class:`TrackerConfig`).
        times: each frame's time, increasing (len(faces_per_frame),); None: 0, 1, 2, ...
            Only the motion prediction uses them; ``max_gap`` counts sampled frames.

    Returns:
        Tracks sorted by id; ids 1..n by first appearance, ties left to right. Every face
        belongs to at most one track; a track holds at most one face per frame.
    """
    cfg = config or TrackerConfig()
    times = list(range(len(faces_per_frame))) if times is None else list(times)
    if len(times) != len(faces_per_frame):
        raise ValueError(f"{len(times)} times for {len(faces_per_frame)} frames")
    live: list[_Live] = []
    done: list[_Live] = []
    for frame, faces in enumerate(faces_per_frame):
        # tracks that missed more than max_gap frames end before this frame is linked
        still = [t for t in live if frame - t.last.frame - 1 <= cfg.max_gap]
        done += [t for t in live if t not in still]
        live = still
        cost = _cost(live, frame, faces, cfg)
        taken: set[int] = set()
        if cost.size:
            rows, cols = linear_sum_assignment(cost)
            for i, j in zip(rows, cols):
                if cost[i, j] < _FORBIDDEN:
                    live[i].obs.append(Observation(frame, int(j), faces[j]))
                    taken.add(int(j))
        new = sorted((j for j in range(len(faces)) if j not in taken),
                     key=lambda j: (faces[j].box[0] + faces[j].box[2]) / 2)
        key0 = len(live) + len(done)
        live += [_Live(key0 + k, Observation(frame, j, faces[j]), times)
                 for k, j in enumerate(new)]
    kept = [t for t in done + live if len(t.obs) >= cfg.min_frames]
    kept.sort(key=lambda t: t.key)  # keys were given by first appearance, left to right
    return [Track(n, t.obs) for n, t in enumerate(kept, 1)]
