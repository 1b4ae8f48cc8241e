"""The qMIL loss (docs/qmil.md, Eqs. (2.4)-(2.6)) on hand-worked values and a loop reference."""
from __future__ import annotations

import math

import pytest
import torch

from training.losses.qmil import QMILLoss, masked_std, qmil_loss


def test_hand_computed_with_masking():
    # bag 0: Y=1, p=0.5, real alpha (1, -2, 3) -> ||alpha||_1 = 6 (the padded 100 is ignored)
    # bag 1: Y=0, p=0.75, real alpha (1, 3)   -> mean 2, population std 1
    logit = torch.tensor([0.0, math.log(3.0)])
    alpha = torch.tensor([[1.0, -2.0, 3.0, 100.0], [1.0, 3.0, 100.0, -100.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    y = torch.tensor([1.0, 0.0])
    bce = (-math.log(0.5) - math.log(0.25)) / 2          # 1.0397207...
    loss, logs = qmil_loss(logit, alpha, mask, y, lam=0.1)
    assert logs["bce"] == pytest.approx(bce, abs=1e-6)
    assert logs["reg"] == pytest.approx((6.0 + 1.0) / 2, abs=1e-6)
    assert float(loss) == pytest.approx(bce + 0.1 * 3.5, abs=1e-6)
    # default lambda = 1e-4
    assert float(QMILLoss()(logit, alpha, mask, y)[0]) == pytest.approx(bce + 1e-4 * 3.5, abs=1e-6)


def _reference(logit, alpha, mask, y, lam):
    total = 0.0
    for b in range(len(y)):
        p = 1 / (1 + math.exp(-float(logit[b])))
        yb = float(y[b])
        real = [float(alpha[b, k]) for k in range(alpha.shape[1]) if mask[b, k]]
        bce = -(yb * math.log(p) + (1 - yb) * math.log(1 - p))
        mean = sum(real) / len(real)
        std = math.sqrt(sum((a - mean) ** 2 for a in real) / len(real))
        reg = yb * sum(abs(a) for a in real) + (1 - yb) * std
        total += bce + lam * reg
    return total / len(y)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    b, k = 6, 9
    logit, alpha = torch.randn(b, generator=g), torch.randn(b, k, generator=g) * 3
    sizes = torch.randint(2, k + 1, (b,), generator=g)
    mask = torch.arange(k)[None] < sizes[:, None]
    y = (torch.rand(b, generator=g) > 0.5).float()
    loss, _ = qmil_loss(logit, alpha, mask, y, lam=0.05)
    assert float(loss) == pytest.approx(_reference(logit, alpha, mask, y, 0.05), rel=1e-5)


def test_padding_gets_no_gradient_and_single_instance_is_finite():
    alpha = torch.tensor([[0.5, 2.0, 7.0], [1.0, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    loss, _ = qmil_loss(torch.zeros(2), alpha, mask, torch.tensor([1.0, 0.0]), lam=1.0)
    loss.backward()
    assert torch.isfinite(alpha.grad).all()
    assert alpha.grad[0, 2] == 0 and (alpha.grad[1, 1:] == 0).all()
    assert float(masked_std(alpha.detach(), mask)[1]) == pytest.approx(0.0, abs=1e-5)
