"""Face tab: detect, align, and read the manipulation sequence of a face."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from runtime.engine import Engine
from app.faces import Face, FaceDetector, align_crop, draw_faces
from app.inputs import InputError, display_rgb, load_image
from app.viz import overlay_heatmap
from models.sequence import decode_sequence

CROP_SIZE = 256
METHOD = "seqfake"  # the method whose models this service runs


@dataclass
class FaceResult:
    report: dict[str, Any]
    annotated: np.ndarray | None  # input with all faces drawn
    crop: np.ndarray              # aligned crop (CROP_SIZE, CROP_SIZE, 3)
    where: np.ndarray             # where-map overlaid on the crop


def analyze_crop(engine: Engine, crop: np.ndarray, model_name: str = "seqfake",
                 threshold: float | None = None) -> dict[str, Any]:
    """Run the sequential deepfake model on an aligned RGB crop.

    Returns a dict with the verdict, the ordered components with probabilities, every
    component's probability, and the raw where-map (h, w) under ``_dissim``.
    """
    model = engine.get(model_name, METHOD)
    extra = model.entry.get("extra", {})
    thr = float(extra.get("threshold", 0.5) if threshold is None else threshold)
    if not 0.0 < thr < 1.0:
        raise InputError(f"The threshold must be between 0 and 1, got {thr}.")
    out = model.run({"image": model.prepare([crop])})
    probs = out["probs"][0].astype(float)
    labels = model.labels
    if "sequence" in out:  # an autoregressive decoder (seqfakeformer): its own greedy order
        tokens = [int(c) for c in out["sequence"][0]]
        # up to the first "no edit" token, as the evaluation reads it (metrics.seqfake.unpad)
        order = [c - 1 for c in tokens[:tokens.index(0) if 0 in tokens else len(tokens)]]
    else:                  # the thesis: components above the threshold, by probability
        order = decode_sequence(probs, thr)
    fake_p = float(probs.max()) if len(probs) else 0.0
    steps = [{"step": i + 1, "component": labels[c], "probability": round(float(probs[c]), 4)}
             for i, c in enumerate(order)]
    return {
        "model": model_name, "model_version": model.version, "provider": model.provider,
        "task": extra.get("task", "components"),
        "verdict": "manipulated" if order else "real",
        "fake_probability": round(fake_p, 4),
        "threshold": thr,
        "sequence": steps,
        "sequence_text": " -> ".join(f"{s['step']}. {s['component']}" for s in steps)
        if steps else "no manipulation found",
        "probabilities": {lab: round(float(p), 4) for lab, p in zip(labels, probs)},
        "trained_on": extra.get("data", ""),
        "decoder": "autoregressive" if "sequence" in out else "probability-ranked",
        "_dissim": out["dissim"][0] if "dissim" in out else None,
    }


def analyze_face(engine: Engine, detector: FaceDetector | None, source: Any,
                 threshold: float | None = None, face_index: int = 0, is_crop: bool = False,
                 model_name: str = "seqfake") -> FaceResult:
    """Full face pipeline for one uploaded image.

    Args:
        source: path / bytes / array of the upload.
        face_index: which detected face to analyse (0 = largest).
        is_crop: the image is already an aligned face crop (skip detection).
    """
    # detection and the aligned crop need RGB; the face model is RGB and its preprocessing
    # would flatten transparency on white too (runtime.preprocess.to_pil)
    rgb = display_rgb(load_image(source, min_side=32))
    faces: list[Face] = []
    annotated = None
    if is_crop:
        crop = cv2.resize(rgb, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
    else:
        if detector is None:
            raise InputError("No face detector is available; tick 'already a face crop'.")
        faces = detector.detect(rgb)
        if not faces:
            raise InputError("No face was found in this image. Upload a photo with a visible "
                             "face, or tick 'image is already a face crop' to analyse the "
                             "whole image.")
        if not 0 <= face_index < len(faces):
            raise InputError(f"Face #{face_index + 1} does not exist: {len(faces)} face(s) "
                             f"were found.")
        crop = align_crop(rgb, faces[face_index], size=CROP_SIZE)
        annotated = draw_faces(rgb, faces, selected=face_index)
    report = analyze_crop(engine, crop, model_name, threshold)
    dissim = report.pop("_dissim")
    report["faces"] = [f.to_dict() for f in faces]
    report["face_number"] = face_index + 1 if faces else None  # 1-based, as --face / "Face #"
    report["detector"] = getattr(detector, "name", None) if not is_crop else "none (crop given)"
    where = overlay_heatmap(crop, dissim) if dissim is not None else crop
    return FaceResult(report, annotated, crop, where)
