"""A tiny MLP used by the engine's own tests (resume, DDP)."""
from __future__ import annotations

import torch
import torch.nn as nn

from models.registry import register_model


class ToyRegressor(nn.Module):
    """Two-layer MLP with dropout. Input (B, in_dim) -> output (B, 1)."""

    def __init__(self, in_dim: int = 8, hidden: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_model
def toy_regressor(**kwargs) -> ToyRegressor:
    return ToyRegressor(**kwargs)
