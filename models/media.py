"""Videos as bags (numpy + OpenCV only; the app imports this module).

The thesis treats a video clip as a bag whose instances are snippets (section 2.4.5). Here
a video becomes a bag of frames sampled evenly over its first ``max_seconds`` seconds, at
most ``max_frames`` of them (qMIL's K_max), each an RGB uint8 array.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class VideoReadError(ValueError):
    """The video cannot be opened or holds no readable frame."""


def _even_indices(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over range(n) (centres of k equal segments), unique, sorted."""
    if n <= k:
        return np.arange(n)
    return np.unique(((np.arange(k) + 0.5) * n / k).astype(np.int64))


def video_to_frames(path: str | os.PathLike[str], max_frames: int = 16,
                    max_seconds: float | None = 60.0, size: int | None = None
                    ) -> list[np.ndarray]:
    """Turn a video file into a bag of frames.

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
    import cv2

    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"video file not found: {path}")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoReadError(f"cannot open {path.name} as a video (unsupported or corrupt file)")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        limit = count if count > 0 else None
        if max_seconds is not None and fps > 0:
            cap_n = max(1, int(round(max_seconds * fps)))
            limit = cap_n if limit is None else min(limit, cap_n)
        frames: dict[int, np.ndarray] = {}
        if limit is not None:
            # known length: decode in order, keep only the chosen frames
            wanted = set(_even_indices(limit, max_frames).tolist())
            last = max(wanted)
            for i in range(last + 1):
                if not cap.grab():
                    break
                if i in wanted:
                    ok, frame = cap.retrieve()
                    if ok and frame is not None:
                        frames[i] = frame
            # the container over-reported its length: sample what was really read
            if not frames and i > 0:
                limit = None
        if limit is None:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            all_frames: list[np.ndarray] = []
            hard_cap = int(max_seconds * 120) if max_seconds is not None else 100_000
            while len(all_frames) < hard_cap:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                all_frames.append(frame)
            frames = {int(j): all_frames[j] for j in _even_indices(len(all_frames), max_frames)}
    finally:
        cap.release()
    if not frames:
        raise VideoReadError(f"{path.name} holds no readable frame")
    out = []
    for i in sorted(frames):
        rgb = cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB)
        if size:
            h, w = rgb.shape[:2]
            s = size / max(h, w)
            rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))),
                             interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(rgb))
    return out
