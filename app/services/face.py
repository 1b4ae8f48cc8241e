"""Face tab: detect, align, and read the manipulation sequence of a face."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from runtime.engine import Engine
from app.faces import Face, FaceDetector, align_crop, draw_faces
from app.batch import NoFaceError
from app.inputs import InputError, display_rgb, load_image
from app.viz import overlay_heatmap
from models.sequence import decode_sequence

CROP_SIZE = 256
METHOD = "seqfake"  # the method whose models this service runs
ALL = "all"         # every served model of the method, side by side


@dataclass
class FaceResult:
    report: dict[str, Any]
    annotated: np.ndarray | None  # input with all faces drawn
    crop: np.ndarray              # aligned crop (CROP_SIZE, CROP_SIZE, 3)
    where: np.ndarray | None      # where-map overlaid on the crop (None: the model has none)


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
    cal = model.entry.get("calibration")
    if cal and "logits" in out:  # temperature scaling fitted at export (export/calibration.py)
        probs = 1.0 / (1.0 + np.exp(-out["logits"][0].astype(float) / float(cal["temperature"])))
    else:
        probs = out["probs"][0].astype(float)
    labels = model.labels
    if "sequence" in out:  # an autoregressive decoder (seqfakeformer): its own greedy order
        tokens = [int(c) for c in out["sequence"][0]]
        # up to the first "no edit" token, as the evaluation reads it (metrics.seqfake.unpad)
        order = [c - 1 for c in tokens[:tokens.index(0) if 0 in tokens else len(tokens)]]
    else:                  # the thesis: components above the threshold, by probability
        order = decode_sequence(probs, thr)
    fake_p = float(probs.max()) if len(probs) else 0.0
    dom = model.domain_check(out)
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
        "domain": dom[0] if dom else None,
        "temperature": float(cal["temperature"]) if cal and "logits" in out else None,
        "_dissim": out["dissim"][0] if "dissim" in out else None,
    }


def model_card_line(engine: Engine, model_name: str) -> dict[str, Any]:
    """What the side-by-side view shows of a model: its name, version, sha256, task,
    decoder and the test metrics measured at export (Fixed-Acc, Adaptive-Acc)."""
    model = engine.get(model_name, METHOD)
    metrics = model.entry.get("metrics", {})
    extra = model.entry.get("extra", {})
    return {"model": model_name, "version": model.version, "sha256": model.entry.get("sha256"),
            "variant": model.entry.get("variant"), "task": extra.get("task", "components"),
            "fixed_acc": metrics.get("fixed_acc"), "adaptive_acc": metrics.get("adaptive_acc"),
            "n_eval": metrics.get("n_eval"), "trained_on": extra.get("data", "")}


def resolve_models(engine: Engine, model_name: str | None) -> list[str]:
    """``all`` -> every served model of the method (manifest order); else [model_name]."""
    if model_name in (None, ""):
        model_name = "seqfake"
    if model_name == ALL:
        served = engine.served(METHOD)
        names = [n for n in served if n == "seqfake"] + [n for n in served if n != "seqfake"]
        if not names:
            raise InputError("No sequential deepfake model is exported yet.")
        return names
    return [model_name]


def find_faces(detector: FaceDetector | None, rgb: np.ndarray, is_crop: bool
               ) -> tuple[list[Face], list[np.ndarray]]:
    """The faces of an RGB image (H, W, 3) and their aligned crops (CROP_SIZE, CROP_SIZE, 3),
    largest first; with ``is_crop`` the whole image is the one crop (no faces listed).

    Raises:
        NoFaceError: no face was found.
    """
    if is_crop:
        return [], [cv2.resize(rgb, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)]
    if detector is None:
        raise InputError("No face detector is available; tick 'already a face crop'.")
    faces = detector.detect(rgb)
    if not faces:
        raise NoFaceError("No face was found in this image. Upload a photo with a visible "
                          "face, or tick 'image is already a face crop' to analyse the "
                          "whole image.")
    return faces, [align_crop(rgb, f, size=CROP_SIZE) for f in faces]


def analyze_face_models(engine: Engine, detector: FaceDetector | None, source: Any,
                        models: list[str], threshold: float | None = None, face_index: int = 0,
                        is_crop: bool = False) -> list[FaceResult]:
    """One face analysed by each of ``models`` (detected and aligned once): the
    side-by-side view. Same arguments as :func:`analyze_face`."""
    # detection and the aligned crop need RGB; the face model is RGB and its preprocessing
    # would flatten transparency on white too (runtime.preprocess.to_pil)
    rgb = display_rgb(load_image(source, min_side=32))
    faces, crops = find_faces(detector, rgb, is_crop)
    if not 0 <= face_index < len(crops):
        raise InputError(f"Face #{face_index + 1} does not exist: {len(faces)} face(s) "
                         f"were found.")
    crop = crops[face_index]
    annotated = draw_faces(rgb, faces, selected=face_index) if faces else None
    results = []
    for name in models:
        report = analyze_crop(engine, crop, name, threshold)
        dissim = report.pop("_dissim")
        report["faces"] = [f.to_dict() for f in faces]
        report["face_number"] = face_index + 1 if faces else None  # 1-based, as --face
        report["detector"] = getattr(detector, "name", None) if not is_crop else "none (crop given)"
        where = overlay_heatmap(crop, dissim) if dissim is not None else None
        results.append(FaceResult(report, annotated, crop, where))
    return results


def analyze_face(engine: Engine, detector: FaceDetector | None, source: Any,
                 threshold: float | None = None, face_index: int = 0, is_crop: bool = False,
                 model_name: str = "seqfake") -> FaceResult:
    """Full face pipeline for one uploaded image.

    Args:
        source: path / bytes / array of the upload.
        face_index: which detected face to analyse (0 = largest).
        is_crop: the image is already an aligned face crop (skip detection).
    """
    return analyze_face_models(engine, detector, source, [model_name], threshold, face_index,
                               is_crop)[0]


def batch_columns(engine: Engine, models: list[str]) -> list[str]:
    """The batch rows' columns for these models: one ``p_<component>`` per label (the union
    of the models' labels, in first-seen order)."""
    labels: list[str] = []
    for name in models:
        labels += [lab for lab in engine.get(name, METHOD).labels if lab not in labels]
    return ["face", "box", "face_score", "model", "model_version", "verdict",
            "fake_probability", "sequence", *(f"p_{lab}" for lab in labels), "in_domain"]


def batch_rows(engine: Engine, detector: FaceDetector | None, path: Any, models: list[str],
               threshold: float | None = None, is_crop: bool = False) -> list[dict[str, Any]]:
    """One row per face (largest first) per model, for :mod:`app.batch`."""
    rgb = display_rgb(load_image(path, min_side=32))
    faces, crops = find_faces(detector, rgb, is_crop)
    rows = []
    for i, crop in enumerate(crops):
        face = faces[i] if faces else None
        for name in models:
            r = analyze_crop(engine, crop, name, threshold)
            r.pop("_dissim")
            rows.append({
                "face": i + 1, "box": face.to_dict()["box"] if face else None,
                "face_score": round(face.score, 4) if face else None,
                "model": name, "model_version": r["model_version"], "verdict": r["verdict"],
                "fake_probability": r["fake_probability"],
                "sequence": " -> ".join(s["component"] for s in r["sequence"]),
                **{f"p_{lab}": p for lab, p in r["probabilities"].items()},
                "in_domain": (r.get("domain") or {}).get("in_domain")})
    return rows
