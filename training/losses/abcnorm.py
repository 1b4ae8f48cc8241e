"""ABC-Norm: adaptive batch confusion norm (thesis Chapter 4; docs/abcnorm.md, Eqs. (4.2)-(4.7)).

For a batch of M samples with softmax probabilities p_ij over C classes,

    L = (1 - lambda) * CE + lambda * (1/M) * sum_i sum_j A_jj * p_ij^2,
    A_jj = (N_j / mean_k N_k)^tau,

N_j the training count of class j (from the training split), tau = 0.5, lambda in
{0.1, 0.3, 0.5}. The regulariser sums over all C classes, including classes absent
from the batch. Note eq. 4.7 writes sum_j A_jj p_ij^2 for ||P^T A||_F^2 (which would give
A_jj^2); eq. 4.7's last line, A_jj p_ij^2, is the one implemented (docs/abcnorm.md, Eq. (4.7)).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def adaptive_matrix_diag(class_counts: Sequence[float] | torch.Tensor,
                         tau: float = 0.5) -> torch.Tensor:
    """Diagonal of the adaptive matrix A (eq. 4.2).

    Args:
        class_counts: N_j, training images per class. Shape: (C,).
        tau: the power tau.

    Returns:
        A_jj = (N_j / mean N)^tau, float32. Shape: (C,).
    """
    n = torch.as_tensor(class_counts, dtype=torch.float32)
    if n.ndim != 1 or (n < 0).any() or n.sum() <= 0:
        raise ValueError(f"class_counts must be a non-negative 1-D vector, got {class_counts}")
    return (n / n.mean()).pow(float(tau))


def abc_norm(probs: torch.Tensor, a_diag: torch.Tensor) -> torch.Tensor:
    """The ABC-Norm regulariser (1/M) sum_i sum_j A_jj p_ij^2 (eq. 4.7).

    Args:
        probs: softmax probabilities p. Shape: (M, C).
        a_diag: diagonal of A. Shape: (C,).

    Returns:
        Scalar tensor.
    """
    return (probs.pow(2) * a_diag.to(probs)).sum(dim=1).mean()


class ABCNormLoss(nn.Module):
    """(1 - lambda) CE + lambda * ABC-Norm (eq. 4.5), Hsu et al. (thesis Chapter 4).

    Attributes:
        a_diag: buffer, the diagonal of the adaptive matrix A. Shape: (C,).
        lam: lambda, the weight of the regulariser.

    Examples:
        >>> loss_fn = ABCNormLoss([500, 50, 5], lam=0.3)
        >>> loss = loss_fn(torch.randn(8, 3), torch.randint(0, 3, (8,)))
    """

    def __init__(self, class_counts: Sequence[float] | torch.Tensor, lam: float = 0.3,
                 tau: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lambda must lie in [0, 1], got {lam}")
        self.lam, self.tau = float(lam), float(tau)
        self.register_buffer("a_diag", adaptive_matrix_diag(class_counts, tau))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits (M, C), targets (M,) int64 -> scalar loss."""
        ce = F.cross_entropy(logits, targets)
        reg = abc_norm(logits.softmax(dim=1), self.a_diag)
        return (1.0 - self.lam) * ce + self.lam * reg
