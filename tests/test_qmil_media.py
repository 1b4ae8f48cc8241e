"""A video file becomes a bag of evenly sampled frames (runtime.media)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.media import VideoReadError, video_to_frames


def _write_video(path, n=40, fps=10.0, size=(48, 32)):
    """Frame i is a flat gray image of brightness 5 * i (so the index can be read back)."""
    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert vw.isOpened()
    for i in range(n):
        vw.write(np.full((h, w, 3), 5 * i, np.uint8))
    vw.release()
    return path


def _index(frame):
    return int(round(float(frame.mean()) / 5))


def test_even_sampling_and_cap(tmp_path):
    p = _write_video(tmp_path / "clip.avi")
    frames = video_to_frames(p, max_frames=8, max_seconds=None)
    assert len(frames) == 8
    assert all(f.shape == (32, 48, 3) and f.dtype == np.uint8 for f in frames)
    idx = [_index(f) for f in frames]
    assert idx == sorted(idx) and idx[0] <= 3 and idx[-1] >= 36
    gaps = np.diff(idx)
    assert gaps.min() >= 4 and gaps.max() <= 6          # evenly spread over 40 frames


def test_duration_cap_and_short_video(tmp_path):
    p = _write_video(tmp_path / "clip.avi")            # 4 s at 10 fps
    frames = video_to_frames(p, max_frames=4, max_seconds=1.0)   # first 10 frames only
    assert len(frames) == 4 and max(_index(f) for f in frames) <= 10
    short = _write_video(tmp_path / "short.avi", n=3)
    assert len(video_to_frames(short, max_frames=16)) == 3
    resized = video_to_frames(p, max_frames=2, size=24)
    assert resized[0].shape == (16, 24, 3)


def test_clear_errors(tmp_path):
    with pytest.raises(VideoReadError, match="not found"):
        video_to_frames(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    with pytest.raises(VideoReadError):
        video_to_frames(junk)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(VideoReadError):
        video_to_frames(empty)
    with pytest.raises(ValueError):
        video_to_frames(_write_video(tmp_path / "ok.avi", n=2), max_frames=0)
