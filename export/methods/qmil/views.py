"""Export views of qMIL and the gated-attention baseline (contracts in :mod:`methods.qmil`).

images (B, K, C, H, W), mask (B, K) float 1 = instance / 0 = padding, query (B, D) ->
prob (B,), logit (B,), alpha (B, K) attention logits, beta (B, K) attention weights,
features (B, K, S) what the domain check reads per image (``encode_with_stats``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from export.view import ExportView


class QueryOnnx(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, mask: torch.Tensor, query: torch.Tensor):
        x, stats = self.model.encode_with_stats(images)               # (B, K, M), (B, K, S)
        out = self.model.head(x, mask > 0.5, query)
        return out["prob"], out["logit"], out["alpha"], out["beta"], stats


class GatedOnnx(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, mask: torch.Tensor):
        out = self.model(images, mask > 0.5)
        return out["prob"], out["logit"], out["alpha"], out["beta"]


def _bags(extra: dict[str, Any], with_query: bool) -> tuple[tuple, list[tuple]]:
    g = torch.Generator().manual_seed(0)
    pre = extra["preprocess"]
    h, w = pre["size"]
    c, dim = int(pre["channels"]), int(extra.get("word_dim", 50))

    def bag(b: int, k: int, pad: int) -> tuple[torch.Tensor, ...]:
        mask = torch.ones(b, k)
        if pad:
            mask[0, k - pad:] = 0
        images = torch.randn(b, k, c, h, w, generator=g)
        return (images, mask, torch.randn(b, dim, generator=g)) if with_query else (images, mask)

    return bag(2, 7, 2), [bag(1, 12, 0), bag(3, 4, 1)]


def query_view(model: nn.Module, extra: dict[str, Any]) -> ExportView:
    inputs, checks = _bags(extra, True)
    return ExportView(QueryOnnx(model.eval()), inputs, checks)


def gated_view(model: nn.Module, extra: dict[str, Any]) -> ExportView:
    inputs, checks = _bags(extra, False)
    return ExportView(GatedOnnx(model.eval()), inputs, checks)
