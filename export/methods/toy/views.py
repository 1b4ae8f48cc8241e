"""Export view of the toy regressor: x (B, 8) -> y (B, 1)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from export.view import ExportView


def regressor_view(model: nn.Module, extra: dict[str, Any]) -> ExportView:
    g = torch.Generator().manual_seed(0)
    return ExportView(model.eval(), (torch.randn(2, 8, generator=g),),
                      [(torch.randn(5, 8, generator=g),)])
