"""Contrastive losses of Chapter 3: NT-Xent (SimCLR), DCL and DCLW (docs/dcl.md, Eqs. (3.1)-(3.6)).

Notation (thesis eqs. 3.1-3.6): a batch of N images, two views each, l2-normalised
projections z_i^(1), z_i^(2); temperature t. For the view k of image i (u the other view)

    U_{i,k} = sum_{j != i, l in {1,2}} exp(<z_i^(k), z_j^(l)> / t)            (eq. 3.2)

    NT-Xent:  L_i^(k) = -<z_i^(1), z_i^(2)>/t + log(exp(<z_i^(1), z_i^(2)>/t) + U_{i,k})  (3.1)
    DCL:      L_i^(k) = -<z_i^(1), z_i^(2)>/t + log U_{i,k}                                (3.6)
    DCLW:     L_i^(k) = -w_i <z_i^(1), z_i^(2)>/t + log U_{i,k},
              w_i = 2 - exp(<z_i^(1), z_i^(2)>/sigma) / mean_j exp(<z_j^(1), z_j^(2)>/sigma)

The thesis sums L_i^(k) over i and k; these modules return the mean over the 2N anchors
(the same up to the constant 2N, and what lightly returns), so the learning rate does not
depend on the batch size through the loss scale.

The weight w of DCLW is treated as a constant (no gradient flows through it), as in
lightly's ``negative_mises_fisher_weights``; the thesis does not say, and its E[w] = 1
argument reads w as a weight, not as part of the objective.

Distributed training: with ``gather_distributed=True`` the projections of all processes
are gathered (:func:`training.distributed.gather`, gradients flow back to their owners),
so every local anchor is contrasted with the negatives of the *global* batch and the DCLW
mean runs over the global batch. Single-process, the option changes nothing.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from training import distributed as dist_utils


def contrastive_terms(z1: torch.Tensor, z2: torch.Tensor, z1_all: torch.Tensor | None = None,
                      z2_all: torch.Tensor | None = None, temperature: float = 0.1,
                      decoupled: bool = False, pos_weight: torch.Tensor | None = None,
                      offset: int = 0) -> torch.Tensor:
    """Per-anchor losses L_i^(k) on already l2-normalised projections (no reduction).

    Args:
        z1: view-1 projections of the local batch, l2-normalised. Shape: (B, D).
        z2: view-2 projections of the local batch, l2-normalised. Shape: (B, D).
        z1_all: view-1 projections of the global batch (defaults to ``z1``). Shape: (G, D).
        z2_all: view-2 projections of the global batch (defaults to ``z2``). Shape: (G, D).
        temperature: t.
        decoupled: False -> NT-Xent (positive pair in the denominator, eq. 3.1);
            True -> DCL (positive pair removed, eq. 3.6).
        pos_weight: optional weight w_i of the positive term (DCLW). Shape: (B,).
        offset: index of the local batch's first image inside the global batch.

    Returns:
        Shape: (2B,): L_i^(1) for i = 0..B-1 (anchors from view 1), then L_i^(2).
    """
    z1_all = z1 if z1_all is None else z1_all
    z2_all = z2 if z2_all is None else z2_all
    b, g = z1.shape[0], z1_all.shape[0]
    rows = torch.arange(b, device=z1.device)
    own = torch.zeros(b, g, dtype=torch.bool, device=z1.device)
    own[rows, rows + offset] = True  # column of the anchor's own image in the global batch
    pos = (z1 * z2).sum(dim=1) / temperature  # <z_i^(1), z_i^(2)> / t, (B,)
    pos_term = -pos if pos_weight is None else -pos_weight * pos
    losses = []
    for anchor, same_all, other_all in ((z1, z1_all, z2_all), (z2, z2_all, z1_all)):
        sim_same = anchor @ same_all.T / temperature  # (B, G): same view
        sim_other = anchor @ other_all.T / temperature  # (B, G): other view
        # negatives: every view of every other image (j != i, l in {1, 2})
        negs = torch.cat([sim_same.masked_fill(own, float("-inf")),
                          sim_other.masked_fill(own, float("-inf"))], dim=1)
        if decoupled:
            log_den = torch.logsumexp(negs, dim=1)  # log U_{i,k}
        else:
            log_den = torch.logsumexp(torch.cat([negs, pos[:, None]], dim=1), dim=1)
        losses.append(pos_term + log_den)
    return torch.cat(losses)


def negative_von_mises_fisher_weights(z1: torch.Tensor, z2: torch.Tensor, sigma: float = 0.5
                                      ) -> torch.Tensor:
    """DCLW's weight w_i = 2 - exp(<z_i^1, z_i^2>/sigma) / mean_j exp(<z_j^1, z_j^2>/sigma).

    Computed without gradient; the mean runs over all rows given (pass the global batch).

    Args:
        z1: l2-normalised view-1 projections. Shape: (B, D).
        z2: l2-normalised view-2 projections. Shape: (B, D).
        sigma: the von Mises-Fisher concentration's inverse (thesis: 0.5).

    Returns:
        Shape: (B,), mean exactly 1.
    """
    with torch.no_grad():
        s = (z1 * z2).sum(dim=1) / sigma
        return 2.0 - s.shape[0] * torch.softmax(s, dim=0)


class _TwoViewContrastiveLoss(nn.Module):
    """Shared forward of the three losses; subclasses choose the denominator and weights."""

    decoupled: bool = False

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.gather_distributed = bool(gather_distributed)

    def _weights(self, z1_all: torch.Tensor, z2_all: torch.Tensor, offset: int, b: int
                 ) -> torch.Tensor | None:
        return None

    def forward(self, out0: torch.Tensor, out1: torch.Tensor) -> torch.Tensor:
        """Mean loss over the 2B anchors of the local batch.

        Args:
            out0: projections of the first views (not necessarily normalised). Shape: (B, D).
            out1: projections of the second views. Shape: (B, D).

        Returns:
            Scalar loss.
        """
        if out0.shape != out1.shape or out0.ndim != 2:
            raise ValueError(f"expected two (B, D) tensors of one shape, got "
                             f"{tuple(out0.shape)} and {tuple(out1.shape)}")
        z1, z2 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
        offset = 0
        z1_all, z2_all = z1, z2
        if self.gather_distributed and dist_utils.world_size() > 1:
            z1_all, z2_all = dist_utils.gather(z1), dist_utils.gather(z2)
            offset = dist_utils.rank() * z1.shape[0]
        w = self._weights(z1_all, z2_all, offset, z1.shape[0])
        return contrastive_terms(z1, z2, z1_all, z2_all, self.temperature,
                                 decoupled=self.decoupled, pos_weight=w, offset=offset).mean()


class NTXentLoss(_TwoViewContrastiveLoss):
    """NT-Xent, the InfoNCE loss of SimCLR (Chen et al. 2020; thesis eq. 3.1).

    L_i^(k) = -<z_i^1, z_i^2>/t + log(exp(<z_i^1, z_i^2>/t) + U_{i,k}), mean over the 2N
    anchors, with 2(N-1) negatives per anchor (all views of the other images). Its gradient
    carries the NPC multiplier q_B (Proposition 1).

    Attributes:
        temperature: t (thesis: 0.1 on ImageNet, 0.07 on CIFAR).
        gather_distributed: contrast against the negatives of all processes.

    Examples:
        >>> loss_fn = NTXentLoss(temperature=0.1)
        >>> loss = loss_fn(model(view1)["projection"], model(view2)["projection"])
    """

    decoupled = False


class DCLLoss(_TwoViewContrastiveLoss):
    """Decoupled contrastive loss (thesis Proposition 2, eq. 3.6).

    L_i^(k) = -<z_i^1, z_i^2>/t + log U_{i,k}: the positive pair is removed from the
    denominator, which removes the NPC multiplier q_B from the gradient.

    Attributes:
        temperature: t.
        gather_distributed: contrast against the negatives of all processes.

    Examples:
        >>> loss_fn = DCLLoss(temperature=0.1)
        >>> loss = loss_fn(z_view1, z_view2)  # (B, D) each
    """

    decoupled = True


class DCLWLoss(_TwoViewContrastiveLoss):
    """Weighted decoupled contrastive loss, DCLW (thesis section 3.3, after eq. 3.6).

    L_i^(k) = -w_i <z_i^1, z_i^2>/t + log U_{i,k} with the negative von Mises-Fisher weight
    w_i = 2 - exp(<z_i^1, z_i^2>/sigma) / mean_j exp(<z_j^1, z_j^2>/sigma): hard positives
    (far apart) get more weight. sigma -> infinity gives DCL.

    Attributes:
        temperature: t.
        sigma: weighting scale (thesis: 0.5).
        gather_distributed: negatives and the mean in w over all processes.

    Examples:
        >>> loss_fn = DCLWLoss(temperature=0.1, sigma=0.5)
        >>> loss = loss_fn(z_view1, z_view2)  # (B, D) each
    """

    decoupled = True

    def __init__(self, temperature: float = 0.1, sigma: float = 0.5,
                 gather_distributed: bool = False) -> None:
        super().__init__(temperature, gather_distributed)
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)

    def _weights(self, z1_all: torch.Tensor, z2_all: torch.Tensor, offset: int, b: int
                 ) -> torch.Tensor:
        return negative_von_mises_fisher_weights(z1_all, z2_all, self.sigma)[offset:offset + b]


LOSSES: dict[str, type[_TwoViewContrastiveLoss]] = {
    "simclr": NTXentLoss, "dcl": DCLLoss, "dclw": DCLWLoss,
}


def build_loss(name: str, temperature: float = 0.1, sigma: float = 0.5,
               gather_distributed: bool = False) -> nn.Module:
    """Build a loss by name: ``simclr`` (NT-Xent), ``dcl`` or ``dclw``."""
    key = name.lower()
    if key not in LOSSES:
        raise ValueError(f"unknown contrastive loss {name!r}; choose from {', '.join(LOSSES)}")
    if key == "dclw":
        return DCLWLoss(temperature, sigma, gather_distributed)
    return LOSSES[key](temperature, gather_distributed)
