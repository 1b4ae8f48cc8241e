"""Decoding a sequential-deepfake prediction (numpy only; shared by evaluation and the app).

SPEC.md section 4, inference: the manipulated components are those whose fused
probability P_i passes the threshold; their order is decreasing P_i. A real face is the
empty sequence.
"""
from __future__ import annotations

import numpy as np


def decode_sequence(probs: np.ndarray, threshold: float = 0.5) -> list[int]:
    """Component indices (0-based) above ``threshold``, by decreasing probability.

    Args:
        probs: (L,) fused probabilities sigma(f_i).
        threshold: decision threshold.

    Returns:
        e.g. ``[1, 3]`` for "eye, then lip" with L = 5 (ids 1..5 are index + 1).
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    idx = np.flatnonzero(probs > threshold)
    # stable sort on -p so ties keep component order
    return [int(i) for i in idx[np.argsort(-probs[idx], kind="stable")]]


def decode_batch(probs: np.ndarray, threshold: float = 0.5, slots: int = 5) -> np.ndarray:
    """Decode (B, L) probabilities into (B, slots) 1-based id sequences padded with 0."""
    out = np.zeros((len(probs), slots), dtype=np.int64)
    for b, p in enumerate(np.asarray(probs)):
        seq = decode_sequence(p, threshold)[:slots]
        out[b, : len(seq)] = np.asarray(seq, dtype=np.int64) + 1
    return out
