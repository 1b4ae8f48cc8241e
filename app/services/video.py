"""Videos: per-frame face analysis with a timeline, and a video as a qMIL bag."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.engine import Engine
from app.faces import FaceDetector
from app.inputs import InputError
from app.services.face import analyze_face
from app.settings import current as limits
from app.viz import timeline


def read_frames(path: Any, max_frames: int) -> tuple[list[np.ndarray], list[float]]:
    """Evenly sampled RGB frames and their approximate times (s); errors become InputError."""
    import cv2

    from models.media import VideoReadError, video_to_frames

    if path is None:
        raise InputError("No video was given.")
    lim = limits()
    if not 1 <= max_frames <= lim.max_video_frames:
        raise InputError(f"Frames to sample must be between 1 and {lim.max_video_frames}.")
    try:
        frames = video_to_frames(str(path), max_frames=max_frames,
                                 max_seconds=lim.max_video_seconds, size=lim.max_side)
    except (VideoReadError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    if not frames:
        raise InputError("The video has no readable frames.")
    cap = cv2.VideoCapture(str(path))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    cap.release()
    duration = min(count / fps, lim.max_video_seconds) if fps > 0 and count > 0 else float(len(frames))
    # video_to_frames samples the centres of equal segments
    times = [(i + 0.5) * duration / len(frames) for i in range(len(frames))]
    return frames, times


def video_bag(path: Any, max_frames: int = 16) -> list[np.ndarray]:
    """A video as a qMIL bag of evenly sampled frames."""
    frames, _ = read_frames(path, min(max_frames, limits().max_bag))
    return frames


@dataclass
class VideoResult:
    report: dict[str, Any]
    timeline: np.ndarray


def analyze_video(engine: Engine, detector: FaceDetector | None, path: Any,
                  threshold: float | None = None, max_frames: int = 16,
                  is_crop: bool = False) -> VideoResult:
    """Sequential deepfake analysis of sampled frames; frames without a face are skipped."""
    frames, times = read_frames(path, max_frames)
    per_frame, t_ok, series = [], [], {}
    for frame, t in zip(frames, times):
        try:
            r = analyze_face(engine, detector, frame, threshold=threshold, is_crop=is_crop).report
        except InputError as exc:
            per_frame.append({"time": round(t, 3), "error": str(exc)})
            continue
        per_frame.append({"time": round(t, 3), "verdict": r["verdict"],
                          "fake_probability": r["fake_probability"],
                          "sequence": r["sequence_text"], "probabilities": r["probabilities"]})
        t_ok.append(t)
        for name, p in r["probabilities"].items():
            series.setdefault(name, []).append(p)
    analysed = [f for f in per_frame if "verdict" in f]
    if not analysed:
        raise InputError(f"No face was found in any of the {len(frames)} sampled frames.")
    fake = sum(f["verdict"] == "manipulated" for f in analysed)
    report = {"frames_sampled": len(frames), "frames_analysed": len(analysed),
              "frames_manipulated": fake,
              "video_fake_probability": round(float(np.mean([f["fake_probability"] for f in analysed])), 4),
              "frames": per_frame}
    plot = timeline(t_ok, series, title="per-frame component probabilities",
                    threshold=float(threshold) if threshold else None)
    return VideoResult(report, plot)
