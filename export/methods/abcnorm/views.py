"""Export view of the long-tailed classifier: image (B, C, H, W) -> logits (B, C),
features (B, F, h, w) (the last feature map, for Grad-CAM); the linear head is saved as a
``.head.npz`` sidecar (weight (C, F), bias (C,)) so the app computes Grad-CAM in numpy."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from export.view import ExportView, image_view


class ClassifierOnnx(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        return self.model.forward_with_features(image)


def classifier_view(model: nn.Module, extra: dict[str, Any]) -> ExportView:
    view = image_view(ClassifierOnnx(model.eval()), extra)
    view.sidecars[".head.npz"] = {"weight": model.head_weight.detach().cpu().numpy(),
                                  "bias": model.head_bias.detach().cpu().numpy()}
    return view
