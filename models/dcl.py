"""Encoders for contrastive pre-training (thesis Chapter 3; docs/dcl.md, Eqs. (3.1)-(3.6)).

A timm backbone (ResNet-18 by default, any timm model by name, ``pretrained=False``
always) with a stem for small images, plus SimCLR's MLP projection head:

    x (B, C, H, W) -> backbone -> h (B, F) -> Linear-BN-ReLU-Linear -> projection (B, 128)

Stems (``stem``):
    ``cifar``    3x3 conv stride 1, no max-pool (the CIFAR ResNet of the thesis);
    ``cifar_s2`` 3x3 conv stride 2, no max-pool (a quarter of ``cifar``'s compute; stage 1
                 runs at 14x14 on 28 px inputs);
    ``timm``     the backbone's own stem (7x7 stride 2 + max-pool for ResNets).

The backbone's convolutions leave out the kernel taps that can only see zero padding for the
input's size (:mod:`models.conv_taps`): the same function, a quarter less time per training
step for ResNet-18 on 28 px images, whose last stage runs its 3x3 convolutions on 1x1 maps.

:meth:`ContrastiveEncoder.embed` gives the l2-normalised backbone features used by the
kNN monitor, the linear probe and the retrieval gallery (the export view
:func:`export.methods.dcl.views.embed_view` turns ``embed`` into the ONNX encoder).
"""
from __future__ import annotations

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.conv_taps import trim_conv_taps
from models.registry import register_model

STEMS = ("cifar", "cifar_s2", "timm")


def _replace_stem(backbone: nn.Module, stem: str, in_chans: int) -> None:
    """Swap a ResNet-style stem (``conv1`` + ``maxpool``) for a small-image one, in place."""
    if stem == "timm":
        return
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose from {', '.join(STEMS)}")
    conv = getattr(backbone, "conv1", None)
    if not isinstance(conv, nn.Conv2d) or not hasattr(backbone, "maxpool"):
        raise ValueError(f"stem {stem!r} needs a ResNet-style backbone with a single conv1 "
                         f"and a maxpool; use stem='timm' for {type(backbone).__name__}")
    stride = 1 if stem == "cifar" else 2
    backbone.conv1 = nn.Conv2d(in_chans, conv.out_channels, 3, stride=stride, padding=1,
                               bias=False)
    backbone.maxpool = nn.Identity()


class ProjectionHead(nn.Module):
    """SimCLR's MLP projector g: Linear -> BatchNorm -> ReLU -> Linear.

    Args:
        in_dim: backbone feature size F.
        hidden_dim: hidden width.
        out_dim: projection size (128 in the thesis).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim, bias=False),
                                 nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                                 nn.Linear(hidden_dim, out_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim), not normalised (the losses normalise)."""
        return self.net(h)


class ContrastiveEncoder(nn.Module):
    """Backbone + projection head for SimCLR / DCL / DCLW pre-training.

    Args:
        backbone: timm model name (``resnet18`` by default).
        in_chans: input channels (1 for Fashion-MNIST).
        stem: ``cifar`` | ``cifar_s2`` | ``timm`` (see the module docstring).
        proj_hidden: hidden width of the projection MLP.
        proj_dim: projection size.
    """

    def __init__(self, backbone: str = "resnet18", in_chans: int = 1, stem: str = "cifar",
                 proj_hidden: int = 512, proj_dim: int = 128) -> None:
        super().__init__()
        self.backbone = timm.create_model(backbone, pretrained=False, in_chans=in_chans,
                                          num_classes=0)
        _replace_stem(self.backbone, stem, in_chans)
        trim_conv_taps(self.backbone)  # exact; skips the taps that see only padding
        self.feature_dim = int(self.backbone.num_features)
        self.proj_dim = int(proj_dim)
        self.projector = ProjectionHead(self.feature_dim, proj_hidden, proj_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features h. (B, C, H, W) -> (B, F)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C, H, W) -> {"features": (B, F), "projection": (B, proj_dim)}."""
        h = self.features(x)
        return {"features": h, "projection": self.projector(h)}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """l2-normalised backbone features for kNN / retrieval. (B, C, H, W) -> (B, F)."""
        return F.normalize(self.features(x), dim=1)


class SmallConvNet(nn.Module):
    """A small 4-block CNN backbone (conv-BN-ReLU, 3 x 2x2 pools, global average pool).

    For the batch-size sweep only, where ResNet-18 does not fit the CPU budget.
    Attributes mirror timm's: ``num_features``.

    Args:
        in_chans: input channels.
        width: channels of the first block (doubled at each of the next three).
    """

    def __init__(self, in_chans: int = 1, width: int = 32) -> None:
        super().__init__()
        chans = [in_chans, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                       nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True)]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers)
        self.num_features = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 8 * width)."""
        return self.body(x).mean(dim=(2, 3))


class SmallContrastiveEncoder(ContrastiveEncoder):
    """:class:`ContrastiveEncoder` on :class:`SmallConvNet` (same outputs and methods)."""

    def __init__(self, in_chans: int = 1, width: int = 32, proj_hidden: int = 256,
                 proj_dim: int = 128) -> None:
        nn.Module.__init__(self)
        self.backbone = SmallConvNet(in_chans, width)
        self.feature_dim = int(self.backbone.num_features)
        self.proj_dim = int(proj_dim)
        self.projector = ProjectionHead(self.feature_dim, proj_hidden, proj_dim)


@register_model
def dcl_encoder(backbone: str = "resnet18", in_chans: int = 1, stem: str = "cifar",
                proj_hidden: int = 512, proj_dim: int = 128) -> ContrastiveEncoder:
    """Any timm backbone + projection head."""
    return ContrastiveEncoder(backbone, in_chans, stem, proj_hidden, proj_dim)


@register_model
def dcl_resnet18(in_chans: int = 1, stem: str = "cifar", proj_hidden: int = 512,
                 proj_dim: int = 128) -> ContrastiveEncoder:
    """ResNet-18 (512-d features) with a small-image stem + 128-d projection (the thesis' CIFAR model)."""
    return ContrastiveEncoder("resnet18", in_chans, stem, proj_hidden, proj_dim)


@register_model
def dcl_small_cnn(in_chans: int = 1, width: int = 32, proj_hidden: int = 256,
                  proj_dim: int = 128) -> SmallContrastiveEncoder:
    """Small 4-block CNN (8 * width features) + projection; for CPU-bound sweeps."""
    return SmallContrastiveEncoder(in_chans, width, proj_hidden, proj_dim)
