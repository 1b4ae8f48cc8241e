"""Long-tailed image classifier: any timm backbone + global average pooling + linear head.

Used by ABC-Norm (thesis Chapter 4; docs/abcnorm.md) and its baselines. With a GAP +
linear head, Grad-CAM on the last feature map equals the class-activation map (CAM):
d logit_c / d F_k(x, y) = W[c, k] / (h * w), so the app can compute the explanation from the
exported feature map and the head weights with no torch (see :mod:`runtime.cam`).

Small images (28 px Fashion-MNIST, 32 px CIFAR) use a "CIFAR-style" stem: the 7x7/2 conv +
max-pool of ImageNet ResNets is replaced by one 3x3 conv (stride ``stem_stride``) and no
max-pool, and the last stage may be dilated (``output_stride=16``) so that a 28 px input
still gives a 4 x 4 feature map for the CAM.
"""
from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn as nn

from models.registry import register_model


class LongTailClassifier(nn.Module):
    """timm backbone -> feature map (B, Cf, h, w) -> GAP (B, Cf) -> linear head (B, C).

    Args:
        backbone: any timm model name (``resnet18``, ``resnet50``, ``efficientnet_b0``, ...);
            always built with ``pretrained=False`` (no downloads).
        num_classes: C, the number of classes.
        in_chans: input channels (1 for grayscale, 3 for RGB).
        stem: ``"imagenet"`` keeps timm's stem; ``"cifar"`` replaces ``conv1`` by a 3x3 conv
            of stride ``stem_stride`` and drops the max-pool (ResNet-family backbones only).
        stem_stride: stride of the CIFAR-style stem conv (1 = classic CIFAR ResNet).
        backbone_kwargs: extra keyword arguments for ``timm.create_model`` (for example
            ``output_stride``, or ``layers``/``channels`` for a slimmer ResNet).

    Eval forward: ``forward(x (B, in_chans, H, W)) -> logits (B, C)``.
    """

    def __init__(self, backbone: str = "resnet18", num_classes: int = 10, in_chans: int = 1,
                 stem: str = "cifar", stem_stride: int = 1,
                 backbone_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        kw = dict(backbone_kwargs or {})
        for key in ("layers", "channels"):  # YAML/JSON gives lists; timm wants tuples
            if key in kw and isinstance(kw[key], list):
                kw[key] = tuple(kw[key])
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0,
                                          global_pool="", in_chans=in_chans, **kw)
        if stem == "cifar":
            conv1 = getattr(self.backbone, "conv1", None)
            if not isinstance(conv1, nn.Conv2d) or not hasattr(self.backbone, "maxpool"):
                raise ValueError(f"stem='cifar' needs a ResNet-style backbone with conv1 and "
                                 f"maxpool; {backbone!r} has none. Use stem='imagenet'.")
            self.backbone.conv1 = nn.Conv2d(in_chans, conv1.out_channels, kernel_size=3,
                                            stride=int(stem_stride), padding=1, bias=False)
            self.backbone.maxpool = nn.Identity()
        elif stem != "imagenet":
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        self.num_features = int(self.backbone.num_features)
        self.head = nn.Linear(self.num_features, num_classes)
        self.backbone_frozen = False

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature map. x (B, in_chans, H, W) -> (B, Cf, h, w)."""
        return self.backbone.forward_features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """GAP + linear. features (B, Cf, h, w) -> logits (B, C)."""
        return self.head(features.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, in_chans, H, W) -> logits (B, C)."""
        return self.forward_head(self.forward_features(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, in_chans, H, W) -> (logits (B, C), feature map (B, Cf, h, w))."""
        f = self.forward_features(x)
        return self.forward_head(f), f

    @property
    def head_weight(self) -> torch.Tensor:
        """Classifier weight W, shape (C, Cf)."""
        return self.head.weight

    @property
    def head_bias(self) -> torch.Tensor:
        """Classifier bias b, shape (C,)."""
        return self.head.bias

    def last_stage(self) -> nn.Module:
        """The last convolutional stage (Grad-CAM's target layer)."""
        bb = self.backbone
        if hasattr(bb, "layer4"):
            return bb.layer4
        for name in ("stages", "blocks", "features", "layers"):
            seq = getattr(bb, name, None)
            if isinstance(seq, (nn.Sequential, nn.ModuleList)) and len(seq):
                return seq[-1]
        raise ValueError(f"cannot find the last stage of {type(bb).__name__}")

    def reset_head(self) -> None:
        """Re-initialise the linear head (classifier re-training, cRT)."""
        self.head.reset_parameters()

    def freeze_backbone(self) -> None:
        """Freeze the backbone (cRT): no gradients, BatchNorm statistics fixed (always eval)."""
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone_frozen = True
        self.backbone.eval()

    def train(self, mode: bool = True) -> "LongTailClassifier":
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self


@register_model
def lt_classifier(**kwargs: Any) -> LongTailClassifier:
    """Any timm backbone + GAP + linear head (see :class:`LongTailClassifier`)."""
    return LongTailClassifier(**kwargs)
