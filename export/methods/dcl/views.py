"""Export view of the DCL encoder: image (B, C, H, W) -> embedding (B, F), l2-normalised."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from export.view import ExportView, image_view


class EmbedOnnx(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.embed(image)


def embed_view(model: nn.Module, extra: dict[str, Any]) -> ExportView:
    return image_view(EmbedOnnx(model.eval()), extra)
