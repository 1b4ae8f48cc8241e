"""Querying a trained qMIL model over bags, and zero-shot by iterative queries.

Thesis section 2.3.4 (docs/qmil.md, "Equations"): to ask a bag about an unseen class, first query it
with every seen class in turn; whenever the answer is positive (p > 0.5), remove the
instances that take *strong* attention; then ask the unseen query over what is left. The
thesis leaves "strong" open; here an instance is strong when its attention is at least
``strong_rel`` times the largest attention in that answer, beta_k >= strong_rel * max_j beta_j
(default 0.5). A rule relative to the maximum keeps working when a bag holds several
instances of the seen class (they share the attention, each far below 1), which a rule on
the absolute share misses. Removals accumulate over the seen queries. A bag left with no instance answers p = 0 (nothing left to be the
unseen class).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from runtime.preprocess import FASHION_MNIST, PreprocessSpec
from runtime.words import get_word_vectors, split_words
from training.data.bags import BagSet, iter_bag_batches


def _feature_head(model: nn.Module, images: torch.Tensor, mask: torch.Tensor):
    """Encode once and return ``head(mask, query) -> outputs`` (re-uses instance features)."""
    if hasattr(model, "encode") and hasattr(model, "head"):
        x = model.encode(images, mask)
        return lambda m, q: model.head(x, m, q)
    return lambda m, q: model(images, m, q)


# the anchor words of the semantic-consistency term start after GloVe's most frequent words
# (mostly function words such as "the", "of")
ANCHOR_SKIP = 100


def anchor_words(n: int, classes: Sequence[str]) -> list[str]:
    """``n`` frequent plain words (GloVe's frequency order after the first ``ANCHOR_SKIP``,
    alphabetic, at least 3 letters) for the semantic-consistency term. A word that equals or
    contains a word of ``classes`` (the seen and unseen class names) is left out, so an
    unseen class name never enters training through the anchors ("shirts", "sweatshirt"
    are left out for "shirt")."""
    vocab = get_word_vectors().vocabulary()
    parts = {p for c in classes for p in split_words(c) if len(p) >= 3}
    out: list[str] = []
    for w in vocab[ANCHOR_SKIP:]:
        if len(out) >= n:
            break
        if len(w) >= 3 and w.isalpha() and w.isascii() and not any(p in w for p in parts):
            out.append(w)
    return out


@torch.no_grad()
def iterative_query(model: nn.Module, images: torch.Tensor, mask: torch.Tensor,
                    query: torch.Tensor, seen_queries: torch.Tensor,
                    strong_rel: float = 0.5, threshold: float = 0.5
                    ) -> dict[str, torch.Tensor]:
    """Answer ``query`` after removing instances claimed by positive seen-class answers.

    Args:
        model: a qMIL model, ``model(images, mask, query)`` -> dict with prob, beta.
        images: (B, K, C, H, W).
        mask: bool (B, K).
        query: (B, D) the (unseen) query word vectors.
        seen_queries: (S, D) word vectors of the seen classes, asked in this order.
        strong_rel: an instance is strong when beta_k >= strong_rel * max_j beta_j.
        threshold: a seen answer is positive when p > threshold.

    Returns:
        prob (B,), beta (B, K) of the final query over the kept instances, keep bool (B, K)
        (the instances left), removed bool (B, K).
    """
    mask = mask != 0
    head = _feature_head(model, images, mask)
    keep = mask.clone()
    b = mask.shape[0]
    for s in range(seen_queries.shape[0]):
        out = head(keep, seen_queries[s].expand(b, -1))
        top = out["beta"].max(1, keepdim=True).values
        strong = (out["beta"] >= strong_rel * top) & keep
        strong &= (out["prob"] > threshold).unsqueeze(1)
        keep = keep & ~strong
    out = head(keep, query)
    empty = keep.sum(1) == 0
    prob = torch.where(empty, torch.zeros_like(out["prob"]), out["prob"])
    return {"prob": prob, "beta": out["beta"], "keep": keep, "removed": mask & ~keep}


@torch.no_grad()
def predict_bags(model: nn.Module, bags: BagSet, images: np.ndarray,
                 query_vectors: torch.Tensor | None, device: torch.device | str = "cpu",
                 batch_size: int = 64, seen: Sequence[int] | None = None,
                 strong_rel: float = 0.5, spec: PreprocessSpec = FASHION_MNIST
                 ) -> dict[str, np.ndarray]:
    """Run a model over every bag of a BagSet.

    Args:
        model: a qMIL model (``query_vectors`` given) or a query-free MIL model (None).
        bags: the bags; ``bags.query`` indexes ``query_vectors``.
        images: uint8 (M, H, W) or (M, H, W, 3) image pool the bags index.
        query_vectors: (C, D) word vector per class id, or None for a query-free model.
        seen: class ids to query first (iterative zero-shot); None = ask directly.
        strong_rel: see :func:`iterative_query`.
        spec: the model's preprocessing (mean/std of the pool).

    Returns:
        prob (N,), beta (N, K_max) (zeros beyond each batch's width), keep bool (N, K_max).
    """
    model.eval()
    n, kmax = bags.mask.shape
    prob = np.zeros(n, np.float32)
    beta = np.zeros((n, kmax), np.float32)
    keep = bags.mask.copy()
    qv = None if query_vectors is None else query_vectors.to(device)
    for rows, x, m in iter_bag_batches(bags, images, batch_size, spec):
        x, m = x.to(device), m.to(device)
        k = m.shape[1]
        if qv is None:
            out = model(x, m)
        else:
            q = qv[torch.as_tensor(bags.query[rows], device=device)]
            if seen:
                out = iterative_query(model, x, m, q, qv[list(seen)], strong_rel)
                keep[rows, :k] = out["keep"].cpu().numpy()
            else:
                out = model(x, m, q)
        prob[rows] = out["prob"].float().cpu().numpy()
        beta[rows, :k] = out["beta"].float().cpu().numpy()
    return {"prob": prob, "beta": beta, "keep": keep}
