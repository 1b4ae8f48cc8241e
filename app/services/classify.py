"""Classifier tab: top-5 classes, frequency groups and Grad-CAM (from the exported map)."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from runtime import calibration
from runtime.engine import Engine, OnnxModel
from app.inputs import InputError, display_rgb, load_image
from app.results import check
from app.services import reliability
from app.viz import overlay_heatmap
from runtime.cam import cam_from_features

MODEL = "abcnorm"        # the tab's model (the method's first default run)
BASELINE = "abcnorm_ce"  # shown beside it when served
METHOD = "abcnorm"  # the method whose models this service runs


@dataclass
class ClassifyResult:
    report: dict[str, Any]
    cam: np.ndarray  # overlay, RGB uint8


def head_weights(model: OnnxModel) -> tuple[np.ndarray, np.ndarray]:
    """The linear head (C, F) and bias (C,) exported beside the ONNX file; checked against
    the manifest's sha256 once, like the ONNX file itself."""
    side = model.sidecar(".head.npz")
    if side is None:
        raise InputError(f"{model.name} was exported without its head weights (.head.npz); "
                         f"re-export it (python -m export {model.name}).")
    return _load_head(str(side[0]), side[1])


@functools.lru_cache(maxsize=8)
def _load_head(path: str, sha256: str | None) -> tuple[np.ndarray, np.ndarray]:
    from runtime.manifest import sha256_file

    side = Path(path)
    if not side.is_file() or sha256_file(side) != sha256:
        raise InputError(f"head weights {side.name} missing or corrupt; re-export.")
    with np.load(side, allow_pickle=False) as z:
        return z["weight"], z["bias"]


def classify(engine: Engine, source: Any, model_name: str = MODEL,
             cam_class: str | int | None = None, top_k: int = 5) -> ClassifyResult:
    """Top-k classes with probabilities and the Grad-CAM overlay for one class.

    Args:
        cam_class: class name or index to explain; the predicted class by default.
    """
    rgb = load_image(source, min_side=8)
    model = engine.get(model_name, METHOD)
    extra = model.entry.get("extra", {})
    x = model.prepare([rgb])
    out = model.run({"image": x})
    feats = out["features"][0]
    dom = model.domain_check(out, x)
    probs, temperature = calibration.apply(model.entry, out, "logits", fallback_kind="softmax")
    probs = probs[0]
    labels = model.labels
    groups = extra.get("groups", ["?"] * len(labels))
    counts = extra.get("class_counts", [None] * len(labels))
    order = np.argsort(-probs)[: min(top_k, len(labels))]
    if cam_class is None or cam_class == "":
        target = int(order[0])
    elif isinstance(cam_class, str) and not cam_class.isdigit():
        if cam_class not in labels:
            raise InputError(f"Unknown class {cam_class!r}; choose one of: {', '.join(labels)}")
        target = labels.index(cam_class)
    else:
        target = int(cam_class)
        if not 0 <= target < len(labels):
            raise InputError(f"Class index {target} is out of range 0..{len(labels) - 1}")
    weight, _ = head_weights(model)
    cam = cam_from_features(feats, weight, target)
    shown = model.preprocess.size
    base = np.asarray(Image.fromarray(display_rgb(rgb)).resize((max(224, shown[1]), max(224, shown[0]))))
    best = int(order[0])
    report = {
        "model": model_name, "model_version": model.version, "provider": model.provider,
        "loss": extra.get("loss"),
        "label": labels[best],
        "top": [{"class": labels[i], "probability": round(float(probs[i]), 4),
                 "group": groups[i], "train_count": counts[i]} for i in order],
        "cam_class": labels[target],
        "domain": dom[0] if dom else None,
        "temperature": temperature,
    }
    report = reliability.mark(report, "label", "this image",
                              f"{labels[best]} (probability {round(float(probs[best]), 4):.3f})")
    return ClassifyResult(check("classify_report", report), overlay_heatmap(base, cam))


BATCH_COLUMNS = ["model", "model_version", "class", "raw_class", "probability", "group", "top5",
                 "in_domain"]


def batch_rows(engine: Engine, path: Any, model_name: str = MODEL) -> list[dict[str, Any]]:
    """One row for :mod:`app.batch`: the top class (``unreliable`` unless the image was
    measured in domain; the model's own in ``raw_class``), its probability and group, and
    the top five as ``class:probability`` pairs."""
    r = classify(engine, path, model_name).report
    top = r["top"]
    return [{"model": model_name, "model_version": r["model_version"], "class": r["label"],
             "raw_class": r["raw_label"],
             "probability": top[0]["probability"], "group": top[0]["group"],
             "top5": [f"{t['class']}:{t['probability']:.4f}" for t in top],
             "in_domain": (r.get("domain") or {}).get("in_domain")}]
