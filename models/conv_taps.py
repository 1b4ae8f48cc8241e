"""Convolutions that skip the kernel taps which can only ever see padding.

A 3x3 convolution with padding 1 on a 1x1 feature map (a ResNet's last stage on 28 px
inputs) multiplies eight of its nine taps by zeros: its output is exactly the 1x1
convolution with the centre tap, ``conv2d(x, W[:, :, 1:2, 1:2])``. oneDNN computes all
nine taps, and their weight gradients, which cost DCL's ResNet-18 about a third of each
training step on Fashion-MNIST (measured: ``python -m scripts.bench_conv_taps``).

:class:`TapTrimmedConv2d` is an ``nn.Conv2d`` (same parameters, same state dict, same
initialisation) whose forward takes, for the input's actual height and width, the smallest
centred window of taps that reaches a real input pixel, and pads less by as much. The
output is the same function of the input and the weights (only the order of the float
sums can differ); the gradient of a tap outside the window is zero, as it is for the
full convolution. Inputs on which every tap is reached go through ``nn.Conv2d`` unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _reaches(t: int, size: int, out: int, stride: int, padding: int) -> bool:
    """Whether tap t reaches a real pixel for some output index o: ``0 <= o * stride -
    padding + t < size``, i.e. some multiple of ``stride`` in ``[0, (out - 1) * stride]``
    lies in ``[padding - t, padding - t + size - 1]``."""
    lo, hi = max(0, padding - t), min((out - 1) * stride, padding - t + size - 1)
    return lo <= hi and (hi // stride) * stride >= lo


def dead_border(size: int, kernel: int, stride: int, padding: int) -> int:
    """How many taps at each end of one kernel axis see only padding, for an input of
    ``size`` along that axis (dilation 1), counted symmetrically (the smaller of the two
    ends, at most ``padding``), so that the kernel without them, with ``padding - dead``,
    gives the same output size and values. 0 when no tap reaches a pixel at all."""
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        return 0
    low = 0
    while low < min(padding, kernel) and not _reaches(low, size, out, stride, padding):
        low += 1
    high = 0
    while high < min(padding, kernel) and not _reaches(kernel - 1 - high, size, out, stride,
                                                       padding):
        high += 1
    if low + high >= kernel:  # no tap reaches a pixel
        return 0
    return min(low, high)


class TapTrimmedConv2d(nn.Conv2d):
    """``nn.Conv2d`` that leaves out the taps that only ever see zero padding (see the
    module docstring). (B, C_in, H, W) -> (B, C_out, H_out, W_out), as ``nn.Conv2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.padding_mode != "zeros" or isinstance(self.padding, str)
                or self.dilation != (1, 1)):
            return super().forward(x)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        dh = dead_border(h, self.kernel_size[0], self.stride[0], self.padding[0])
        dw = dead_border(w, self.kernel_size[1], self.stride[1], self.padding[1])
        if dh == 0 and dw == 0:
            return super().forward(x)
        kh, kw = self.kernel_size
        weight = self.weight[:, :, dh:kh - dh, dw:kw - dw]
        return F.conv2d(x, weight, self.bias, self.stride,
                        (self.padding[0] - dh, self.padding[1] - dw), self.dilation, self.groups)


def trim_conv_taps(module: nn.Module, trimmed: bool = True) -> nn.Module:
    """Turn every plain ``nn.Conv2d`` inside ``module`` into a :class:`TapTrimmedConv2d`
    (``trimmed=False``: back), in place; parameters, buffers and state-dict keys are
    unchanged. Returns ``module``."""
    src, dst = (nn.Conv2d, TapTrimmedConv2d) if trimmed else (TapTrimmedConv2d, nn.Conv2d)
    for m in module.modules():
        if type(m) is src:
            m.__class__ = dst
    return module
