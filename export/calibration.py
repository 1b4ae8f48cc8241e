"""Temperature scaling (Guo et al. 2017) fitted at export, and the expected calibration error.

* Classifiers (softmax): ``p = softmax(z / T)``, one ``T``.
* qMIL (sigmoid, one bag probability): ``p = sigmoid(z / T)`` on the bag logit.
* Face models (sigmoid per component): ``p_c = sigmoid(z_c / T)``, one ``T`` shared by the
  components. A temperature per component would reorder the components
  of a face and so change the probability-ranked sequence the model was evaluated with; one
  shared ``T > 0`` keeps every face's order and the verdict at the 0.5 threshold, and changes
  only how confident the probabilities are.

``T`` minimises the negative log-likelihood on the run's validation images (never its test
images); ECE (15 equal-width confidence bins) is measured before and after on the
validation and the test images, and recorded in the manifest (``calibration``). The served
probabilities come from that record through :func:`runtime.calibration.apply`, with the same
:func:`~runtime.calibration.probabilities` this module fits with.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from runtime.calibration import probabilities

BINS = 15


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float, kind: str) -> float:
    """Mean negative log-likelihood: class ids (N,) for softmax, 0/1 (N, L) for sigmoid."""
    p = np.clip(probabilities(logits, temperature, kind), 1e-12, 1 - 1e-12)
    if kind == "softmax":
        return float(-np.mean(np.log(p[np.arange(len(p)), targets])))
    y = np.asarray(targets, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit_temperature(logits: np.ndarray, targets: np.ndarray, kind: str) -> float:
    """The ``T`` in [0.05, 20] minimising :func:`nll` (bounded search over log T)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda lt: nll(logits, targets, float(np.exp(lt)), kind),
                          bounds=(np.log(0.05), np.log(20.0)), method="bounded",
                          options={"xatol": 1e-4})
    return float(np.exp(res.x))


def ece(probs: np.ndarray, targets: np.ndarray, kind: str, bins: int = BINS) -> float:
    """Expected calibration error: sum over bins of |B|/n * |accuracy(B) - confidence(B)|.

    softmax: one prediction per image, confidence = max p, correct = argmax == class.
    sigmoid: one binary prediction per image and component, confidence = max(p, 1 - p),
    correct = (p > 0.5) == label. Bin m holds confidences in ((m - 1) / M, m / M].
    """
    p = np.asarray(probs, dtype=np.float64)
    if kind == "softmax":
        conf, correct = p.max(axis=1), (p.argmax(axis=1) == np.asarray(targets))
    else:
        y = np.asarray(targets).astype(bool).ravel()
        p = p.ravel()
        conf, correct = np.maximum(p, 1 - p), (p > 0.5) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    total = 0.0
    for m in range(bins):
        sel = idx == m
        if sel.any():
            total += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(total)


def reliability(probs: np.ndarray, targets: np.ndarray, kind: str, bins: int = BINS
                ) -> list[dict[str, float]]:
    """Per non-empty bin: its centre, count, mean confidence and accuracy (the diagram)."""
    p = np.asarray(probs, dtype=np.float64)
    if kind == "softmax":
        conf, correct = p.max(axis=1), (p.argmax(axis=1) == np.asarray(targets))
    else:
        y = np.asarray(targets).astype(bool).ravel()
        p = p.ravel()
        conf, correct = np.maximum(p, 1 - p), (p > 0.5) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    return [{"centre": float((edges[m] + edges[m + 1]) / 2), "n": int((idx == m).sum()),
             "confidence": float(conf[idx == m].mean()), "accuracy": float(correct[idx == m].mean())}
            for m in range(bins) if (idx == m).any()]


def model_logits(model: Any, items: Sequence[Any], output: str = "logits",
                 batch_size: int = 128) -> np.ndarray:
    """The ``output`` logits of ``items`` through an :class:`runtime.engine.OnnxModel`:
    (N, C|L) for images (arrays or paths), (N,) for bags (dicts ``{"images": K images,
    "query": (D,) word vector}``, one run per bag since bags differ in size)."""
    from export.domain import _load_image

    out = []
    if items and isinstance(items[0], dict):
        for bag in items:
            x = model.prepare([_load_image(im) for im in bag["images"]])[None]
            feeds = {"images": x, "mask": np.ones(x.shape[:2], np.float32)}
            if "query" in bag:
                feeds["query"] = np.asarray(bag["query"], np.float32)[None]
            out.append(model.run(feeds)[output])
        return np.concatenate(out).astype(np.float64)
    for i in range(0, len(items), batch_size):
        batch = [_load_image(x) for x in items[i:i + batch_size]]
        out.append(model.run({"image": model.prepare(batch)})[output])
    return np.concatenate(out).astype(np.float64)


def calibrate_run(model: Any, kind: str, val: tuple[Sequence[Any], np.ndarray],
                  test: tuple[Sequence[Any], np.ndarray], limit: int = 2000, seed: int = 0,
                  output: str = "logits") -> dict[str, Any]:
    """Fit ``T`` on ``val`` (items, targets: images or bags, see :func:`model_logits`),
    measure ECE before/after on val and test (at most ``limit`` items of each, seeded) on
    the model's ``output`` logits. Returns the manifest's ``calibration``."""
    rng = np.random.default_rng(seed)

    def take(images: Sequence[Any], targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.sort(rng.permutation(len(images))[:limit])
        return (model_logits(model, [images[i] for i in idx], output),
                np.asarray(targets)[idx])

    z_val, y_val = take(*val)
    z_test, y_test = take(*test)
    t = fit_temperature(z_val, y_val, kind)
    unit = "bags" if val[0] is not None and len(val[0]) and isinstance(val[0][0], dict) \
        else "images"
    rec: dict[str, Any] = {"kind": kind, "temperature": round(t, 4), "bins": BINS,
                           "output": output, "fitted_on": f"validation ({len(z_val)} {unit})",
                           "n_val": int(len(z_val)), "n_test": int(len(z_test))}
    for name, z, y in (("val", z_val, y_val), ("test", z_test, y_test)):
        rec[f"ece_{name}_before"] = round(ece(probabilities(z, 1.0, kind), y, kind), 4)
        rec[f"ece_{name}_after"] = round(ece(probabilities(z, t, kind), y, kind), 4)
    rec["reliability_test"] = {
        "before": reliability(probabilities(z_test, 1.0, kind), y_test, kind),
        "after": reliability(probabilities(z_test, t, kind), y_test, kind)}
    return rec
