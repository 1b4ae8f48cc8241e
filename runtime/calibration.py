"""Temperature scaling as served: the calibration a manifest entry records, applied once.

Export fits one temperature ``T`` per model on its validation images
(:mod:`export.calibration`) and records it in the model's manifest entry::

    "calibration": {"kind": "softmax" | "sigmoid", "temperature": T, "output": "logits", ...}

The served probabilities are ``softmax(z / T)`` (one class of many) or ``sigmoid(z / T)``
(independent probabilities: face components, a bag's answer) of the recorded output ``z``.
Every service reads its probabilities through :func:`apply`; export fits ``T`` with the same
:func:`probabilities`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from runtime.manifest import ManifestError

KINDS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class Calibration:
    """A recorded calibration: how (``kind``) the logits of ``output`` become probabilities
    at ``temperature``."""
    kind: str
    temperature: float
    output: str


def probabilities(logits: np.ndarray, temperature: float, kind: str) -> np.ndarray:
    """``softmax(z / T)`` over the last axis, or ``sigmoid(z / T)`` elementwise (float64).

    Raises:
        ValueError: ``kind`` is neither "softmax" nor "sigmoid".
    """
    if kind not in KINDS:
        raise ValueError(f"calibration kind {kind!r} is not one of {', '.join(KINDS)}")
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    if kind == "softmax":
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-z))


def recorded(entry: Mapping[str, Any]) -> Calibration | None:
    """The calibration a manifest entry records, or None when it records none.

    Raises:
        ManifestError: the record names an unknown kind or a temperature that is not a
            positive number (a damaged manifest: export the model again).
    """
    rec = entry.get("calibration")
    if not rec:
        return None
    name = entry.get("name", "?")
    kind, t = rec.get("kind"), rec.get("temperature")
    if kind not in KINDS:
        raise ManifestError(f"model {name}: calibration kind {kind!r} is not one of "
                            f"{', '.join(KINDS)}; export the model again")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise ManifestError(f"model {name}: calibration temperature {t!r} is not a positive "
                            "number; export the model again")
    return Calibration(kind, float(t), str(rec.get("output", "logits")))


def apply(entry: Mapping[str, Any], outputs: Mapping[str, np.ndarray], fallback: str,
          fallback_kind: str | None = None) -> tuple[np.ndarray, float | None]:
    """The probabilities of a model's answer and the temperature applied (None: none).

    With a recorded calibration whose output the model returned, its logits at its
    temperature, of its kind. Otherwise the output ``fallback`` as it is (the model's own
    probabilities), or, with ``fallback_kind``, those logits at ``T = 1`` of that kind.

    Raises:
        ManifestError: see :func:`recorded`.
    """
    cal = recorded(entry)
    if cal is not None and cal.output in outputs:
        return probabilities(outputs[cal.output], cal.temperature, cal.kind), cal.temperature
    raw = np.asarray(outputs[fallback])
    if fallback_kind is None:
        return raw.astype(np.float64), None
    return probabilities(raw, 1.0, fallback_kind), None
