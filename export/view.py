"""The generic export view: the module to trace, its example inputs and its sidecars.

Each method's variants build one with a function registered in its descriptor
(``Variant.view``, e.g. ``export/methods/<name>/views.py``); names, order and dynamic axes
come from the variant's :class:`methods.base.ExportIO`, declared once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn


@dataclass
class ExportView:
    """What to export for one trained model.

    Attributes:
        module: returns a tuple of tensors in ``ExportIO.outputs`` order.
        inputs: example inputs for tracing (in ``ExportIO.inputs`` order).
        check_inputs: further inputs (other batch / bag sizes) for the parity check.
        sidecars: file suffix -> arrays saved beside the ONNX file (sha256 in the manifest).
    """
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    check_inputs: list[tuple[torch.Tensor, ...]]
    sidecars: dict[str, dict[str, Any]] = field(default_factory=dict)


def random_images(pre: dict[str, Any], batch: int, seed: int = 0) -> torch.Tensor:
    """(batch, C, H, W) standard-normal images shaped by a preprocessing spec dict."""
    g = torch.Generator().manual_seed(seed)
    h, w = pre["size"]
    return torch.randn(batch, int(pre["channels"]), int(h), int(w), generator=g)


def image_view(module: nn.Module, extra: dict[str, Any]) -> ExportView:
    """A view whose only input is an image batch (batch 2 traced, batch 1 checked)."""
    pre = extra["preprocess"]
    return ExportView(module, (random_images(pre, 2),), [(random_images(pre, 1, 1),)])
