"""Losses of the sequential-deepfake model (thesis Chapter 5; docs/seqfake.md, Eqs. (5.1)-(5.18)).

One function per equation; each is tested on hand-worked cases in
``tests/test_seqfake_losses.py``. The thesis sums losses over the data set; here every
loss is a per-sample vector and the batch loss is its mean (a constant rescaling).

Notation: L components, a batch of B samples, labels as 5-slot sequences ``seq`` (B, S)
with ids 1..L in manipulation order and 0 as padding (Seq-DeepFake format).

A remark on eqs. 5.6-5.8 as printed (and implemented; docs/seqfake.md, Eq. (5.6)):
u+(k) - u-(k) = a/k - a/(n-k) + mean(u_{k+1..n}) - mean(u_{1..k}); because u is sorted
ascending the last two terms are >= 0, so P(x; k) >= 0.5 for every k <= n/2 and P(x) >= 0.5
for every image. The offset a/k - a/(n-k) does not depend on u, so the gradients w.r.t. u
are those of the contrast of the two means; only which k attains the max changes.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------
# Labels (eqs. 5.1-5.2)
# ----------------------------------------------------------------------------------------
def sequence_targets(seq: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-label vector y and rank vector r from padded sequences (eqs. 5.1, 5.2).

    Args:
        seq: (B, S) long, ids 1..L in order, 0 = padding.
        num_classes: L.

    Returns:
        y (B, L) float, y_i = 1 iff i in Y; r (B, L) long, r_i = position of i in Y
        (1-based) or L if absent.
    """
    b, s = seq.shape
    y = torch.zeros(b, num_classes, dtype=torch.float32, device=seq.device)
    r = torch.full((b, num_classes), num_classes, dtype=torch.long, device=seq.device)
    pos = torch.arange(1, s + 1, device=seq.device).expand(b, s)
    valid = seq > 0
    idx = (seq.clamp(min=1) - 1)
    rows = torch.arange(b, device=seq.device).unsqueeze(1).expand(b, s)
    y[rows[valid], idx[valid]] = 1.0
    r[rows[valid], idx[valid]] = pos[valid]
    return y, r


def is_fake(seq: torch.Tensor) -> torch.Tensor:
    """J(Y): 1.0 for a manipulated sample, 0.0 for a real one. Shape (B, S) -> (B,)."""
    return (seq > 0).any(dim=1).float()


# ----------------------------------------------------------------------------------------
# Contrastive MIL (eqs. 5.6-5.12)
# ----------------------------------------------------------------------------------------
def sample_ks(n: int, num: int = 100, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """``num`` values of k drawn uniformly from 1..n-1 (the thesis' 100 sampled k).

    Shape: () -> (num,) long.
    """
    if n < 2:
        raise ValueError(f"contrastive MIL needs n >= 2 similarities, got {n}")
    return torch.randint(1, n, (num,), generator=generator).to(device)


def mil_logits_per_k(u: torch.Tensor, ks: torch.Tensor, a: float = 1.0, tau: float = 0.2
                     ) -> torch.Tensor:
    """logit P(x; k) = (u+(k) - u-(k)) / tau for each k (eqs. 5.6-5.8).

    u+(k) = (a - sum_{i<=k} u_i) / k, u-(k) = (a - sum_{i>k} u_i) / (n - k).

    Args:
        u: (B, n) sorted ascending.
        ks: (K,) long in 1..n-1.

    Returns:
        (B, K) logits; sigmoid of them is P(x; k).
    """
    n = u.shape[1]
    cs = torch.cumsum(u, dim=1)
    first = cs[:, ks - 1]
    rest = cs[:, -1:] - first
    kf = ks.to(u.dtype)
    u_pos = (a - first) / kf
    u_neg = (a - rest) / (n - kf)
    return (u_pos - u_neg) / tau


def mil_probability(u: torch.Tensor, ks: torch.Tensor, a: float = 1.0, tau: float = 0.2
                    ) -> torch.Tensor:
    """P(x) = max_k P(x; k) over the given k (eq. 5.9). Shape (B, n) -> (B,)."""
    return torch.sigmoid(mil_logits_per_k(u, ks, a, tau).max(dim=1).values)


def mil_loss(u: torch.Tensor, fake: torch.Tensor, ks: torch.Tensor, a: float = 1.0,
             tau: float = 0.2) -> torch.Tensor:
    """l_MIL = BCE(P(x), J(Y)) (eq. 5.10), computed from the max logit for stability.

    Shape: u (B, n), fake (B,) -> (B,).
    """
    logit = mil_logits_per_k(u, ks, a, tau).max(dim=1).values
    return F.binary_cross_entropy_with_logits(logit, fake.to(logit.dtype), reduction="none")


def reg_loss(u: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """l_Reg = sum_i |1 - u_i| (eq. 5.11). Shape (B, n) -> (B,).

    ``reduction="mean"`` divides by n (not the thesis; an option because with n = 2016
    pairs the sum outweighs every other term by two orders of magnitude).
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be sum or mean, got {reduction!r}")
    d = (1.0 - u).abs()
    return d.sum(dim=1) if reduction == "sum" else d.mean(dim=1)


def cls_loss(u: torch.Tensor, fake: torch.Tensor, ks: torch.Tensor, a: float = 1.0,
             tau: float = 0.2, reg_reduction: str = "sum") -> torch.Tensor:
    """L_CLS per sample: l_MIL + (1 - J) l_Reg (eq. 5.12). Shape (B, n), (B,) -> (B,)."""
    return mil_loss(u, fake, ks, a, tau) + (1.0 - fake) * reg_loss(u, reg_reduction)


# ----------------------------------------------------------------------------------------
# Multi-label BCE (eqs. 5.13-5.15) and ranking (eqs. 5.16-5.17)
# ----------------------------------------------------------------------------------------
def multilabel_bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 . l(x): the BCE of each of the L sigmoid outputs, summed (eqs. 5.14-5.15).

    Shape: (B, L), (B, L) -> (B,).
    """
    return F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(dim=1)


def predicted_ranks(probs: torch.Tensor) -> torch.Tensor:
    """o_i: the 1-based rank of P_i in non-increasing order (ties: lower index first).

    Shape: (B, L) -> (B, L) long.
    """
    order = torch.sort(probs, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ar = torch.arange(1, probs.shape[1] + 1, device=probs.device).expand_as(order)
    return ranks.scatter_(1, order, ar)


def rank_weights(probs: torch.Tensor, y: torch.Tensor, r: torch.Tensor, alpha: float = 1.0
                 ) -> torch.Tensor:
    """The rank-aware weights w of eq. 5.17 as its explanation reads them (no gradient;
    docs/seqfake.md, Eq. (5.17)).

    w_i = alpha                 if i not in Y and o_i > |Y|
    w_i = alpha * |o_i - L|     if i not in Y and o_i <= |Y|
    w_i = alpha * |o_i - r_i|   if i in Y

    Shape: probs, y, r (B, L) -> (B, L) float.
    """
    with torch.no_grad():
        num = probs.shape[1]
        o = predicted_ranks(probs)
        size = y.sum(dim=1, keepdim=True)
        absent = y < 0.5
        w = torch.where(absent & (o > size), torch.ones_like(probs),
                        torch.where(absent, (o - num).abs().to(probs.dtype),
                                    (o - r).abs().to(probs.dtype)))
        return alpha * w


def rank_loss(logits: torch.Tensor, y: torch.Tensor, r: torch.Tensor, alpha: float = 1.0
              ) -> torch.Tensor:
    """L_Rank per sample: w . l(x) on the fused logits (eq. 5.16). Shape (B, L) -> (B,)."""
    w = rank_weights(torch.sigmoid(logits), y, r, alpha)
    return (w * F.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum(dim=1)


# ----------------------------------------------------------------------------------------
# Parallel order head (not in the thesis; docs/seqfake.md, "Parallel order head")
# ----------------------------------------------------------------------------------------
def slot_loss(slot_logits: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
    """L_Slot per sample: the mean over the S slots of the cross-entropy of slot s against
    the padded label ``seq[:, s]`` (0 = no edit / end, c = component c).

    Shape: slot_logits (B, S, L + 1), seq (B, S) long -> (B,).
    """
    b, s, c = slot_logits.shape
    ce = F.cross_entropy(slot_logits.reshape(b * s, c), seq.reshape(b * s), reduction="none")
    return ce.reshape(b, s).mean(dim=1)


# ----------------------------------------------------------------------------------------
# Total (eq. 5.18)
# ----------------------------------------------------------------------------------------
DEFAULT_WEIGHTS: dict[str, float] = {"cls": 1.0, "bce_patch": 1.0, "bce_cls": 1.0, "rank": 1.0,
                                     "slots": 1.0}
"""Loss weights: L_CLS, lambda_1 on each BCE stream, lambda_2 on L_Rank (thesis: all 1), and
L_Slot of the parallel order head (used only when the model has one)."""


def total_loss(out: dict[str, torch.Tensor], seq: torch.Tensor, ks: torch.Tensor | None,
               weights: dict[str, float] | None = None, alpha: float = 1.0, a: float = 1.0,
               tau: float = 0.2, reg_reduction: str = "sum"
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """L_Total = L_CLS + lambda_1 (L_BCE^U + L_BCE^V) + lambda_2 L_Rank (eq. 5.18), plus
    lambda_S L_Slot when ``out`` has the slot head's ``slot_logits``.

    A weight of 0 switches a term off (the ablation); binary mode (L = 1) uses y = J(Y)
    and should set the rank weight to 0.

    Args:
        out: the model's outputs ``logits`` (B, L), ``logits_patch`` (B, L),
            ``logits_cls`` (B, L), ``u`` (B, n).
        seq: (B, S) label sequences (0 = padding).
        ks: (K,) sampled k for the MIL term (None if its weight is 0).
        weights: keys cls, bce_patch, bce_cls, rank, slots (defaults: DEFAULT_WEIGHTS).
        reg_reduction: "sum" (eq. 5.11) or "mean" over the n pairs.

    Returns:
        the scalar batch loss (mean over samples) and the batch means of each term.
    """
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    num = out["logits"].shape[1]
    if num == 1:
        y = is_fake(seq).unsqueeze(1)
        r = torch.ones_like(y, dtype=torch.long)
    else:
        y, r = sequence_targets(seq, num)
    terms: dict[str, torch.Tensor] = {}
    if w["cls"]:
        if ks is None:
            raise ValueError("the contrastive MIL term needs sampled ks")
        terms["cls"] = cls_loss(out["u"], is_fake(seq), ks, a, tau, reg_reduction)
    if w["bce_patch"]:
        terms["bce_patch"] = multilabel_bce(out["logits_patch"], y)
    if w["bce_cls"]:
        terms["bce_cls"] = multilabel_bce(out["logits_cls"], y)
    if w["rank"]:
        terms["rank"] = rank_loss(out["logits"], y, r, alpha)
    if w["slots"] and "slot_logits" in out:
        terms["slots"] = slot_loss(out["slot_logits"], seq)
    if not terms:
        raise ValueError("all loss weights are 0")
    total = sum(w[k] * v.mean() for k, v in terms.items())
    logs: dict[str, Any] = {f"loss_{k}": float(v.mean().detach()) for k, v in terms.items()}
    return total, logs  # type: ignore[return-value]
