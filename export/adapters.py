"""Per-method export views: which module, inputs, names and dynamic axes to export.

Each view turns a trained network into a module with tuple outputs whose names are the
serving contract read by ``app/services``:

=========  ===============================  ============================================
model      inputs                           outputs
=========  ===============================  ============================================
seqfake    image (B, 3, S, S)               probs (B, L), logits (B, L), u (B, n),
                                            dissim (B, h, w)
qmil       images (B, K, C, H, W),          prob (B,), logit (B,), alpha (B, K),
           mask (B, K) float 1/0,           beta (B, K)
           query (B, D)
dcl        image (B, C, H, W)               embedding (B, F), l2-normalised
abcnorm    image (B, C, H, W)               logits (B, C), features (B, F, h, w)
=========  ===============================  ============================================
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn


@dataclass
class ExportView:
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    check_inputs: list[tuple[torch.Tensor, ...]]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    sidecars: dict[str, dict[str, Any]] = field(default_factory=dict)  # suffix -> arrays


class SeqFakeView(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        out = self.model(image)
        return torch.sigmoid(out["logits"]), out["logits"], out["u"], out["dissim"]


class QMILView(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, mask: torch.Tensor, query: torch.Tensor):
        out = self.model(images, mask > 0.5, query)
        return out["prob"], out["logit"], out["alpha"], out["beta"]


class EmbedView(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.embed(image)


class ClassifierView(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        return self.model.forward_with_features(image)


def _image(pre: dict[str, Any], batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h, w = pre["size"]
    return torch.randn(batch, int(pre["channels"]), int(h), int(w), generator=g)


def view_for(method: str, model: nn.Module, extra: dict[str, Any]) -> ExportView:
    """The export view of a trained ``model`` of ``method`` (see the module table)."""
    pre = extra["preprocess"]
    model = model.eval()
    if method == "seqfake":
        return ExportView(SeqFakeView(model), (_image(pre, 2),), [(_image(pre, 1, 1),)],
                          ["image"], ["probs", "logits", "u", "dissim"],
                          {"image": {0: "batch"}, "probs": {0: "batch"}, "logits": {0: "batch"},
                           "u": {0: "batch"}, "dissim": {0: "batch"}})
    if method == "qmil":
        g = torch.Generator().manual_seed(0)
        dim = int(extra.get("word_dim", 50))
        h, w = pre["size"]
        c = int(pre["channels"])

        def bag(b: int, k: int, pad: int) -> tuple[torch.Tensor, ...]:
            mask = torch.ones(b, k)
            if pad:
                mask[0, k - pad:] = 0
            return (torch.randn(b, k, c, h, w, generator=g), mask, torch.randn(b, dim, generator=g))

        return ExportView(QMILView(model), bag(2, 7, 2), [bag(1, 12, 0), bag(3, 4, 1)],
                          ["images", "mask", "query"], ["prob", "logit", "alpha", "beta"],
                          {"images": {0: "batch", 1: "bag"}, "mask": {0: "batch", 1: "bag"},
                           "query": {0: "batch"}, "prob": {0: "batch"}, "logit": {0: "batch"},
                           "alpha": {0: "batch", 1: "bag"}, "beta": {0: "batch", 1: "bag"}})
    if method == "dcl":
        return ExportView(EmbedView(model), (_image(pre, 2),), [(_image(pre, 1, 1),)],
                          ["image"], ["embedding"],
                          {"image": {0: "batch"}, "embedding": {0: "batch"}})
    if method == "abcnorm":
        head = {"weight": model.head_weight.detach().cpu().numpy(),
                "bias": model.head_bias.detach().cpu().numpy()}
        return ExportView(ClassifierView(model), (_image(pre, 2),), [(_image(pre, 1, 1),)],
                          ["image"], ["logits", "features"],
                          {"image": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}},
                          sidecars={".head.npz": head})
    raise KeyError(f"no export view for method {method!r}")
