"""Videos as bags (numpy + OpenCV only; the app imports this module).

The thesis treats a video clip as a bag whose instances are snippets (section 2.4.5). Here
a video becomes a bag of frames sampled evenly over its first ``max_seconds`` seconds, at
most ``max_frames`` of them (qMIL's K_max), each an RGB uint8 array. Decoding keeps only the
frames sampled (bounded memory for any length), can refuse frames over a pixel bound, and
calls a check before each frame so a request's deadline stops it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np


class VideoReadError(ValueError):
    """The video cannot be opened or holds no readable frame."""


def _even_indices(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over range(n) (centres of k equal segments), unique, sorted."""
    if n <= k:
        return np.arange(n)
    return np.unique(((np.arange(k) + 0.5) * n / k).astype(np.int64))


MAX_FPS = 120.0  # a container's frame rate above this is taken as this (first max_seconds)


@dataclass
class VideoSample:
    """Frames sampled from a video, with their frame numbers and the container's frame rate
    (0.0 when it gives none)."""

    frames: list[np.ndarray]   # RGB uint8 (H, W, 3), in time order
    indices: list[int]         # frame number of each, from 0
    fps: float


class _Frames:
    """Turns a decoded BGR frame into the RGB frame kept, refusing one over ``max_pixels``."""

    def __init__(self, name: str, size: int | None, max_side: int | None,
                 max_pixels: int | None) -> None:
        self.name, self.size, self.max_side, self.max_pixels = name, size, max_side, max_pixels

    def check_size(self, w: int, h: int) -> None:
        """Refuse frames of ``w`` x ``h`` pixels over ``max_pixels``."""
        if self.max_pixels is not None and w * h > self.max_pixels:
            raise VideoReadError(f"{self.name} has frames of {w} x {h} = {w * h} pixels; the "
                                 f"limit is {self.max_pixels} pixels per frame")

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        import cv2

        h, w = bgr.shape[:2]
        self.check_size(w, h)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        side = self.size or (self.max_side if self.max_side and max(h, w) > self.max_side
                             else None)
        if side:
            s = side / max(h, w)
            rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))),
                             interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(rgb)


def _no_check() -> None:
    return None


def sample_stream(cap: Any, max_frames: int, stop: int | None,
                  convert: Callable[[np.ndarray], np.ndarray],
                  check: Callable[[], None] = _no_check) -> tuple[list[np.ndarray], list[int]]:
    """Evenly sample a stream of unknown length with bounded memory.

    Frames ``0, s, 2s, ...`` are kept (``s`` starting at 1); when ``2 * max_frames`` are
    kept, every other one is dropped and ``s`` doubles. At the end ``max_frames`` of the kept
    frames, evenly spread, are returned: never more than ``2 * max_frames`` frames are held.

    Args:
        cap: ``grab()`` (advance one frame, False at the end) and ``retrieve()`` (the frame
            grabbed: ``(ok, BGR array)``), as ``cv2.VideoCapture``.
        stop: read at most this many frames (None: to the end).
        convert: the kept form of a frame (applied as it is read).
        check: called before each frame; raises to stop (the request's deadline).

    Returns:
        (frames, their frame numbers), in time order.
    """
    kept: list[tuple[int, np.ndarray]] = []
    step = 1
    i = 0
    while stop is None or i < stop:
        check()
        if not cap.grab():
            break
        if i % step == 0:
            ok, frame = cap.retrieve()
            if ok and frame is not None:
                kept.append((i, convert(frame)))
            if len(kept) >= 2 * max_frames:
                step *= 2
                kept = [(j, f) for j, f in kept if j % step == 0]
        i += 1
    chosen = [kept[k] for k in _even_indices(len(kept), max_frames)]
    return [f for _, f in chosen], [j for j, _ in chosen]


def sample_video(path: str | os.PathLike[str], max_frames: int = 16,
                 max_seconds: float | None = 60.0, size: int | None = None, *,
                 max_side: int | None = None, max_pixels: int | None = None,
                 check: Callable[[], None] = _no_check) -> VideoSample:
    """Sample up to ``max_frames`` frames evenly over the first ``max_seconds`` of a video.

    Each frame is converted (RGB, resized) as it is decoded and only the frames sampled are
    kept: at most ``max_frames`` when the container gives its length, at most
    ``2 * max_frames`` while sampling a stream of unknown length (:func:`sample_stream`).
    At most ``max_seconds * min(fps, MAX_FPS)`` frames are decoded (``max_seconds * MAX_FPS``
    when the frame rate is unknown).

    Args:
        max_frames: the most frames returned (evenly spaced); >= 1.
        max_seconds: only the first ``max_seconds`` of the video are used (None: all).
        size: if given, frames are resized so that the longer side is ``size`` pixels.
        max_side: if given (and ``size`` is not), larger frames are downscaled to it.
        max_pixels: frames of more pixels (width x height) are refused.
        check: called before each decoded frame; raises to stop (the request's deadline).

    Raises:
        VideoReadError: the file is missing, not a video, has no readable frame, or has
            frames over ``max_pixels``.
    """
    import cv2

    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"video file not found: {path}")
    convert = _Frames(path.name, size, max_side, max_pixels)
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoReadError(f"cannot open {path.name} as a video (unsupported or corrupt file)")
        convert.check_size(int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
                           int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        cap_n = None
        if max_seconds is not None:
            rate = min(fps, MAX_FPS) if fps > 0 else MAX_FPS
            cap_n = max(1, int(round(max_seconds * rate)))
        limit = count if count > 0 else None
        if limit is not None and cap_n is not None:
            limit = min(limit, cap_n)
        frames: dict[int, np.ndarray] = {}
        if limit is not None:
            # known length: decode in order, keep only the chosen frames
            wanted = set(_even_indices(limit, max_frames).tolist())
            last = max(wanted)
            for i in range(last + 1):
                check()
                if not cap.grab():
                    break
                if i in wanted:
                    ok, frame = cap.retrieve()
                    if ok and frame is not None:
                        frames[i] = convert(frame)
            # the container over-reported its length: sample what was really read
            if not frames and i > 0:
                limit = None
        if limit is None:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            got, idx = sample_stream(cap, max_frames, cap_n, convert, check)
            frames = dict(zip(idx, got))
    finally:
        cap.release()
    if not frames:
        raise VideoReadError(f"{path.name} holds no readable frame")
    order = sorted(frames)
    return VideoSample([frames[i] for i in order], order, fps)


def video_to_frames(path: str | os.PathLike[str], max_frames: int = 16,
                    max_seconds: float | None = 60.0, size: int | None = None
                    ) -> list[np.ndarray]:
    """Turn a video file into a bag of frames (:func:`sample_video`'s frames).

    Args:
        path: the video file (any format OpenCV's FFmpeg backend reads).
        max_frames: the most frames returned (evenly spaced); >= 1.
        max_seconds: only the first ``max_seconds`` of the video are used (None: all).
        size: if given, frames are resized so that the longer side is ``size`` pixels.

    Returns:
        ``min(max_frames, readable frames)`` RGB uint8 arrays of shape (H, W, 3), in time
        order.

    Raises:
        VideoReadError: the file is missing, not a video, or has no readable frame.
    """
    return sample_video(path, max_frames, max_seconds, size).frames
