"""The qMIL loss (thesis Chapter 2; docs/qmil.md, Eqs. (2.4)-(2.6)).

L = BCE(p, Y) + lambda * L2,   L2 = Y * ||alpha||_1 + (1 - Y) * std(alpha),

with alpha the unnormalised attention of the real (unpadded) instances only. ``std`` is the
population standard deviation sqrt(mean_k (alpha_k - mean(alpha))^2) over the bag's real
instances (the thesis writes {Var(alpha)}^(1/2)); a tiny eps inside the square root keeps the
gradient finite for one-instance bags. Both terms are averaged over the batch.

Not in the thesis: an optional semantic-consistency term on the query projection (weight
``loss.sc_weight``; 0, the thesis-literal form, leaves it out; docs/qmil.md):

L_sc = mean_{i<j} (cos(phi(q_i), phi(q_j)) - cos(q_i, q_j))^2

over the training queries and a sample of other words (anchors), with q the word vectors and
phi(q) the query's co-embedding. It keeps the projection's similarity structure that of the
word vectors, so an unseen word lands near the related seen ones.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

STD_EPS = 1e-12


def masked_l1(alpha: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum_k |alpha_k| over real instances. alpha (B, K), mask bool (B, K) -> (B,)."""
    return (alpha.abs() * mask.to(alpha.dtype)).sum(-1)


def masked_std(alpha: torch.Tensor, mask: torch.Tensor, eps: float = STD_EPS) -> torch.Tensor:
    """Population std of alpha over real instances. alpha (B, K), mask bool (B, K) -> (B,)."""
    m = mask.to(alpha.dtype)
    n = m.sum(-1).clamp_min(1.0)
    mean = (alpha * m).sum(-1) / n
    var = (((alpha - mean.unsqueeze(-1)) ** 2) * m).sum(-1) / n
    return torch.sqrt(var + eps)


def attention_regulariser(alpha: torch.Tensor, mask: torch.Tensor, target: torch.Tensor
                          ) -> torch.Tensor:
    """L2 of eq. 2.6 per bag: Y * ||alpha||_1 + (1 - Y) * std(alpha). Returns (B,)."""
    y = target.to(alpha.dtype)
    return y * masked_l1(alpha, mask) + (1 - y) * masked_std(alpha, mask)


def pairwise_cosine(x: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (N, N) cosine similarities of the rows (a zero row: cosine 0)."""
    u = F.normalize(x, dim=-1, eps=1e-8)
    return u @ u.T


def semantic_consistency(embedded: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """L_sc: the mean over the pairs i < j of (cos(e_i, e_j) - cos(w_i, w_j))^2.

    Args:
        embedded: (N, d) the projected query embeddings phi(q_i).
        words: (N, D) the word vectors q_i (their cosines are the targets, no gradient).

    Returns:
        A scalar (0 for N < 2).
    """
    n = embedded.shape[0]
    if n < 2:
        return embedded.sum() * 0.0
    i, j = torch.triu_indices(n, n, offset=1, device=embedded.device)
    target = pairwise_cosine(words.detach().to(embedded.dtype))[i, j]
    return ((pairwise_cosine(embedded)[i, j] - target) ** 2).mean()


def qmil_loss(logit: torch.Tensor, alpha: torch.Tensor, mask: torch.Tensor,
              target: torch.Tensor, lam: float = 1e-4
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """The qMIL loss of a batch.

    Args:
        logit: (B,) bag logits (p = sigmoid(logit)).
        alpha: (B, K) unnormalised attention.
        mask: bool (B, K), True for real instances.
        target: (B,) bag labels Y in {0, 1}.
        lam: lambda of eq. 2.4 (1e-4 in the thesis).

    Returns:
        The scalar loss and ``{"bce": ..., "reg": ...}`` (batch means) for logging.
    """
    mask = mask != 0
    bce = F.binary_cross_entropy_with_logits(logit, target.to(logit.dtype))
    reg = attention_regulariser(alpha, mask, target).mean()
    return bce + lam * reg, {"bce": float(bce.detach()), "reg": float(reg.detach())}


class QMILLoss(nn.Module):
    """Module form of :func:`qmil_loss`.

    Examples:
        >>> crit = QMILLoss(lam=1e-4)
        >>> loss, logs = crit(out["logit"], out["alpha"], mask, label)
    """

    def __init__(self, lam: float = 1e-4) -> None:
        super().__init__()
        self.lam = float(lam)

    def forward(self, logit: torch.Tensor, alpha: torch.Tensor, mask: torch.Tensor,
                target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return qmil_loss(logit, alpha, mask, target, self.lam)
