"""Partial fine-tuning on cached trunk maps: a timm backbone cut into a frozen trunk and a
trained tail.

A MobileNetV2-family backbone (timm's EfficientNet class: ``conv_stem``, ``bn1``, ``blocks``
(its stages), ``conv_head``, ``bn2``, pooling) is cut before its last ``stages`` stages.
The trunk (stem and the earlier stages) stays at its starting weights, so its maps of every
training image (or of a few augmented views of each) are computed once and cached; the
tail (the last stages, the head convolution and the pooling) trains on the cached maps. The
served network is still the whole backbone: ``tail(trunk(x)) == backbone(x)``
(tests/test_partial.py). ``stages`` 0 makes the trunk the whole backbone (its pooled
features cached) and the tail the identity.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class Split:
    """A backbone cut for partial fine-tuning: ``trunk`` (frozen, its outputs cached),
    ``tail`` (trained on them) and the parameters of each."""

    trunk: nn.Module
    tail: nn.Module
    trunk_params: list[nn.Parameter]
    tail_params: list[nn.Parameter]
    stages: int
    total: int

    def describe(self) -> str:
        """Which parts are frozen and which train, in words (the plan line)."""
        if self.stages == 0:
            return "backbone frozen (its pooled features cached)"
        first = self.total - self.stages
        frozen = f"stem + stages 0-{first - 1}" if first > 0 else "stem"
        last = self.total - 1
        trained = f"stage {last}" if first == last else f"stages {first}-{last}"
        return f"frozen {frozen} (their maps cached), trained {trained} + head conv"


def split_backbone(backbone: nn.Module, stages: int) -> Split:
    """Cut ``backbone`` before its last ``stages`` stages (0: the whole backbone frozen).

    Raises:
        ValueError: ``stages`` out of range, or a backbone without stages to cut.
    """
    if stages <= 0:
        params = list(backbone.parameters())
        return Split(backbone, nn.Identity(), params, [], 0, 0)
    blocks = getattr(backbone, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or not hasattr(backbone, "conv_head"):
        raise ValueError(f"train_stages={stages}: the backbone {type(backbone).__name__} has no "
                         f"stages to cut (a MobileNetV2/EfficientNet backbone has); set "
                         f"train_stages=0")
    if stages > len(blocks):
        raise ValueError(f"train_stages={stages}: the backbone has {len(blocks)} stages; set "
                         f"0-{len(blocks)}")
    first = len(blocks) - stages
    tail_mods = [*blocks[first:], backbone.conv_head, backbone.bn2]
    tail_ids = {id(p) for m in tail_mods for p in m.parameters()}
    tail_params = [p for p in backbone.parameters() if id(p) in tail_ids]
    trunk_params = [p for p in backbone.parameters() if id(p) not in tail_ids]
    # the backbone's own modules (shared, not copied): training the tail trains the backbone
    trunk = nn.Sequential(backbone.conv_stem, backbone.bn1, *blocks[:first])
    tail = nn.Sequential(*tail_mods, backbone.global_pool)
    trunk.training = tail.training = backbone.training  # the containers only
    return Split(trunk, tail, trunk_params, tail_params, stages, len(blocks))


def trunk_maps(trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The trunk's float32 outputs of ``x`` in eval mode (its mode restored after), without
    gradients or autocast."""
    modes = [(m, m.training) for m in trunk.modules()]
    trunk.eval()
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        out = trunk(x).float().contiguous()
    for m, mode in modes:
        m.training = mode
    return out
