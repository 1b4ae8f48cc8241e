"""SBI's detector (Shiohara & Yamasaki, CVPR 2022): EfficientNet-B4 with two classes.

A re-implementation, written from reading the authors' code (mapooon/SelfBlendedImages,
``src/inference/model.py``: ``Detector`` wraps efficientnet_pytorch's
``EfficientNet.from_pretrained("efficientnet-b4", advprop=True, num_classes=2)`` as
``self.net``), in efficientnet_pytorch's parameter layout so that the published checkpoints
(``FFraw.tar`` / ``FFc23.tar``, whose ``model`` entry is the ``Detector``'s state dict,
keys ``net._conv_stem.weight`` ...) load with strict key and shape checks:

* stem: ``_conv_stem`` (3x3, stride 2) + ``_bn0``; head: ``_conv_head`` (1x1) + ``_bn1``,
  global average pooling, dropout (off in eval), ``_fc`` (1792 -> 2);
* ``_blocks.N``: mobile inverted bottlenecks with ``_expand_conv``/``_bn0`` (absent when the
  expansion ratio is 1), ``_depthwise_conv``/``_bn1``, squeeze-excitation ``_se_reduce`` /
  ``_se_expand`` (with bias), ``_project_conv``/``_bn2``; identity skip around the repeated
  blocks of a stage (drop-connect is a training-time regulariser: off in eval);
* every convolution pads "same" with padding computed once for the configured image size
  (380 px for B4), as efficientnet_pytorch's static-padding convolution does: the pads are
  fixed numbers, so a smaller input runs the same padding;
* batch norm with eps 1e-3; activation swish (x * sigmoid(x)).

The authors' image script feeds RGB crops scaled to [0, 1] (uint8 / 255, no mean or std) at
380 x 380 and reads fakeness as ``softmax(logits)[:, 1]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.registry import register_model

IMAGE_SIZE = 380      # B4's resolution: the static padding is computed for it
WIDTH, DEPTH = 1.4, 1.8  # B4's width and depth multipliers
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
HEAD_CHANNELS = 1280  # before the width multiplier
STEM_CHANNELS = 32
SE_RATIO = 0.25
DROPOUT = 0.4


@dataclass(frozen=True)
class Stage:
    """One stage of EfficientNet-B0's layout, before the B4 multipliers."""
    repeats: int
    kernel: int
    stride: int
    expand: int
    c_in: int
    c_out: int


B0_STAGES = (Stage(1, 3, 1, 1, 32, 16), Stage(2, 3, 2, 6, 16, 24), Stage(2, 5, 2, 6, 24, 40),
             Stage(3, 3, 2, 6, 40, 80), Stage(3, 5, 1, 6, 80, 112), Stage(4, 5, 2, 6, 112, 192),
             Stage(1, 3, 1, 6, 192, 320))


def round_channels(c: int, width: float = WIDTH, divisor: int = 8) -> int:
    """Channels scaled by ``width`` to a multiple of ``divisor``, never more than 10 % below
    the scaled value (EfficientNet's rule)."""
    scaled = c * width
    out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * scaled else out


def round_repeats(n: int, depth: float = DEPTH) -> int:
    """Blocks of a stage scaled by ``depth``, rounded up."""
    return int(math.ceil(depth * n))


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) zero padding that makes a ``kernel``/``stride`` convolution of a
    ``size``-long input give ``ceil(size / stride)`` outputs; the extra pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A convolution with "same" zero padding fixed for an input of ``size`` pixels."""

    def __init__(self, c_in: int, c_out: int, kernel: int, size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False) -> None:
        super().__init__(c_in, c_out, kernel, stride=stride, groups=groups, bias=bias)
        before, after = same_pads(size, kernel, stride)
        self.pads = (before, after, before, after)  # left, right, top, bottom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads)
        return super().forward(x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excitation, on an input of ``size`` pixels."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int,
                 size: int, residual: bool) -> None:
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv2d(c_in, mid, 1, size)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, size, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        squeezed = max(1, int(c_in * SE_RATIO))
        self._se_reduce = nn.Conv2d(mid, squeezed, 1)
        self._se_expand = nn.Conv2d(squeezed, mid, 1)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.expand = expand
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expand != 1:
            h = F.silu(self._bn0(self._expand_conv(h)))
        h = F.silu(self._bn1(self._depthwise_conv(h)))
        s = F.adaptive_avg_pool2d(h, 1)
        s = self._se_expand(F.silu(self._se_reduce(s)))
        h = self._bn2(self._project_conv(torch.sigmoid(s) * h))
        return h + x if self.residual else h


def out_size(size: int, stride: int) -> int:
    """The feature map's side after a "same" convolution of ``stride``."""
    return math.ceil(size / stride)


class EfficientNetB4(nn.Module):
    """EfficientNet-B4 in efficientnet_pytorch's parameter layout; returns logits (B, classes)."""

    def __init__(self, num_classes: int = 2, image_size: int = IMAGE_SIZE) -> None:
        super().__init__()
        stem = round_channels(STEM_CHANNELS)
        self._conv_stem = SameConv2d(3, stem, 3, image_size, stride=2)
        self._bn0 = _bn(stem)
        size = out_size(image_size, 2)
        blocks: list[nn.Module] = []
        for st in B0_STAGES:
            c_in, c_out = round_channels(st.c_in), round_channels(st.c_out)
            for i in range(round_repeats(st.repeats)):
                stride = st.stride if i == 0 else 1
                # efficientnet_pytorch skips only around a stage's repeated blocks (its first
                # block's stride is a list, which never equals 1 in its skip test)
                blocks.append(MBConv(c_in if i == 0 else c_out, c_out, st.kernel, stride,
                                     st.expand, size, residual=i > 0))
                size = out_size(size, stride)
        self._blocks = nn.ModuleList(blocks)
        head = round_channels(HEAD_CHANNELS)
        self._conv_head = nn.Conv2d(c_out, head, 1, bias=False)
        self._bn1 = _bn(head)
        self._dropout = nn.Dropout(DROPOUT)
        self._fc = nn.Linear(head, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled head features (B, 1792)."""
        x = F.silu(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.silu(self._bn1(self._conv_head(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self.features(x)))


class SBIDetector(nn.Module):
    """The authors' ``Detector``: the network under ``net`` (their state dict's prefix).

    ``forward`` returns ``{"logits": (B, 2), "fake_prob": (B,) softmax[:, 1], "features":
    (B, 1792)}``.
    """

    def __init__(self, num_classes: int = 2, image_size: int = IMAGE_SIZE) -> None:
        super().__init__()
        self.net = EfficientNetB4(num_classes, image_size)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.net.features(x)
        logits = self.net._fc(self.net._dropout(feats))
        return {"logits": logits, "fake_prob": torch.softmax(logits, dim=1)[:, 1],
                "features": feats}


@register_model
def sbi_efficientnet_b4(num_classes: int = 2, image_size: int = IMAGE_SIZE) -> SBIDetector:
    """SBI's EfficientNet-B4 detector (:class:`SBIDetector`)."""
    return SBIDetector(num_classes, image_size)
