"""Decoding a sequential-deepfake prediction: the one decoder of the project.

numpy only (no torch): the app is served without torch. Used by the evaluation
(``training.metrics.seqfake``), the app (``app.services.face``) and the export parity test.

Thesis Chapter 5, inference (docs/seqfake.md, "Equations"): the manipulated components are
those whose fused probability P_i is above the threshold; their order is decreasing P_i. A
real face is the empty sequence. "Above" is strict (P_i > threshold), as the evaluation has
always decoded (the thesis does not say for Chapter 5; its Chapter 2 decision rule is p >
0.5 too). Ties keep the component order (lower id first).
"""
from __future__ import annotations

import numpy as np

SLOTS = 5  # Seq-DeepFake labels have 5 slots


def decode_sequence(probs: np.ndarray, threshold: float = 0.5) -> list[int]:
    """Component indices (0-based) with probability > ``threshold``, by decreasing probability.

    Args:
        probs: (L,) fused probabilities sigma(f_i).
        threshold: decision threshold (strict).

    Returns:
        e.g. ``[1, 3]`` for "eye, then lip" with L = 5 (ids 1..5 are index + 1).
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    idx = np.flatnonzero(probs > threshold)
    # stable sort on -p so ties keep component order
    return [int(i) for i in idx[np.argsort(-probs[idx], kind="stable")]]


def decode(probs: np.ndarray, threshold: float = 0.5) -> list[list[int]]:
    """Predicted sequences of a batch as 1-based ids (the label format); [] = real.

    Args:
        probs: (N, L) fused probabilities.
        threshold: decision threshold (strict).

    Returns:
        N lists of ids 1..L, each by decreasing probability.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"expected (N, L) probabilities, got shape {probs.shape}")
    return [[i + 1 for i in decode_sequence(p, threshold)] for p in probs]


def decode_batch(probs: np.ndarray, threshold: float = 0.5, slots: int = SLOTS) -> np.ndarray:
    """Decode (B, L) probabilities into (B, slots) 1-based id sequences padded with 0.

    Sequences longer than ``slots`` keep their ``slots`` most probable components.
    """
    seqs = decode(probs, threshold)
    out = np.zeros((len(seqs), slots), dtype=np.int64)
    for b, seq in enumerate(seqs):
        seq = seq[:slots]
        out[b, : len(seq)] = seq
    return out
