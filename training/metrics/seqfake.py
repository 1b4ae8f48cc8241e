"""Decoding and metrics of sequential deepfake detection (thesis Chapter 5; docs/seqfake.md).

Sequences are lists of component ids (1..L) in manipulation order; ``[]`` is a real face.
Padded to 5 slots with 0 they are the Seq-DeepFake labels. Decoding probabilities into
sequences is :func:`runtime.sequence.decode` (re-exported here as ``decode``).

* Fixed-Acc: per-position accuracy over the 5-slot padded sequences, pooled over the set.
* Adaptive-Acc: per sample compare the first max(len true, len predicted) positions; the
  set's score is the sum of correct positions over the sum of those lengths; a real face
  predicted real counts 1 correct out of 1 (Seq-DeepFake's ``test.py`` definition).
* Multi-label accuracy: the thesis does not define it; here it is the per-label (Hamming)
  accuracy of the predicted set over the N x L binary decisions; ``exact_set_accuracy`` is
  the fraction of samples whose predicted set equals the true set.
* AUC: image level, and video level (scores averaged per video id first).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Sequence

import numpy as np

# The one decoder (numpy only, shared with the app): ids with P > threshold, by decreasing P.
from runtime.sequence import SLOTS, decode  # noqa: F401  (re-exported)


def pad(seq: Sequence[int], slots: int = SLOTS) -> list[int]:
    """[1, 2] -> [1, 2, 0, 0, 0]; longer sequences are cut to ``slots``."""
    seq = [int(s) for s in seq if int(s) > 0][:slots]
    return seq + [0] * (slots - len(seq))


def unpad(label: Sequence[int]) -> list[int]:
    """[1, 2, 0, 0, 0] -> [1, 2] (stops at the first 0)."""
    out = []
    for v in label:
        if int(v) == 0:
            break
        out.append(int(v))
    return out


def fixed_accuracy(preds: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                   slots: int = SLOTS) -> float:
    """Fixed-Acc: correct positions / (N * slots) over padded sequences."""
    _check(preds, targets)
    correct = sum(int(p == t) for ps, ts in zip(preds, targets)
                  for p, t in zip(pad(ps, slots), pad(ts, slots)))
    return correct / (len(targets) * slots)


def adaptive_accuracy(preds: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                      slots: int = SLOTS) -> float:
    """Adaptive-Acc: sum of correct positions / sum of max(len true, len pred)."""
    _check(preds, targets)
    correct, total = 0, 0
    for ps, ts in zip(preds, targets):
        p, t = pad(ps, slots), pad(ts, slots)
        n = max(len(unpad(p)), len(unpad(t)))
        if n == 0:
            correct, total = correct + 1, total + 1
            continue
        correct += sum(int(a == b) for a, b in zip(p[:n], t[:n]))
        total += n
    return correct / total


def expected_random_order_accuracy(preds: Sequence[Sequence[int]],
                                   targets: Sequence[Sequence[int]], slots: int = SLOTS
                                   ) -> tuple[float, float]:
    """Fixed-Acc and Adaptive-Acc expected when each predicted set is put in a random order.

    The detected components stay the same; only their order is a uniformly random
    permutation. Position j < len(pred) then holds true[j] with probability 1/len(pred) if
    true[j] is in the predicted set, else never. Returns (fixed, adaptive), exact
    expectations (no sampling).
    """
    _check(preds, targets)
    fx_correct, ad_correct, ad_total = 0.0, 0.0, 0
    for ps, ts in zip(preds, targets):
        p, t = unpad(pad(ps, slots)), unpad(pad(ts, slots))
        hit = sum(1.0 / len(p) for j, c in enumerate(t[: len(p)]) if c in p) if p else 0.0
        n = max(len(p), len(t))
        fx_correct += hit + (slots - n)
        if n == 0:
            ad_correct, ad_total = ad_correct + 1, ad_total + 1
        else:
            ad_correct, ad_total = ad_correct + hit, ad_total + n
    return fx_correct / (len(targets) * slots), ad_correct / ad_total


def multilabel_accuracy(preds: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                        num_classes: int = 5) -> float:
    """Per-label accuracy of the predicted sets over N x L binary decisions."""
    _check(preds, targets)
    correct = 0
    for ps, ts in zip(preds, targets):
        a, b = set(ps), set(int(x) for x in ts if int(x) > 0)
        correct += sum(int((c in a) == (c in b)) for c in range(1, num_classes + 1))
    return correct / (len(targets) * num_classes)


def exact_set_accuracy(preds: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> float:
    """Fraction of samples whose predicted set of components equals the true set."""
    _check(preds, targets)
    return float(np.mean([set(p) == set(int(x) for x in t if int(x) > 0)
                          for p, t in zip(preds, targets)]))


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties).

    Returns NaN when only one class is present.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def video_auc(scores: Sequence[float], labels: Sequence[int], video_ids: Sequence[Hashable]
              ) -> float:
    """Video-level AUC: frame scores averaged per video; a video's label is its frames'.

    Raises ValueError if one video holds frames with different labels.
    """
    acc: dict[Hashable, list[float]] = defaultdict(list)
    lab: dict[Hashable, int] = {}
    for s, y, v in zip(scores, labels, video_ids):
        acc[v].append(float(s))
        if lab.setdefault(v, int(y)) != int(y):
            raise ValueError(f"video {v!r} has frames with different labels")
    keys = list(acc)
    return roc_auc([float(np.mean(acc[k])) for k in keys], [lab[k] for k in keys])


def sequence_metrics(probs: np.ndarray, targets: Sequence[Sequence[int]],
                     threshold: float = 0.5) -> dict[str, float]:
    """All sequence metrics of fused probabilities (N, L) against target sequences."""
    preds = decode(probs, threshold)
    rnd_fixed, rnd_adaptive = expected_random_order_accuracy(preds, targets)
    fake = [int(len(unpad(pad(t))) > 0) for t in targets]
    return {
        "fixed_acc": fixed_accuracy(preds, targets),
        "adaptive_acc": adaptive_accuracy(preds, targets),
        "multilabel_acc": multilabel_accuracy(preds, targets, probs.shape[1]),
        "exact_set_acc": exact_set_accuracy(preds, targets),
        "random_order_fixed_acc": rnd_fixed,
        "random_order_adaptive_acc": rnd_adaptive,
        "auc_max_prob": roc_auc(np.asarray(probs).max(axis=1), fake),
    }


def _check(preds: Sequence, targets: Sequence) -> None:
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    if not len(targets):
        raise ValueError("no samples")
