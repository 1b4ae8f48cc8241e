"""Chapter 5 losses against docs/seqfake.md, Eqs. (5.1)-(5.18), on hand-worked cases and
loop references."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses.seqfake import (cls_loss, is_fake, mil_logits_per_k, mil_loss,
                                     mil_probability, multilabel_bce, predicted_ranks,
                                     rank_loss, rank_weights, reg_loss, sample_ks,
                                     sequence_targets, total_loss)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_targets_thesis_example():
    # L = 5, Y = (4, 2): y = (0,1,0,1,0), r = (5,2,5,1,5) (thesis eqs. 5.1-5.2)
    y, r = sequence_targets(torch.tensor([[4, 2, 0, 0, 0], [0, 0, 0, 0, 0]]), 5)
    assert y.tolist() == [[0, 1, 0, 1, 0], [0, 0, 0, 0, 0]]
    assert r.tolist() == [[5, 2, 5, 1, 5], [5, 5, 5, 5, 5]]
    assert is_fake(torch.tensor([[4, 2, 0, 0, 0], [0, 0, 0, 0, 0]])).tolist() == [1.0, 0.0]


def test_mil_hand_worked():
    # n = 3 (N = 3 tokens), u sorted = (0.2, 0.8, 1.0), a = 1, tau = 0.2
    # k=1: u+ = (1-0.2)/1 = 0.8, u- = (1-1.8)/2 = -0.4 -> logit (1.2)/0.2 = 6
    # k=2: u+ = (1-1.0)/2 = 0.0, u- = (1-1.0)/1 = 0.0 -> logit 0
    u = torch.tensor([[0.2, 0.8, 1.0]])
    ks = torch.tensor([1, 2])
    torch.testing.assert_close(mil_logits_per_k(u, ks), torch.tensor([[6.0, 0.0]]))
    assert mil_probability(u, ks).item() == pytest.approx(_sig(6.0))
    assert mil_loss(u, torch.tensor([1.0]), ks).item() == pytest.approx(-math.log(_sig(6.0)), rel=1e-5)
    assert mil_loss(u, torch.tensor([0.0]), ks).item() == pytest.approx(-math.log(1 - _sig(6.0)), rel=1e-5)
    # l_Reg = |1-0.2| + |1-0.8| + |1-1| = 1.0, added for real images only (eq. 5.12)
    assert reg_loss(u).item() == pytest.approx(1.0)
    assert reg_loss(u, "mean").item() == pytest.approx(1.0 / 3)
    assert cls_loss(u, torch.tensor([0.0]), ks).item() == pytest.approx(-math.log(1 - _sig(6.0)) + 1.0, rel=1e-5)
    assert cls_loss(u, torch.tensor([1.0]), ks).item() == pytest.approx(-math.log(_sig(6.0)), rel=1e-5)


@pytest.mark.parametrize("n", [3, 10, 45])
def test_mil_matches_loop_reference(n):
    g = torch.Generator().manual_seed(n)
    u = torch.sort(torch.rand(4, n, generator=g), dim=1).values
    ks = sample_ks(n, 100, generator=g)
    assert int(ks.min()) >= 1 and int(ks.max()) <= n - 1 and len(ks) == 100
    a, tau = 1.0, 0.2
    got = mil_probability(u, ks, a, tau)
    for b in range(4):
        best = 0.0
        for k in ks.tolist():
            up = (a - sum(u[b, i].item() for i in range(k))) / k
            un = (a - sum(u[b, i].item() for i in range(k, n))) / (n - k)
            best = max(best, math.exp(up / tau) / (math.exp(up / tau) + math.exp(un / tau)))
        assert got[b].item() == pytest.approx(best, rel=1e-5)


def test_sample_ks_rejects_tiny_n():
    with pytest.raises(ValueError):
        sample_ks(1)


def test_multilabel_bce_is_sum_of_bce():
    logits, y = torch.tensor([[0.0, 2.0, -1.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    ref = -math.log(0.5) - math.log(1 - _sig(2.0)) - math.log(1 - _sig(-1.0))
    assert multilabel_bce(logits, y).item() == pytest.approx(ref, rel=1e-6)


def test_rank_weights_thesis_example():
    # Y = (4, 2), P = (0.9, 0.8, 0.1, 0.7, 0.2): o = (1, 2, 5, 3, 4), |Y| = 2
    # i=1 genuine, o=1 <= 2 -> |1-5| = 4; i=2 in Y -> |2-2| = 0; i=3 genuine, o=5 > 2 -> 1
    # i=4 in Y -> |3-1| = 2; i=5 genuine, o=4 > 2 -> 1
    y, r = sequence_targets(torch.tensor([[4, 2, 0, 0, 0]]), 5)
    p = torch.tensor([[0.9, 0.8, 0.1, 0.7, 0.2]], requires_grad=True)
    assert predicted_ranks(p.detach()).tolist() == [[1, 2, 5, 3, 4]]
    w = rank_weights(p, y, r, alpha=1.0)
    assert w.tolist() == [[4.0, 0.0, 1.0, 2.0, 1.0]]
    assert not w.requires_grad
    torch.testing.assert_close(rank_weights(p, y, r, alpha=0.5), 0.5 * w)


def test_rank_weights_genuine_ranked_exactly_at_size():
    """Eq. 5.17 at its boundary: a genuine component with o_i = |Y| is ranked among the
    manipulated (o_i <= |Y|), so it gets alpha * |o_i - L|, not alpha."""
    # L = 5, Y = (4, 2): |Y| = 2, y = (0,1,0,1,0), r = (5,2,5,1,5)
    # P = (0.9, 0.1, 0.8, 0.7, 0.2): sorted 0.9, 0.8, 0.7, 0.2, 0.1 -> o = (1, 5, 2, 3, 4)
    # i=1 genuine, o=1 <= 2 -> |1-5| = 4
    # i=2 in Y, r=2, o=5     -> |5-2| = 3
    # i=3 genuine, o=2 = |Y| -> |2-5| = 3   (the boundary: o > |Y| does not hold)
    # i=4 in Y, r=1, o=3     -> |3-1| = 2
    # i=5 genuine, o=4 > 2   -> 1
    y, r = sequence_targets(torch.tensor([[4, 2, 0, 0, 0]]), 5)
    probs = [0.9, 0.1, 0.8, 0.7, 0.2]
    p = torch.tensor([probs])
    assert predicted_ranks(p).tolist() == [[1, 5, 2, 3, 4]]
    assert rank_weights(p, y, r, alpha=1.0).tolist() == [[4.0, 3.0, 3.0, 2.0, 1.0]]
    assert rank_weights(p, y, r, alpha=0.5).tolist() == [[2.0, 1.5, 1.5, 1.0, 0.5]]
    # L_Rank = sum_i w_i BCE(P_i, y_i) on the fused logits f_i = log(P_i / (1 - P_i))
    want = (4 * -math.log(1 - 0.9) + 3 * -math.log(0.1) + 3 * -math.log(1 - 0.8)
            + 2 * -math.log(0.7) + 1 * -math.log(1 - 0.2))
    logits = torch.tensor([[math.log(q / (1 - q)) for q in probs]], dtype=torch.float64)
    assert rank_loss(logits, y.double(), r, alpha=1.0).item() == pytest.approx(want, rel=1e-6)
    # |Y| = 1, Y = (3,): a genuine component ranked first (o = 1 = |Y|) -> |1 - 5| = 4;
    # component 3 is second (o = 2, r = 1) -> 1; the rest genuine, o > 1 -> 1
    y1, r1 = sequence_targets(torch.tensor([[3, 0, 0, 0, 0]]), 5)
    p1 = torch.tensor([[0.6, 0.3, 0.5, 0.2, 0.1]])
    assert rank_weights(p1, y1, r1).tolist() == [[4.0, 1.0, 1.0, 1.0, 1.0]]


def test_rank_weights_real_image_all_alpha():
    y, r = sequence_targets(torch.zeros(1, 5, dtype=torch.long), 5)
    w = rank_weights(torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.7]]), y, r, alpha=2.0)
    assert w.tolist() == [[2.0] * 5]


def test_rank_loss_matches_loop_and_weights_are_constant():
    torch.manual_seed(0)
    seq = torch.tensor([[4, 2, 0, 0, 0], [1, 3, 5, 2, 4], [0, 0, 0, 0, 0]])
    y, r = sequence_targets(seq, 5)
    logits = torch.randn(3, 5, requires_grad=True)
    got = rank_loss(logits, y, r, alpha=1.0)
    p = torch.sigmoid(logits.detach())
    for b in range(3):
        o = sorted(range(5), key=lambda i: (-p[b, i].item(), i))
        rank = {i: o.index(i) + 1 for i in range(5)}
        size = int(y[b].sum())
        ref = 0.0
        for i in range(5):
            if y[b, i] == 0 and rank[i] > size:
                wi = 1.0
            elif y[b, i] == 0:
                wi = abs(rank[i] - 5)
            else:
                wi = abs(rank[i] - r[b, i].item())
            ref += wi * F.binary_cross_entropy(p[b, i], y[b, i]).item()
        assert got[b].item() == pytest.approx(ref, rel=1e-5)
    # gradient = w * dBCE/dlogit = w * (sigmoid - y): w enters as a constant
    got.sum().backward()
    w = rank_weights(p, y, r)
    torch.testing.assert_close(logits.grad, w * (p - y))


def _fake_out(b: int, num: int, n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    lp, lc = torch.randn(b, num, generator=g), torch.randn(b, num, generator=g)
    return {"logits_patch": lp, "logits_cls": lc, "logits": (lp + lc) / 2,
            "u": torch.sort(torch.rand(b, n, generator=g), 1).values}


def test_total_is_weighted_sum_of_terms():
    seq = torch.tensor([[4, 2, 0, 0, 0], [0, 0, 0, 0, 0]])
    out = _fake_out(2, 5, 6)
    ks = torch.tensor([1, 3, 5])
    total, logs = total_loss(out, seq, ks)
    y, r = sequence_targets(seq, 5)
    ref = (cls_loss(out["u"], is_fake(seq), ks).mean() + multilabel_bce(out["logits_patch"], y).mean()
           + multilabel_bce(out["logits_cls"], y).mean() + rank_loss(out["logits"], y, r).mean())
    assert total.item() == pytest.approx(ref.item(), rel=1e-6)
    assert set(logs) == {"loss_cls", "loss_bce_patch", "loss_bce_cls", "loss_rank"}
    only_bce, logs = total_loss(out, seq, None, {"cls": 0, "bce_cls": 0, "rank": 0})
    assert set(logs) == {"loss_bce_patch"}
    assert only_bce.item() == pytest.approx(multilabel_bce(out["logits_patch"], y).mean().item())
    with pytest.raises(ValueError):
        total_loss(out, seq, None, {"cls": 1})


def test_total_binary_mode_uses_fake_label():
    seq = torch.tensor([[3, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    out = _fake_out(2, 1, 3)
    total, logs = total_loss(out, seq, torch.tensor([1, 2]), {"rank": 0})
    y = torch.tensor([[1.0], [0.0]])
    ref = (cls_loss(out["u"], y[:, 0], torch.tensor([1, 2])).mean()
           + multilabel_bce(out["logits_patch"], y).mean() + multilabel_bce(out["logits_cls"], y).mean())
    assert total.item() == pytest.approx(ref.item(), rel=1e-6)
    assert "loss_rank" not in logs
