"""ABC-Norm and the baseline losses against hand-computed values (docs/abcnorm.md,
Eqs. (4.2)-(4.11))."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses.abcnorm import ABCNormLoss, abc_norm, adaptive_matrix_diag
from training.losses.longtail_baselines import (CrossEntropyLoss, LDAMLoss, LogitAdjustedLoss,
                                                MaxEntLoss, PairwiseConfusionLoss,
                                                drw_class_weights, entropy, ldam_margins,
                                                pairwise_confusion)

# Two samples, three classes; logits = log p so softmax gives p back exactly.
P = [[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]
LOGITS = torch.tensor(P).log()
TARGETS = torch.tensor([0, 1])  # class 2 is absent from the batch


def test_adaptive_matrix_by_hand():
    # counts 6, 2, 1 -> mean 3 -> r = 2, 2/3, 1/3 -> A = sqrt(r)
    a = adaptive_matrix_diag([6, 2, 1], tau=0.5)
    torch.testing.assert_close(a, torch.tensor([math.sqrt(2), math.sqrt(2 / 3), math.sqrt(1 / 3)]))
    torch.testing.assert_close(adaptive_matrix_diag([5, 5, 5], 0.5), torch.ones(3))
    torch.testing.assert_close(adaptive_matrix_diag([6, 2, 1], 0.0), torch.ones(3))


def test_abcnorm_by_hand_with_a_class_absent_from_the_batch():
    a0, a1, a2 = math.sqrt(2), math.sqrt(2 / 3), math.sqrt(1 / 3)
    row0 = a0 * 0.25 + a1 * 0.09 + a2 * 0.04
    row1 = a0 * 0.01 + a1 * 0.36 + a2 * 0.09  # class 2 still contributes
    reg = (row0 + row1) / 2
    ce = -(math.log(0.5) + math.log(0.6)) / 2
    for lam in (0.1, 0.3, 0.5):
        got = ABCNormLoss([6, 2, 1], lam=lam, tau=0.5)(LOGITS, TARGETS)
        assert got.item() == pytest.approx((1 - lam) * ce + lam * reg, rel=1e-6)
    assert abc_norm(LOGITS.softmax(1), adaptive_matrix_diag([6, 2, 1])).item() == \
        pytest.approx(reg, rel=1e-6)


def _abc_reference(logits, targets, counts, lam, tau):
    """Slow loop version of eq. 4.5/4.7."""
    m, c = logits.shape
    mean_n = sum(counts) / len(counts)
    total_ce, total_reg = 0.0, 0.0
    for i in range(m):
        z = [float(v) for v in logits[i]]
        mx = max(z)
        e = [math.exp(v - mx) for v in z]
        p = [v / sum(e) for v in e]
        total_ce += -math.log(p[int(targets[i])])
        for j in range(c):
            total_reg += (counts[j] / mean_n) ** tau * p[j] ** 2
    return (1 - lam) * total_ce / m + lam * total_reg / m


@pytest.mark.parametrize("m,c", [(1, 2), (7, 5), (16, 10)])
def test_abcnorm_matches_loop_reference(m, c):
    g = torch.Generator().manual_seed(m * 100 + c)
    logits = torch.randn(m, c, generator=g) * 3
    targets = torch.randint(0, c, (m,), generator=g)
    counts = [int(v) for v in torch.randint(1, 500, (c,), generator=g)]
    got = ABCNormLoss(counts, lam=0.3, tau=0.5)(logits, targets).item()
    assert got == pytest.approx(_abc_reference(logits, targets, counts, 0.3, 0.5), rel=1e-5)


def test_abcnorm_penalises_head_confidence_more_than_tail():
    loss = ABCNormLoss([100, 1], lam=1.0)
    head_sure = loss(torch.tensor([[10.0, -10.0]]), torch.tensor([0]))
    tail_sure = loss(torch.tensor([[-10.0, 10.0]]), torch.tensor([1]))
    assert head_sure > tail_sure


def test_abcnorm_rejects_bad_lambda():
    with pytest.raises(ValueError):
        ABCNormLoss([1, 2], lam=1.5)


def test_cross_entropy_by_hand():
    ce = -(math.log(0.5) + math.log(0.6)) / 2
    assert CrossEntropyLoss()(LOGITS, TARGETS).item() == pytest.approx(ce, rel=1e-6)


def test_pairwise_confusion_by_hand():
    # 4 samples: pairs (0, 2) and (1, 3)
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]])
    d02 = math.sqrt(0.3 ** 2 + 0.1 ** 2 + 0.4 ** 2)
    d13 = math.sqrt(0.2 ** 2 + 0.2 ** 2 + 0.0 ** 2)
    y = torch.tensor([0, 1, 2, 1])  # pair (1, 3) is same-class
    assert pairwise_confusion(p, y, "different").item() == pytest.approx(d02 / 2, rel=1e-5)
    assert pairwise_confusion(p, y, "same").item() == pytest.approx(d13 / 2, rel=1e-5)
    assert pairwise_confusion(p, y, "all").item() == pytest.approx((d02 + d13) / 2, rel=1e-5)
    # odd batch: the last sample is left out
    p5 = torch.cat([p, torch.tensor([[1.0, 0.0, 0.0]])])
    assert pairwise_confusion(p5, torch.cat([y, torch.tensor([0])]), "all").item() == \
        pytest.approx((d02 + d13) / 2, rel=1e-5)
    logits = p.log()
    ce = F.cross_entropy(logits, y).item()
    got = PairwiseConfusionLoss(lam=0.3)(logits, y).item()
    assert got == pytest.approx(0.7 * ce + 0.3 * d02 / 2, rel=1e-5)


def test_maxent_by_hand():
    h0 = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    h1 = -(0.1 * math.log(0.1) + 0.6 * math.log(0.6) + 0.3 * math.log(0.3))
    ce = -(math.log(0.5) + math.log(0.6)) / 2
    assert entropy(LOGITS.softmax(1)).item() == pytest.approx((h0 + h1) / 2, rel=1e-6)
    got = MaxEntLoss(gamma=0.3)(LOGITS, TARGETS).item()
    assert got == pytest.approx(ce - 0.3 * (h0 + h1) / 2, rel=1e-6)
    # a uniform prediction has the maximum entropy log C
    assert entropy(torch.full((1, 4), 0.25)).item() == pytest.approx(math.log(4), rel=1e-6)


def test_logit_adjustment_by_hand():
    # counts 3, 1 -> prior 0.75, 0.25; zero logits -> adjusted logits = log prior
    la = LogitAdjustedLoss([3, 1], tau=1.0)
    got = la(torch.zeros(2, 2), torch.tensor([0, 1])).item()
    assert got == pytest.approx(-(math.log(0.75) + math.log(0.25)) / 2, rel=1e-6)
    # That balanced batch cannot tell +tau log(prior) from -tau log(prior) (both give the
    # same mean). One tail-class sample with zero logits can: prior = (3/4, 1/4),
    # adjusted logits (log 3/4, log 1/4) -> softmax (3/4, 1/4) -> CE = -log(1/4) = 1.386;
    # the flipped sign gives logits (log 4/3, log 4) -> softmax (1/4, 3/4) -> -log(3/4) = 0.288.
    tail = la(torch.zeros(1, 2), torch.tensor([1])).item()
    assert tail == pytest.approx(math.log(4), rel=1e-6)
    assert tail == pytest.approx(1.386294, abs=1e-6)
    head = la(torch.zeros(1, 2), torch.tensor([0])).item()
    assert head == pytest.approx(-math.log(0.75), rel=1e-6)   # 0.288
    # tau scales the adjustment: tau = 2, logits (2 log 3/4, 2 log 1/4) -> p = (9/10, 1/10)
    la2 = LogitAdjustedLoss([3, 1], tau=2.0)
    assert la2(torch.zeros(1, 2), torch.tensor([1])).item() == pytest.approx(math.log(10), rel=1e-6)
    # non-zero logits: z = (1, 0) for a tail sample, three classes, counts (6, 3, 1)
    # prior (0.6, 0.3, 0.1) -> adjusted (1 + log 0.6, log 0.3, log 0.1)
    la3 = LogitAdjustedLoss([6, 3, 1], tau=1.0)
    e = [math.e * 0.6, 0.3, 0.1]
    want = -math.log(e[2] / sum(e))
    got3 = la3(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([2])).item()
    assert got3 == pytest.approx(want, rel=1e-6)
    # tau = 0 is plain CE
    z = torch.tensor([[1.0, 2.0]])
    assert LogitAdjustedLoss([3, 1], tau=0.0)(z, torch.tensor([0])).item() == \
        pytest.approx(F.cross_entropy(z, torch.tensor([0])).item(), rel=1e-6)


def test_ldam_margins_and_loss_by_hand():
    # N^-1/4: 16 -> 0.5, 1 -> 1 ; max margin 0.5 -> margins 0.25, 0.5
    torch.testing.assert_close(ldam_margins([16, 1], 0.5), torch.tensor([0.25, 0.5]))
    loss = LDAMLoss([16, 1], max_margin=0.5, s=1.0)
    # logits [0, 0], target 1 -> adjusted [0, -0.5]
    want = -math.log(math.exp(-0.5) / (1 + math.exp(-0.5)))
    assert loss(torch.zeros(1, 2), torch.tensor([1])).item() == pytest.approx(want, rel=1e-6)
    # s scales the adjusted logits
    loss2 = LDAMLoss([16, 1], max_margin=0.5, s=2.0)
    want2 = -math.log(math.exp(-1.0) / (1 + math.exp(-1.0)))
    assert loss2(torch.zeros(1, 2), torch.tensor([1])).item() == pytest.approx(want2, rel=1e-6)


def test_drw_weights_and_weighted_ldam():
    beta = 0.9
    raw = [(1 - beta) / (1 - beta ** 2), (1 - beta) / (1 - beta ** 1)]
    want = [r * 2 / sum(raw) for r in raw]
    w = drw_class_weights([2, 1], beta=beta)
    torch.testing.assert_close(w, torch.tensor(want))
    assert w.sum().item() == pytest.approx(2.0)
    loss = LDAMLoss([2, 1], max_margin=0.0)  # no margin: weighted CE
    loss.set_class_weights(w)
    z, y = torch.tensor([[1.0, 0.0], [0.5, 0.2]]), torch.tensor([0, 1])
    l0 = F.cross_entropy(z[:1], y[:1]).item()
    l1 = F.cross_entropy(z[1:], y[1:]).item()
    assert loss(z, y).item() == pytest.approx((want[0] * l0 + want[1] * l1) / sum(want), rel=1e-5)
    loss.set_class_weights(None)
    assert loss(z, y).item() == pytest.approx((l0 + l1) / 2, rel=1e-5)


@pytest.mark.parametrize("make", [
    lambda c: ABCNormLoss(c), lambda c: CrossEntropyLoss(), lambda c: PairwiseConfusionLoss(),
    lambda c: MaxEntLoss(), lambda c: LogitAdjustedLoss(c), lambda c: LDAMLoss(c)])
def test_every_loss_gives_finite_gradients(make):
    counts = [50, 20, 5, 1]
    logits = torch.randn(8, 4, requires_grad=True)
    loss = make(counts)(logits, torch.randint(0, 4, (8,)))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(logits.grad).all()
