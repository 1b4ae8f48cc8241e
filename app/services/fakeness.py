"""The answer of a binary fakeness model (SBI imported from its published weights).

Such a model (manifest ``extra.answer == "fakeness"``) gives one number per face, the
probability that the face was swapped or blended; it has no edit sequence and no component
order, and its answer says so. Its verdict is ``manipulated`` at or above its threshold (0.5
unless the manifest names another), ``real`` below. Its domain check cannot be fitted
without faces of the data it was trained on, so it is usually exported without one: its
answers are then marked unreliable with the raw answer shown (:mod:`app.services.reliability`).

SBI's video rule (mapooon/SelfBlendedImages ``src/inference/inference_video.py`` with
``preprocess.extract_frames``): in each sampled frame the faces smaller than half the
largest face's box area are dropped, the frame's score is the largest fakeness of the rest,
and the video's score is the mean over the frames that have a face (:func:`video_fakeness`).
Per person (one track, one face per frame) that is the mean over the track's frames.

Pure Python and numpy (the serving tier).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from app.services import reliability

ANSWER = "fakeness"  # manifest extra.answer of such a model
DECODER = "none"     # the answer's ``decoder``: no sequence is decoded
DEFAULT_DETECTS = ("a binary face-swap / blending detector: one fakeness score per face, no "
                   "edit sequence and no component order")
VIDEO_RULE = ("SBI's: per frame the largest fakeness over the faces at least half the largest "
              "face's box area, then the mean over the frames with a face")


def is_fakeness(entry: dict[str, Any]) -> bool:
    """Whether a manifest entry is a binary fakeness model."""
    return (entry.get("extra") or {}).get("answer") == ANSWER


def answer(model_name: str, model: Any, probs: np.ndarray, thr: float,
           domain: dict[str, Any] | None, temperature: float | None) -> dict[str, Any]:
    """The face answer of a fakeness model from its ``probs`` (1,) = softmax[:, 1], marked
    with its reliability (a ``no_domain_check`` model's verdict reads ``unreliable``)."""
    extra = model.entry.get("extra", {})
    p = round(float(np.asarray(probs).reshape(-1)[0]), 4)
    verdict = "manipulated" if p >= thr else "real"
    detects = str(extra.get("detects") or DEFAULT_DETECTS)
    return reliability.mark({
        "model": model_name, "model_version": model.version, "provider": model.provider,
        "task": "binary", "verdict": verdict, "fake_probability": p, "threshold": thr,
        "sequence": [],
        "sequence_text": f"no sequence: this model is {detects}",
        "probabilities": {"fake": p},
        "trained_on": extra.get("data", ""),
        "decoder": DECODER,
        "answer": ANSWER,
        "detects": detects,
        "domain": domain,
        "temperature": temperature,
        "_dissim": None,
    }, "verdict", "this face", reliability.face_finding(verdict, p))


def frame_fakeness(faces: Sequence[tuple[float, float]]) -> float | None:
    """One frame's score under SBI's video rule from its faces' ``(box area, fakeness)``:
    the largest fakeness of the faces at least half the largest area; None: no face."""
    if not faces:
        return None
    largest = max(a for a, _ in faces)
    return max(p for a, p in faces if a >= largest / 2)


def video_fakeness(frames: Sequence[Sequence[tuple[float, float]]]) -> float | None:
    """The video's score under SBI's video rule: the mean of :func:`frame_fakeness` over
    the frames that have a face; None when no frame has one."""
    scores = [s for s in (frame_fakeness(f) for f in frames) if s is not None]
    return float(np.mean(scores)) if scores else None
