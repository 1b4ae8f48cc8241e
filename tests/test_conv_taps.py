"""Convolutions without the taps that only see padding (models/conv_taps.py): the same
outputs and gradients as the full ``nn.Conv2d`` (computed by torch's own convolution on the
whole kernel), on every kind of small input where taps are left out and where they are not."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn

from models.conv_taps import TapTrimmedConv2d, dead_border, trim_conv_taps


@pytest.mark.parametrize("size,kernel,stride,padding,dead", [
    (1, 3, 1, 1, 1),   # ResNet's last stage at 28 px: only the centre tap sees the pixel
    (2, 3, 1, 1, 0),   # 2x2: every tap reaches a pixel for some output position
    (2, 3, 2, 1, 0),   # stride 2 on 2x2: the low tap sees padding only, the high one does not
    (1, 5, 1, 2, 2),
    (2, 5, 1, 2, 1),
    (1, 7, 2, 3, 3),
    (3, 7, 2, 3, 1),   # out 2: taps 1-5 reach a pixel, taps 0 and 6 never do
    (5, 3, 1, 1, 0),
    (1, 3, 1, 0, 0),   # no padding: nothing to leave out (and no output)
    (1, 3, 2, 3, 1),   # stride 2 over 1 pixel: only tap 1 reaches it (at o = 1)
    (1, 1, 1, 0, 0),
])
def test_dead_border_by_hand(size, kernel, stride, padding, dead):
    assert dead_border(size, kernel, stride, padding) == dead


def _reached(size: int, kernel: int, stride: int, padding: int) -> set[int]:
    """The taps that reach a real pixel for some output position, counted one by one."""
    out = (size + 2 * padding - kernel) // stride + 1
    return {t for t in range(kernel) for o in range(out) if 0 <= o * stride - padding + t < size}


@pytest.mark.parametrize("size,kernel,stride,padding",
                         list(itertools.product([1, 2, 3, 4, 6], [1, 3, 5, 7], [1, 2], [0, 1, 2, 3])))
def test_dead_border_leaves_out_only_taps_no_pixel_reaches(size, kernel, stride, padding):
    if (size + 2 * padding - kernel) // stride + 1 < 1:
        assert dead_border(size, kernel, stride, padding) == 0
        return
    d = dead_border(size, kernel, stride, padding)
    reached = _reached(size, kernel, stride, padding)
    if not reached:  # every output is the bias: nothing is left out
        assert d == 0
        return
    assert d <= padding and all(d <= t < kernel - d for t in reached)
    # as many as can be left out symmetrically
    assert min(min(reached), kernel - 1 - max(reached), padding) == d


@pytest.mark.parametrize("h,w,kernel,stride,padding,bias", [
    (1, 1, 3, 1, 1, False), (1, 1, 3, 2, 1, True), (2, 2, 3, 2, 1, False),
    (1, 3, 3, 1, 1, True), (2, 1, 5, 1, 2, False), (1, 1, 7, 2, 3, True),
    (4, 4, 3, 1, 1, False), (3, 5, 7, 2, 3, False), (1, 1, 3, 2, 3, True),
])
def test_same_outputs_and_gradients_as_the_full_convolution(h, w, kernel, stride, padding, bias):
    torch.manual_seed(0)
    full = nn.Conv2d(4, 6, kernel, stride=stride, padding=padding, bias=bias).double()
    trim = TapTrimmedConv2d(4, 6, kernel, stride=stride, padding=padding, bias=bias).double()
    trim.load_state_dict(full.state_dict())
    x1 = torch.randn(3, 4, h, w, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    y1, y2 = full(x1), trim(x2)
    assert y1.shape == y2.shape
    torch.testing.assert_close(y2, y1, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(trim.weight.grad, full.weight.grad, rtol=1e-12, atol=1e-12)
    if bias:
        torch.testing.assert_close(trim.bias.grad, full.bias.grad, rtol=1e-12, atol=1e-12)


def test_the_dcl_encoder_trims_its_backbone_and_keeps_its_state_dict():
    from models.dcl import ContrastiveEncoder

    torch.manual_seed(0)
    enc = ContrastiveEncoder("resnet18", in_chans=1, stem="timm").eval()
    convs = [m for m in enc.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is TapTrimmedConv2d for m in convs)
    full = trim_conv_taps(ContrastiveEncoder("resnet18", in_chans=1, stem="timm"), False).eval()
    assert not any(type(m) is TapTrimmedConv2d for m in full.modules())
    full.load_state_dict(enc.state_dict())   # same keys and shapes
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(enc(x)["projection"], full(x)["projection"],
                                   rtol=1e-5, atol=1e-5)
