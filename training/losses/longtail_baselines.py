"""Baseline losses for long-tailed / fine-grained classification (thesis section 4.3.3;
docs/abcnorm.md, Eqs. (4.10)-(4.11)).

Each is an ``nn.Module`` called as ``loss(logits (M, C), targets (M,) int64) -> scalar``:

- :class:`CrossEntropyLoss`: plain CE (the "Baseline" of Table 4.2).
- :class:`PairwiseConfusionLoss`: (1 - lambda) CE + lambda L_PC, Dubey et al., "Pairwise
  Confusion for Fine-Grained Visual Classification", ECCV 2018; thesis eq. 4.10.
- :class:`MaxEntLoss`: CE - gamma H(p), Dubey et al., "Maximum-Entropy Fine-Grained
  Classification", NeurIPS 2018; thesis eq. 4.11.
- :class:`LogitAdjustedLoss`: CE on logits + tau log(prior), Menon et al., "Long-tail
  learning via logit adjustment", ICLR 2021.
- :class:`LDAMLoss`: label-distribution-aware margins m_j proportional to N_j^(-1/4), with
  optional per-class weights set by the deferred re-weighting (DRW) schedule
  (:func:`drw_class_weights`), Cao et al., NeurIPS 2019.

Classifier re-training (cRT, Kang et al., ICLR 2020) is a procedure, not a loss: see
``training/methods/abcnorm.py`` (stage ``crt``) and
:func:`training.data.longtail.class_balanced_indices`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def _counts(class_counts: Sequence[float] | torch.Tensor) -> torch.Tensor:
    n = torch.as_tensor(class_counts, dtype=torch.float32)
    if n.ndim != 1 or (n <= 0).any():
        raise ValueError(f"class_counts must be positive per class, got {class_counts}")
    return n


def entropy(probs: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean prediction entropy -(1/M) sum_i sum_j p_ij log p_ij (eq. 4.11).

    Args:
        probs: softmax probabilities. Shape: (M, C).
    """
    return -(probs * probs.clamp_min(eps).log()).sum(dim=1).mean()


class CrossEntropyLoss(nn.Module):
    """Plain softmax cross-entropy (eq. 4.6)."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits (M, C), targets (M,) -> scalar."""
        return F.cross_entropy(logits, targets)


def pairwise_confusion(probs: torch.Tensor, targets: torch.Tensor,
                       pairs: str = "different") -> torch.Tensor:
    """Pairwise confusion L_PC = (2/M) sum_{i<=M/2} I_i ||p_i - p_{i+M/2}||_2 (eq. 4.10).

    The batch (already in random order) is split into halves; sample i is paired with
    sample i + M/2. Which pairs count:

    - ``"different"`` (default): pairs of different classes, as in Dubey et al. (their
      indicator is y_i != y_j). The thesis prints I(y_i = y_{i+M/2}), which we read as
      a garbled "!=": confusing two samples of the same class is not confusion.
    - ``"same"``: the thesis' literal indicator.
    - ``"all"``: every pair, as in Dubey et al.'s released code.

    Args:
        probs: softmax probabilities. Shape: (M, C), M even (an odd last sample is dropped).
        targets: labels. Shape: (M,).
    """
    half = probs.shape[0] // 2
    if half == 0:
        return probs.sum() * 0.0
    p1, p2 = probs[:half], probs[half : 2 * half]
    y1, y2 = targets[:half], targets[half : 2 * half]
    dist = (p1 - p2).norm(p=2, dim=1)
    if pairs == "different":
        mask = (y1 != y2).to(dist)
    elif pairs == "same":
        mask = (y1 == y2).to(dist)
    elif pairs == "all":
        mask = torch.ones_like(dist)
    else:
        raise ValueError(f"pairs must be 'different', 'same' or 'all', got {pairs!r}")
    return (mask * dist).sum() / half


class PairwiseConfusionLoss(nn.Module):
    """(1 - lambda) CE + lambda L_PC: eq. 4.5 with L_ABC replaced by L_PC, as the thesis
    compares them (section 4.3.3).

    Examples:
        >>> loss = PairwiseConfusionLoss(lam=0.3)(torch.randn(8, 5), torch.randint(0, 5, (8,)))
    """

    def __init__(self, lam: float = 0.3, pairs: str = "different") -> None:
        super().__init__()
        self.lam, self.pairs = float(lam), pairs

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits (M, C), targets (M,) -> scalar."""
        ce = F.cross_entropy(logits, targets)
        pc = pairwise_confusion(logits.softmax(dim=1), targets, self.pairs)
        return (1.0 - self.lam) * ce + self.lam * pc


class MaxEntLoss(nn.Module):
    """CE - gamma * H(p): maximum-entropy regularisation (eq. 4.11 as a penalty on
    confident predictions; the entropy is maximised, hence the minus sign).

    Examples:
        >>> loss = MaxEntLoss(gamma=0.3)(torch.randn(8, 5), torch.randint(0, 5, (8,)))
    """

    def __init__(self, gamma: float = 0.3) -> None:
        super().__init__()
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits (M, C), targets (M,) -> scalar."""
        return F.cross_entropy(logits, targets) - self.gamma * entropy(logits.softmax(dim=1))


class LogitAdjustedLoss(nn.Module):
    """Logit-adjusted CE: CE(logits + tau * log(prior), y), prior_j = N_j / sum N.

    Only training is adjusted; at test time the plain logits are used (Menon et al., eq. 10).

    Attributes:
        log_prior: buffer, log(N_j / sum N). Shape: (C,).
    """

    def __init__(self, class_counts: Sequence[float] | torch.Tensor, tau: float = 1.0) -> None:
        super().__init__()
        n = _counts(class_counts)
        self.tau = float(tau)
        self.register_buffer("log_prior", (n / n.sum()).log())

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits (M, C), targets (M,) -> scalar."""
        return F.cross_entropy(logits + self.tau * self.log_prior.to(logits), targets)


def ldam_margins(class_counts: Sequence[float] | torch.Tensor,
                 max_margin: float = 0.5) -> torch.Tensor:
    """m_j = K / N_j^(1/4), with K chosen so that the rarest class gets ``max_margin``.

    Returns:
        Shape: (C,).
    """
    inv = _counts(class_counts).pow(-0.25)
    return inv * (float(max_margin) / inv.max())


def drw_class_weights(class_counts: Sequence[float] | torch.Tensor,
                      beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights of the DRW stage (Cui et al. 2019, as used by LDAM-DRW):
    w_j = (1 - beta) / (1 - beta^N_j), normalised so that sum_j w_j = C.

    Returns:
        Shape: (C,).
    """
    n = _counts(class_counts)
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(float(beta)), n))
    return w * (len(n) / w.sum())


class LDAMLoss(nn.Module):
    """LDAM: CE(s * (z - m_y e_y), y; weight), margins m_j proportional to N_j^(-1/4).

    The margin is subtracted from the true-class logit only. Cao et al. apply it to cosine
    logits with s = 30; our head is a plain linear layer (so that Grad-CAM equals the CAM),
    hence s defaults to 1 on the raw logits. ``set_class_weights`` switches the per-class
    weights on for the deferred re-weighting (DRW) stage.

    Attributes:
        margins: buffer, m_j. Shape: (C,).
        class_weights: buffer, per-class CE weights (ones before DRW). Shape: (C,).
    """

    def __init__(self, class_counts: Sequence[float] | torch.Tensor, max_margin: float = 0.5,
                 s: float = 1.0) -> None:
        super().__init__()
        self.s = float(s)
        margins = ldam_margins(class_counts, max_margin)
        self.register_buffer("margins", margins)
        self.register_buffer("class_weights", torch.ones_like(margins))

    def set_class_weights(self, weights: torch.Tensor | None) -> None:
        """Per-class weights (C,) for the CE, or None for uniform."""
        w = torch.ones_like(self.margins) if weights is None else torch.as_tensor(
            weights, dtype=torch.float32)
        self.class_weights.copy_(w)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits (M, C), targets (M,) -> scalar."""
        onehot = F.one_hot(targets, logits.shape[1]).to(logits)
        adjusted = logits - onehot * self.margins.to(logits)
        return F.cross_entropy(self.s * adjusted, targets,
                               weight=self.class_weights.to(logits))
