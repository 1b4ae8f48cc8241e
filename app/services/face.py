"""Face tab: detect, align, and read the manipulation sequence of a face."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

from runtime import calibration
from runtime.align import DEFAULT as ALIGN_DEFAULT, aligner, alignment_of, crop_side
from runtime.engine import Engine, pick_model
from app.results import check
from app.faces import Face, FaceDetector, align_crop, draw_faces
from app.batch import NoFaceError
from app.inputs import InputError, display_rgb, load_image, option_hint
from app.services import fakeness, reliability
from app.viz import overlay_heatmap
from runtime.sequence import decode_sequence

CROP_SIZE = 256
METHOD = "seqfake"  # the method whose models this service runs
ALL = "all"         # every served model of the method, side by side
CROP_CHECKBOX = "Image is already a face crop"  # the face tab's checkbox (CLI: --crop)
ROTATIONS = (90, 180, 270)  # degrees counter-clockwise tried when no face is found upright
# ... where a face counts only with this detector score: three more looks at an image that
# has no upright face are three more chances of a false detection (on the generated test
# faces every turned "face" MTCNN found scored 0.90-0.98 and was a patch of hair or an eye;
# the astronaut turned back scores 1.00)
ROTATED_MIN_SCORE = 0.99
# Detection runs on the image resampled so its longer side is DETECT_SIDE px, up or down:
# the same picture at any file size gives the detector (nearly) the same pixels, hence the
# same box and landmarks, hence the same crop (reports/stability.md measured the gain).
DETECT_SIDE = 640
CROP_MARGIN = 0.45  # app.faces.align_crop's margin around the face box


@dataclass
class FaceResult:
    report: dict[str, Any]
    annotated: np.ndarray | None  # input with all faces drawn
    crop: np.ndarray              # aligned crop (CROP_SIZE, CROP_SIZE, 3)
    where: np.ndarray | None      # where-map overlaid on the crop (None: the model has none)


def analyze_crop(engine: Engine, crop: np.ndarray, model_name: str = "seqfake",
                 threshold: float | None = None) -> dict[str, Any]:
    """Run the sequential deepfake model on an aligned RGB crop.

    Returns a dict with the headline and verdict (``unreliable`` unless the domain check
    measured the crop in domain; the model's own verdict in ``raw_verdict``, see
    :mod:`app.services.reliability`), the ordered components with probabilities, every
    component's probability, and the raw where-map (h, w) under ``_dissim``.
    """
    model = engine.get(model_name, METHOD)
    extra = model.entry.get("extra", {})
    thr = float(extra.get("threshold", 0.5) if threshold is None else threshold)
    if not 0.0 < thr < 1.0:
        raise InputError(f"The threshold must be between 0 and 1, got {thr}.")
    x = model.prepare([crop])
    out = model.run({"image": x})
    if fakeness.is_fakeness(model.entry):  # a binary face-swap detector: no sequence
        dom = model.domain_check(out, x)
        return fakeness.answer(model_name, model, out["probs"][0], thr,
                               dom[0] if dom else None, None)
    probs, temperature = calibration.apply(model.entry, out, "probs")
    probs = probs[0]
    labels = model.labels
    if "sequence" in out:  # a decoder (seqfakeformer) or the slot order head: its own order
        tokens = [int(c) for c in out["sequence"][0]]
        # up to the first token that is not an edit ("no edit" 0, or a token past the
        # labels, which the authors' vocabulary has), as the evaluation reads it
        ends = [i for i, c in enumerate(tokens) if not 1 <= c <= len(labels)]
        order = [c - 1 for c in tokens[:ends[0] if ends else len(tokens)]]
    else:                  # the thesis: components above the threshold, by probability
        order = decode_sequence(probs, thr)
    fake_p = float(probs.max()) if len(probs) else 0.0
    dom = model.domain_check(out, x)
    steps = [{"step": i + 1, "component": labels[c], "probability": round(float(probs[c]), 4)}
             for i, c in enumerate(order)]
    verdict = "manipulated" if order else "real"
    return reliability.mark({
        "model": model_name, "model_version": model.version, "provider": model.provider,
        "task": extra.get("task", "components"),
        "verdict": verdict,
        "fake_probability": round(fake_p, 4),
        "threshold": thr,
        "sequence": steps,
        "sequence_text": " -> ".join(f"{s['step']}. {s['component']}" for s in steps)
        if steps else "no manipulation found",
        "probabilities": {lab: round(float(p), 4) for lab, p in zip(labels, probs)},
        "trained_on": extra.get("data", ""),
        "decoder": decoder_kind(extra, "sequence" in out),
        "domain": dom[0] if dom else None,
        "temperature": temperature,
        "_dissim": out["dissim"][0] if "dissim" in out else None,
    }, "verdict", "this face", reliability.face_finding(verdict, round(fake_p, 4)))


def decoder_kind(extra: dict[str, Any], has_sequence: bool) -> str:
    """How a model reads the order: probability-ranked (the thesis), slots (the parallel
    slot order head, one pass) or autoregressive (a step-by-step decoder)."""
    if str(extra.get("order_head", "")).startswith("slots"):
        return "slots"
    return "autoregressive" if has_sequence else "probability-ranked"


def model_card_line(engine: Engine, model_name: str) -> dict[str, Any]:
    """What the side-by-side view shows of a model: its name, version, sha256, task,
    decoder and the test metrics measured at export (Fixed-Acc, Adaptive-Acc)."""
    model = engine.get(model_name, METHOD)
    metrics = model.entry.get("metrics", {})
    extra = model.entry.get("extra", {})
    return {"model": model_name, "version": model.version, "sha256": model.entry.get("sha256"),
            "variant": model.entry.get("variant"), "task": extra.get("task", "components"),
            "order_head": decoder_kind(extra, model.entry.get("variant") in (
                "seqfakeformer", "published")),
            "fixed_acc": metrics.get("fixed_acc"), "adaptive_acc": metrics.get("adaptive_acc"),
            "n_eval": metrics.get("n_eval"), "trained_on": extra.get("data", "")}


def resolve_models(engine: Engine, model_name: str | None) -> list[str]:
    """``all`` -> every served model of the method (``seqfake`` first); else the one model
    :func:`runtime.engine.pick_model` picks (the given name, or the default)."""
    if model_name == ALL:
        served = engine.served(METHOD)
        names = [n for n in served if n == "seqfake"] + [n for n in served if n != "seqfake"]
        if not names:
            raise InputError("No sequential deepfake model is exported yet.")
        return names
    return [pick_model(engine.served(METHOD), "seqfake", model_name)]


@dataclass
class FaceSearch:
    """What :func:`search_faces` found in an image.

    Attributes:
        faces: the detected faces, largest first (empty for a given crop).
        crops: their aligned crops, uint8 (CROP_SIZE, CROP_SIZE, 3), in the same order.
        image: the RGB image (H, W, 3) the boxes refer to: the upload, or the upload turned
            by ``rotated`` degrees.
        rotated: 0, or 90 / 180 / 270: no face was found upright and the image turned by
            that many degrees counter-clockwise (``image = np.rot90(upload, rotated // 90)``)
            gave one.
    """

    faces: list[Face]
    crops: list[np.ndarray]
    image: np.ndarray
    rotated: int = 0


def _eye_tilt(face: Face) -> float:
    """Degrees the eye line of ``face`` leans from horizontal (0 without landmarks)."""
    if face.landmarks is None:
        return 0.0
    (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
    return abs(float(np.degrees(np.arctan2(ry - ly, rx - lx))))


def _scaled_face(face: Face, sx: float, sy: float) -> Face:
    """``face`` with its box and landmarks multiplied by (sx, sy)."""
    x1, y1, x2, y2 = face.box
    marks = None if face.landmarks is None else (
        face.landmarks * np.asarray([sx, sy], np.float32)).astype(np.float32)
    return Face((x1 * sx, y1 * sy, x2 * sx, y2 * sy), face.score, marks)


def detect_canonical(detector: FaceDetector, rgb: np.ndarray, side: int = DETECT_SIDE
                     ) -> list[Face]:
    """Faces of ``rgb`` (H, W, 3), detected on a copy resampled so its longer side is
    ``side`` px (area-averaged when shrinking, bilinear when enlarging); boxes and landmarks
    are mapped back to ``rgb``'s coordinates. Largest first, as the detector gives them."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return detector.detect(rgb)
    canon = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return [_scaled_face(f, w / size[0], h / size[1]) for f in detector.detect(canon)]


def crop_face(rgb: np.ndarray, face: Face, size: int = CROP_SIZE) -> np.ndarray:
    """The aligned crop (size, size, 3) of ``face`` (:func:`app.faces.align_crop`), without
    aliasing: when the crop shrinks the face, the image is first area-averaged down to the
    crop's scale, so the bilinear warp samples at about one source pixel per crop pixel (a
    4x larger file then gives the crop of the 1x file, not a sparser sampling of it)."""
    x1, y1, x2, y2 = face.box
    shrink = size / (max(x2 - x1, y2 - y1) * (1 + 2 * CROP_MARGIN))
    h, w = rgb.shape[:2]
    if shrink < 1:
        small = (max(1, round(w * shrink)), max(1, round(h * shrink)))
        rgb = cv2.resize(rgb, small, interpolation=cv2.INTER_AREA)
        face = _scaled_face(face, small[0] / w, small[1] / h)
    return align_crop(rgb, face, size=size, margin=CROP_MARGIN)


def _detect_turned(detect: Callable[[np.ndarray], list[Face]], rgb: np.ndarray
                   ) -> tuple[int, list[Face], np.ndarray]:
    """``detect`` on ``rgb`` (H, W, 3) turned by each of :data:`ROTATIONS`, keeping faces
    that score at least :data:`ROTATED_MIN_SCORE`; returns the rotation whose largest face
    scores best (ties: the most level eyes), its faces and the turned image, or
    ``(0, [], rgb)`` when no rotation gives a face either."""
    best: tuple[int, list[Face], np.ndarray] = (0, [], rgb)
    best_key: tuple[float, float] | None = None
    for deg in ROTATIONS:
        turned = np.ascontiguousarray(np.rot90(rgb, deg // 90))
        faces = [f for f in detect(turned) if f.score >= ROTATED_MIN_SCORE]
        if faces:
            key = (faces[0].score, -_eye_tilt(faces[0]))
            if best_key is None or key > best_key:
                best, best_key = (deg, faces, turned), key
    return best


def search_faces(detector: FaceDetector | None, rgb: np.ndarray, is_crop: bool,
                 detect_side: int | None = DETECT_SIDE, antialias: bool = True) -> FaceSearch:
    """The faces of an RGB image (H, W, 3) and their aligned crops, largest first; with
    ``is_crop`` the whole image is the one crop (no faces listed). When no face is found
    upright, the image turned by 90, 180 and 270 degrees is tried before giving up (a
    photo whose orientation was lost): the crops then come from the turned image.

    Args:
        detect_side: detect on the image resampled to this longer side
            (:func:`detect_canonical`); None: on the image as it is (the detector's own
            size handling, the pipeline before reports/stability.md).
        antialias: area-average before a shrinking crop (:func:`crop_face`); False: warp
            the full-size image directly.

    Raises:
        NoFaceError: no face was found, upright or turned.
    """
    if is_crop:
        return FaceSearch([], [cv2.resize(rgb, (CROP_SIZE, CROP_SIZE),
                                          interpolation=cv2.INTER_AREA)], rgb)
    if detector is None:
        raise InputError("No face detector is available; "
                         f"{option_hint(CROP_CHECKBOX, '--crop')} to analyse the whole image.")
    def detect(img: np.ndarray) -> list[Face]:
        return detector.detect(img) if detect_side is None else \
            detect_canonical(detector, img, detect_side)

    faces, rotated, image = detect(rgb), 0, rgb
    if not faces:
        rotated, faces, image = _detect_turned(detect, rgb)
    if not faces:
        raise NoFaceError("No face was found in this image (nor in it turned by 90, 180 or "
                          "270 degrees). Upload a photo with a visible face, or "
                          f"{option_hint(CROP_CHECKBOX, '--crop')} to analyse the whole image.")
    crops = [crop_face(image, f) if antialias else align_crop(image, f, CROP_SIZE, CROP_MARGIN)
             for f in faces]
    return FaceSearch(faces, crops, image, rotated)


def find_faces(detector: FaceDetector | None, rgb: np.ndarray, is_crop: bool
               ) -> tuple[list[Face], list[np.ndarray]]:
    """The faces of an RGB image (H, W, 3) and their aligned crops (CROP_SIZE, CROP_SIZE, 3),
    largest first, as :func:`search_faces` finds them (turned images included); with
    ``is_crop`` the whole image is the one crop (no faces listed).

    Raises:
        NoFaceError: no face was found.
    """
    found = search_faces(detector, rgb, is_crop)
    return found.faces, found.crops


def model_crop(engine: Engine, model_name: str, found: FaceSearch, face_index: int,
               is_crop: bool) -> tuple[np.ndarray, str]:
    """The crop of face ``face_index`` that model ``model_name`` sees, aligned as its manifest
    entry says (:func:`runtime.align.alignment_of`), and the alignment's name: the margin
    crop :func:`search_faces` made for ``crop45``, a given crop as it is."""
    if is_crop or not found.faces:
        return found.crops[face_index], "none (crop given)"
    entry = engine.get(model_name, METHOD).entry
    name = alignment_of(entry)
    if name == ALIGN_DEFAULT:
        return found.crops[face_index], name
    return aligner(name)(found.image, found.faces[face_index], crop_side(entry)), name


def analyze_face_models(engine: Engine, detector: FaceDetector | None, source: Any,
                        models: list[str], threshold: float | None = None, face_index: int = 0,
                        is_crop: bool = False, detect_side: int | None = DETECT_SIDE,
                        antialias: bool = True) -> list[FaceResult]:
    """One face analysed by each of ``models`` (detected and aligned once): the
    side-by-side view. Same arguments as :func:`analyze_face`; ``detect_side`` and
    ``antialias`` as :func:`search_faces` (the defaults are the app's pipeline)."""
    # detection and the aligned crop need RGB; the face model is RGB and its preprocessing
    # would flatten transparency on white too (runtime.preprocess.to_pil)
    rgb = display_rgb(load_image(source, min_side=32))
    found = search_faces(detector, rgb, is_crop, detect_side, antialias)
    faces, crops = found.faces, found.crops
    if not 0 <= face_index < len(crops):
        raise InputError(f"Face #{face_index + 1} does not exist: {len(faces)} face(s) "
                         f"were found.")
    crop = crops[face_index]
    # boxes refer to the image the faces were found in (turned when ``rotated``)
    annotated = draw_faces(found.image, faces, selected=face_index) if faces else None
    results = []
    for name in models:
        crop, alignment = model_crop(engine, name, found, face_index, is_crop)
        report = analyze_crop(engine, crop, name, threshold)
        report["alignment"] = alignment
        dissim = report.pop("_dissim")
        report["faces"] = [f.to_dict() for f in faces]
        report["face_number"] = face_index + 1 if faces else None  # 1-based, as --face
        report["detector"] = getattr(detector, "name", None) if not is_crop else "none (crop given)"
        report["rotated"] = found.rotated  # degrees counter-clockwise; 0: found upright
        if found.rotated:
            report["rotation_note"] = (
                f"No face was found upright; the face was found with the image turned "
                f"{found.rotated} degrees counter-clockwise, and that turned image is "
                f"analysed (the boxes refer to it).")
        where = overlay_heatmap(crop, dissim) if dissim is not None else None
        results.append(FaceResult(check("face_report", report), annotated, crop, where))
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
    return ["face", "box", "face_score", "model", "model_version", "verdict", "raw_verdict",
            "fake_probability", "sequence", *(f"p_{lab}" for lab in labels), "in_domain"]


def batch_rows(engine: Engine, detector: FaceDetector | None, path: Any, models: list[str],
               threshold: float | None = None, is_crop: bool = False) -> list[dict[str, Any]]:
    """One row per face (largest first) per model, for :mod:`app.batch`."""
    rgb = display_rgb(load_image(path, min_side=32))
    found = search_faces(detector, rgb, is_crop)
    faces = found.faces
    rows = []
    for i in range(len(found.crops)):
        face = faces[i] if faces else None
        for name in models:
            r = analyze_crop(engine, model_crop(engine, name, found, i, is_crop)[0], name,
                             threshold)
            r.pop("_dissim")
            rows.append({
                "face": i + 1, "box": face.to_dict()["box"] if face else None,
                "face_score": round(face.score, 4) if face else None,
                "model": name, "model_version": r["model_version"], "verdict": r["verdict"],
                "raw_verdict": r["raw_verdict"], "fake_probability": r["fake_probability"],
                "sequence": " -> ".join(s["component"] for s in r["sequence"]),
                **{f"p_{lab}": p for lab, p in r["probabilities"].items()},
                "in_domain": (r.get("domain") or {}).get("in_domain")})
    return rows
