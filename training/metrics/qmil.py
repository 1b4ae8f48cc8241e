"""qMIL metrics (thesis section 2.4.2; docs/qmil.md), numpy in and out.

- bag accuracy: mean of [ (p > 0.5) == Y ].
- attention accuracy: over the positive bags (Y = 1), the fraction whose argmax-beta
  instance is of the queried class (the default). The thesis counts the bags *predicted*
  positive instead; :func:`attention_accuracy` does that with ``over="predicted"``.
- attention chance: what a uniform random pick over the real instances would score on the
  same bags (mean over positive bags of #query-class instances / bag size).
"""
from __future__ import annotations

import numpy as np


def bag_accuracy(prob: np.ndarray, label: np.ndarray, threshold: float = 0.5) -> float:
    """prob (N,), label (N,) in {0, 1} -> accuracy of ``prob > threshold``."""
    prob, label = np.asarray(prob), np.asarray(label)
    if len(prob) == 0:
        return float("nan")
    return float(((prob > threshold).astype(np.int64) == label.astype(np.int64)).mean())


def attention_hits(beta: np.ndarray, instance_labels: np.ndarray, query: np.ndarray
                   ) -> np.ndarray:
    """Whether the argmax-beta instance of each bag is of the queried class.

    Args:
        beta: (N, K) normalised attention (0 on padding).
        instance_labels: (N, K) instance classes (-1 on padding).
        query: (N,) queried class.

    Returns:
        bool (N,).
    """
    top = np.asarray(beta).argmax(1)
    return np.asarray(instance_labels)[np.arange(len(top)), top] == np.asarray(query)


def attention_accuracy(beta: np.ndarray, instance_labels: np.ndarray, query: np.ndarray,
                       label: np.ndarray, prob: np.ndarray | None = None,
                       over: str = "positive") -> float:
    """Attention accuracy over the positive bags (``over="positive"``) or over the bags
    predicted positive, p > 0.5 (``over="predicted"``, the thesis' wording). NaN if none."""
    if over == "positive":
        sel = np.asarray(label) == 1
    elif over == "predicted":
        if prob is None:
            raise ValueError("over='predicted' needs prob")
        sel = np.asarray(prob) > 0.5
    else:
        raise ValueError(f"over must be 'positive' or 'predicted', got {over!r}")
    if not sel.any():
        return float("nan")
    hits = attention_hits(np.asarray(beta)[sel], np.asarray(instance_labels)[sel],
                          np.asarray(query)[sel])
    return float(hits.mean())


def attention_chance(instance_labels: np.ndarray, mask: np.ndarray, query: np.ndarray,
                     label: np.ndarray) -> float:
    """Expected attention accuracy of a uniformly random instance, over the positive bags."""
    pos = np.asarray(label) == 1
    if not pos.any():
        return float("nan")
    inst, m, q = np.asarray(instance_labels)[pos], np.asarray(mask)[pos], np.asarray(query)[pos]
    return float((((inst == q[:, None]) & m).sum(1) / m.sum(1)).mean())


def per_query(values: dict[str, np.ndarray], query: np.ndarray, fn, classes: list[int]
              ) -> dict[int, float]:
    """Apply ``fn(**values_restricted_to_query_c)`` for each class c in ``classes``."""
    query = np.asarray(query)
    out = {}
    for c in classes:
        sel = query == c
        out[int(c)] = fn(**{k: np.asarray(v)[sel] for k, v in values.items()})
    return out
