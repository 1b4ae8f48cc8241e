"""Videos: every face of the sampled frames, linked into one track per person, each track
with its own timeline and score; and a video as a qMIL bag.

A track's score is the mean of its frames' fake probabilities (the thesis' video-level
score); the video's is the highest track score, so one manipulated person makes the clip
manipulated.

Decoding stays within the serving limits: frames over ``max_pixels`` are refused, at most
``max_video_frames`` frames are kept however long the video (see :mod:`runtime.media`), and
the request's deadline (:mod:`runtime.deadline`) is checked before each frame decoded and
each face analysed, so a video past ``request_timeout_s`` stops at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime import deadline, domain
from runtime.align import DEFAULT as ALIGN_DEFAULT, aligner, alignment_of, crop_side
from runtime.engine import Engine
from app.faces import Face, FaceDetector, align_crop
from app.inputs import InputError, option_hint
from app.results import check
from app.services import fakeness, reliability
from app.services.face import ALL, CROP_SIZE, METHOD, analyze_crop
from app.settings import current as limits
from app.tracking import Track, TrackerConfig, track_faces
from app.viz import timeline

FRAMES_CHECKBOX = "Frames are face crops"  # the video tab's checkbox (CLI: --crop)
TOP_FRAMES = 3  # highest-scoring frames shown per track
# a track's verdict is a finding when at least this fraction of its frames is in domain
# (each frame is flagged with probability 1 - percentile / 100 even when in domain; the
# same rule as a bag's, runtime.domain.bag_check)
TRACK_MIN_IN_DOMAIN = 0.5


def _probe(path: Any) -> tuple[float, int]:
    """The container's frame rate and frame count (0 when unknown)."""
    cap = cv2.VideoCapture(str(path))
    try:
        return float(cap.get(cv2.CAP_PROP_FPS) or 0.0), int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()


def check_frame_size(path: Any) -> None:
    """Refuse a video whose frames (as its container declares them) are over ``max_pixels``.

    Raises:
        InputError: the frames are too large (the message names the limit).
    """
    cap = cv2.VideoCapture(str(path))
    try:
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    finally:
        cap.release()
    limit = limits().max_pixels
    if w * h > limit:
        raise InputError(f"{Path(str(path)).name} has frames of {w} x {h} = {w * h} pixels; the "
                         f"limit is {limit} (max_pixels). Use a smaller video.")


def video_seconds(path: Any, at_most: float | None = None) -> float | None:
    """The video's length in seconds; None when the container gives no frame rate.

    When it gives no frame count, frames are counted by reading (the request's deadline
    checked before each), stopping once past ``at_most`` seconds (the length returned is then
    just over ``at_most``; a frame rate over ``MAX_FPS`` counts as ``MAX_FPS`` there)."""
    from runtime.media import MAX_FPS

    fps, count = _probe(path)
    if fps <= 0:
        return None
    if count <= 0:
        stop = None if at_most is None else int(at_most * min(fps, MAX_FPS)) + 2
        cap = cv2.VideoCapture(str(path))
        try:
            while stop is None or count < stop:
                deadline.check()
                if not cap.grab():
                    break
                count += 1
        finally:
            cap.release()
    return count / fps if count > 0 else None


def check_video(path: Any) -> None:
    """Refuse a video over the upload size limit or longer than ``max_video_seconds``.

    Raises:
        InputError: no video, or a limit is exceeded (the message gives the limit).
    """
    if path is None:
        raise InputError("No video was given.")
    p = Path(str(path))
    if not p.is_file():
        return  # read_frames says "not found"
    lim = limits()
    size = p.stat().st_size
    if size > lim.max_upload_bytes:
        raise InputError(f"{p.name} is {size / 2**20:.1f} MB; the limit is "
                         f"{lim.max_upload_mb:g} MB.")
    check_frame_size(p)
    seconds = video_seconds(p, lim.max_video_seconds)
    if seconds is not None and seconds > lim.max_video_seconds + 1e-3:
        raise InputError(f"{p.name} is {seconds:.1f} s long; the limit is "
                         f"{lim.max_video_seconds:g} s (max_video_seconds). Trim the video.")


def read_frames(path: Any, max_frames: int, upscale: bool = True
                ) -> tuple[list[np.ndarray], list[float]]:
    """Evenly sampled RGB frames (H, W, 3) of the first ``max_video_seconds`` and their
    times (s: frame number / frame rate; the sample's position + 0.5 when the video gives no
    frame rate); errors become InputError.

    Frames are resized so that their longer side is ``max_side``; with ``upscale=False``
    only larger frames are (smaller ones keep the video's pixels). Frames over
    ``max_pixels`` are refused; the request's deadline is checked before each frame."""
    from runtime.media import VideoReadError, sample_video

    if path is None:
        raise InputError("No video was given.")
    lim = limits()
    if not 1 <= max_frames <= lim.max_video_frames:
        raise InputError(f"Frames to sample must be between 1 and {lim.max_video_frames}.")
    if Path(str(path)).is_file():
        check_frame_size(path)
    try:
        sample = sample_video(str(path), max_frames=max_frames,
                              max_seconds=lim.max_video_seconds,
                              size=lim.max_side if upscale else None, max_side=lim.max_side,
                              max_pixels=lim.max_pixels, check=deadline.check)
    except (VideoReadError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    frames = sample.frames
    if not frames:
        raise InputError("The video has no readable frames.")
    times = ([i / sample.fps for i in sample.indices] if sample.fps > 0
             else [k + 0.5 for k in range(len(frames))])
    return frames, times


def video_bag(path: Any, max_frames: int = 16) -> list[np.ndarray]:
    """A video as a qMIL bag of evenly sampled frames."""
    frames, _ = read_frames(path, min(max_frames, limits().max_bag))
    return frames


@dataclass
class TrackResult:
    """One person of the clip."""

    track_id: int                # 1-based, stable over the clip
    report: dict[str, Any]       # JSON-able (see analyze_video)
    timeline: np.ndarray         # RGB uint8 plot of this person's probabilities over time
    top_crops: list[np.ndarray]  # aligned crops (CROP_SIZE, CROP_SIZE, 3) of top frames, best first


@dataclass
class VideoResult:
    report: dict[str, Any]       # JSON-able (see analyze_video)
    timeline: np.ndarray         # RGB uint8 overview: each track's fake probability over time
    tracks: list[TrackResult]


def _detect(detector: FaceDetector | None, frames: list[np.ndarray], is_crop: bool
            ) -> list[list[Face]]:
    """The faces of each frame (largest first); with ``is_crop`` the whole frame is one."""
    if is_crop:
        return [[Face((0.0, 0.0, float(f.shape[1]), float(f.shape[0])), 1.0)] for f in frames]
    if detector is None:
        raise InputError("No face detector is available; "
                         f"{option_hint(FRAMES_CHECKBOX, '--crop')} if every frame is a face "
                         "crop.")
    found = []
    for f in frames:
        deadline.check()
        found.append(detector.detect(f))
    return found


def _crop(frame: np.ndarray, face: Face, is_crop: bool, alignment: str = ALIGN_DEFAULT,
          side: int = CROP_SIZE) -> np.ndarray:
    """The model's input crop (CROP_SIZE, CROP_SIZE, 3) of one face, aligned as the model's
    manifest entry says (:mod:`runtime.align`; a registered alignment at the model's input
    ``side``)."""
    if is_crop:
        return cv2.resize(frame, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
    if alignment == ALIGN_DEFAULT:
        return align_crop(frame, face, size=CROP_SIZE)
    return aligner(alignment)(frame, face, side)


def _track_result(engine: Engine, track: Track, frames: list[np.ndarray], times: list[float],
                  is_crop: bool, model_name: str, threshold: float | None
                  ) -> tuple[TrackResult, list[dict[str, Any]]]:
    """Run the model on every face of a track; its result and the per-frame model reports."""
    crops, rows, reports = [], [], []
    entry = engine.get(model_name, METHOD).entry
    alignment, side = alignment_of(entry), crop_side(entry)
    for ob in track.observations:
        deadline.check()
        crop = _crop(frames[ob.frame], ob.face, is_crop, alignment, side)
        r = analyze_crop(engine, crop, model_name, threshold)
        r.pop("_dissim", None)
        crops.append(crop)
        reports.append(r)
        rows.append({"time": round(times[ob.frame], 3), "fake_probability": r["fake_probability"],
                     "probabilities": r["probabilities"], "sequence": r["sequence_text"],
                     "box": None if is_crop else [round(float(v), 1) for v in ob.face.box]})
    thr = float(reports[0]["threshold"])
    score = float(np.mean([r["fake_probability"] for r in rows]))
    order = sorted(range(len(rows)), key=lambda k: (-rows[k]["fake_probability"], k))
    top = order[:TOP_FRAMES]
    verdict = "manipulated" if score >= thr else "real"
    doms = [r.get("domain") for r in reports]
    report = reliability.mark(
        {"track": track.track_id, "frames": len(rows), "fake_probability": round(score, 4),
         "verdict": verdict,
         "sequence_text": rows[order[0]]["sequence"],
         "timeline": rows,
         "top_frames": [{"time": rows[k]["time"],
                         "fake_probability": rows[k]["fake_probability"]} for k in top],
         "domain": (domain.bag_check(doms, TRACK_MIN_IN_DOMAIN)
                    if all(isinstance(d, dict) for d in doms) else None)},
        "verdict", "this face", reliability.face_finding(verdict, round(score, 4)))
    series = {"fake probability": [r["fake_probability"] for r in rows]}
    for name in rows[0]["probabilities"]:
        series[name] = [r["probabilities"][name] for r in rows]
    plot = timeline([r["time"] for r in rows], series, threshold=thr,
                    title=f"person {track.track_id}: {report['raw_verdict']}"
                          f"{'' if report['reliable'] else ' (unreliable)'} "
                          f"(mean fake probability {score:.3f})")
    return TrackResult(track.track_id, report, plot, [crops[k] for k in top]), reports


def analyze_video(engine: Engine, detector: FaceDetector | None, path: Any,
                  threshold: float | None = None, max_frames: int = 16, is_crop: bool = False,
                  model_name: str = "seqfake",
                  tracker: TrackerConfig | None = None) -> VideoResult:
    """Sequential deepfake analysis of every person in a video.

    Up to ``max_frames`` frames are sampled evenly; all faces of each are detected, linked
    into tracks (:func:`app.tracking.track_faces`), aligned and run through the model.

    Args:
        path: the video file; over the upload size or ``max_video_seconds`` it is refused.
        threshold: the verdict threshold; None: the model's own (its manifest).
        is_crop: every frame is already one face crop (one track, no detection).
        tracker: how faces are linked (defaults: :class:`app.tracking.TrackerConfig`).

    Returns:
        The report (``video``, ``frames_sampled``, ``frames_analysed`` (frames with a
        face), ``frames_manipulated`` (frames with a face the model calls manipulated),
        ``tracks``, ``verdict``, ``video_fake_probability`` (highest track score),
        ``threshold``, ``model``, ``model_version``, ``frames`` [{time, faces, error?}]),
        the overview plot and one :class:`TrackResult` per track, by id.

    Raises:
        InputError: a refused or unreadable video, or no face in any sampled frame.
    """
    if model_name == ALL:
        raise InputError("A video is analysed by one model at a time: choose one model, "
                         "not 'all'.")
    check_video(path)
    frames, times = read_frames(path, max_frames, upscale=False)  # boxes in the video's pixels
    faces = _detect(detector, frames, is_crop)
    per_frame: list[dict[str, Any]] = []
    for t, fs in zip(times, faces):
        row: dict[str, Any] = {"time": round(t, 3), "faces": len(fs)}
        if not fs:
            row["error"] = "no face found"
        per_frame.append(row)
    if not any(faces):
        raise InputError(f"No face was found in any of the {len(frames)} sampled frames. Use "
                         f"a video with a visible face, or "
                         f"{option_hint(FRAMES_CHECKBOX, '--crop')} if "
                         f"every frame is already a face crop.")
    tracks = track_faces(faces, tracker, times)
    if not tracks:  # every face was in a track shorter than tracker.min_frames
        raise InputError(f"No face was seen in at least {tracker.min_frames if tracker else 1} "
                         f"of the {len(frames)} sampled frames.")
    results: list[TrackResult] = []
    manipulated_frames: set[int] = set()
    meta: dict[str, Any] = {}
    for tr in tracks:
        res, reports = _track_result(engine, tr, frames, times, is_crop, model_name, threshold)
        results.append(res)
        manipulated_frames |= {ob.frame for ob, r in zip(tr.observations, reports)
                               if r["raw_verdict"] == "manipulated"}
        meta = meta or reports[0]
    thr = float(meta["threshold"])
    best = max(r.report["fake_probability"] for r in results)
    rule: dict[str, Any] = {}
    if fakeness.is_fakeness(engine.get(model_name, METHOD).entry):  # SBI's video rule
        best = round(_fakeness_video(tracks, results), 4)
        rule = {"video_rule": fakeness.VIDEO_RULE}
    report = {**video_verdict([r.report for r in results]),
              "video": Path(str(path)).name, "frames_sampled": len(frames),
              "frames_analysed": sum(1 for fs in faces if fs),
              "frames_manipulated": len(manipulated_frames),
              "tracks": [r.report for r in results],
              "video_fake_probability": best, **rule, "threshold": thr,
              "model": model_name, "model_version": meta["model_version"],
              "frames": per_frame}
    return VideoResult(check("face_video", report), overview_plot(times, tracks, results, thr),
                       results)


def _fakeness_video(tracks: list[Track], results: list[TrackResult]) -> float:
    """SBI's video score (:func:`app.services.fakeness.video_fakeness`) from every track's
    faces: per sampled frame, each face's box area and fake probability."""
    per_frame: dict[int, list[tuple[float, float]]] = {}
    for tr, res in zip(tracks, results):
        for ob, row in zip(tr.observations, res.report["timeline"]):
            per_frame.setdefault(ob.frame, []).append((ob.face.area, row["fake_probability"]))
    return float(fakeness.video_fakeness(list(per_frame.values())))


def video_verdict(tracks: list[dict[str, Any]]) -> dict[str, Any]:
    """The video's headline, verdict and reliability from its tracks' reports: manipulated
    when a track with a reliable verdict is; else ``unreliable`` when a track has no
    reliable verdict (it might be the manipulated one); else real. ``raw_verdict``: the
    models' own (manipulated when any track's raw verdict is)."""
    raw = ("manipulated" if any(t["raw_verdict"] == "manipulated" for t in tracks)
           else "real")
    if any(t["reliable"] and t["verdict"] == "manipulated" for t in tracks):
        verdict = "manipulated"
    elif all(t["reliable"] for t in tracks):
        verdict = "real"
    else:
        verdict = reliability.UNRELIABLE
    if verdict == reliability.UNRELIABLE:
        states = {t["reliability"] for t in tracks if not t["reliable"]}
        state = (reliability.OUT_OF_DOMAIN if reliability.OUT_OF_DOMAIN in states
                 else reliability.NO_DOMAIN_CHECK)
        head = reliability.unreliable_headline(
            state, "this video's face" if len(tracks) == 1 else "a face of this video")
    else:
        state = reliability.IN_DOMAIN
        best = max(t["fake_probability"] for t in tracks)
        head = reliability.face_finding(verdict, best)
    return {"headline": head, "reliable": verdict != reliability.UNRELIABLE,
            "reliability": state, "verdict": verdict, "raw_verdict": raw}


def overview_plot(times: list[float], tracks: list[Track], results: list[TrackResult],
                  threshold: float) -> np.ndarray:
    """Each track's fake probability over the sampled times, one line per person (gaps
    where the person is not seen) -> RGB uint8 (H, W, 3)."""
    series: dict[str, list[float]] = {}
    for tr, res in zip(tracks, results):
        vals = [float("nan")] * len(times)
        for ob, row in zip(tr.observations, res.report["timeline"]):
            vals[ob.frame] = row["fake_probability"]
        series[f"person {tr.track_id}"] = vals
    return timeline(times, series, threshold=threshold,
                    title="fake probability per person")
