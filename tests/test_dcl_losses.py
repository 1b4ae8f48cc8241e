"""NT-Xent, DCL and DCLW against loop-based formulas (docs/dcl.md, Eqs. (3.1)-(3.6)),
lightly, and Proposition 1."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses.dcl import (DCLLoss, DCLWLoss, NTXentLoss, build_loss, contrastive_terms,
                                 negative_von_mises_fisher_weights)


def _loop_loss(out0: torch.Tensor, out1: torch.Tensor, t: float, kind: str,
               sigma: float = 0.5) -> float:
    """docs/dcl.md, Eqs. (3.1)-(3.6), written one anchor at a time with Python floats."""
    z = [F.normalize(out0, dim=1).tolist(), F.normalize(out1, dim=1).tolist()]
    n = len(z[0])
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))
    pos = [dot(z[0][i], z[1][i]) for i in range(n)]
    e = [math.exp(p / sigma) for p in pos]
    w = [2 - ei / (sum(e) / n) for ei in e]
    total = 0.0
    for i in range(n):
        for k in (0, 1):
            u = sum(math.exp(dot(z[k][i], z[l][j]) / t)
                    for j in range(n) if j != i for l in (0, 1))
            if kind == "simclr":
                total += -pos[i] / t + math.log(math.exp(pos[i] / t) + u)
            elif kind == "dcl":
                total += -pos[i] / t + math.log(u)
            else:
                total += -w[i] * pos[i] / t + math.log(u)
    return total / (2 * n)


@pytest.mark.parametrize("kind", ["simclr", "dcl", "dclw"])
@pytest.mark.parametrize("n,d,t", [(2, 3, 0.5), (5, 8, 0.1), (7, 4, 0.07)])
def test_matches_loop_reference(kind, n, d, t):
    g = torch.Generator().manual_seed(n * 100 + d)
    out0, out1 = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(
        n, d, generator=g, dtype=torch.float64)
    loss = build_loss(kind, temperature=t, sigma=0.5)(out0, out1)
    assert loss.item() == pytest.approx(_loop_loss(out0, out1, t, kind), rel=1e-9, abs=1e-9)


def test_hand_worked_two_images():
    """N=2, z orthonormal views: z_1^1=z_1^2=e1, z_2^1=z_2^2=e2, t=1.

    Every anchor: positive <e,e>=1, negatives 2 x <e1,e2>=0 -> U = 2.
    NT-Xent = -1 + log(e + 2); DCL = -1 + log 2.
    """
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    a = torch.stack([e1, e2])
    assert NTXentLoss(1.0)(a, a).item() == pytest.approx(-1 + math.log(math.e + 2), rel=1e-6)
    assert DCLLoss(1.0)(a, a).item() == pytest.approx(-1 + math.log(2), rel=1e-6)
    # all positives equal -> all DCLW weights are 1 -> DCLW == DCL
    assert DCLWLoss(1.0)(a, a).item() == pytest.approx(-1 + math.log(2), rel=1e-6)


@pytest.mark.parametrize("n,d", [(4, 16), (32, 128), (9, 3)])
@pytest.mark.parametrize("t", [0.07, 0.5])
def test_dcl_and_dclw_match_lightly(n, d, t):
    from lightly.loss import DCLLoss as LDCL, DCLWLoss as LDCLW

    g = torch.Generator().manual_seed(n + d)
    out0, out1 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    torch.testing.assert_close(DCLLoss(t)(out0, out1), LDCL(temperature=t)(out0, out1),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(DCLWLoss(t, sigma=0.5)(out0, out1),
                               LDCLW(temperature=t, sigma=0.5)(out0, out1), rtol=1e-5, atol=1e-5)


def test_ntxent_matches_lightly():
    from lightly.loss import NTXentLoss as LNTX

    g = torch.Generator().manual_seed(0)
    out0, out1 = torch.randn(12, 32, generator=g), torch.randn(12, 32, generator=g)
    torch.testing.assert_close(NTXentLoss(0.2)(out0, out1), LNTX(temperature=0.2)(out0, out1),
                               rtol=1e-5, atol=1e-5)


def test_dclw_weights_mean_one_and_tend_to_dcl_for_large_sigma():
    g = torch.Generator().manual_seed(1)
    z1, z2 = F.normalize(torch.randn(10, 6, generator=g), dim=1), F.normalize(
        torch.randn(10, 6, generator=g), dim=1)
    w = negative_von_mises_fisher_weights(z1, z2, 0.5)
    assert w.mean().item() == pytest.approx(1.0, abs=1e-6)
    # the hardest positive (lowest similarity) gets the largest weight
    assert torch.argmax(w) == torch.argmin((z1 * z2).sum(1))
    assert DCLWLoss(0.1, sigma=1e6)(z1, z2).item() == pytest.approx(DCLLoss(0.1)(z1, z2).item(),
                                                                    rel=1e-5)


@pytest.mark.parametrize("n", [4, 32])
def test_npc_multiplier_proposition_1(n):
    """Grad of L_i^(1) w.r.t. z_i^(2): SimCLR = -(q_B/t) z_i^(1) (eqs. 3.3-3.4); DCL = -(1/t) z_i^(1).

    Also on the anchor z_i^(1): SimCLR's gradient is exactly q_B times DCL's.
    """
    t = 0.1
    g = torch.Generator().manual_seed(n)
    z1 = F.normalize(torch.randn(n, 8, generator=g, dtype=torch.float64), dim=1)
    z2 = F.normalize(z1 + 0.3 * torch.randn(n, 8, generator=g, dtype=torch.float64), dim=1)
    i = 1
    grads = {}
    for name, dec in (("simclr", False), ("dcl", True)):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        contrastive_terms(a, b, temperature=t, decoupled=dec)[i].backward()  # L_i^(1)
        grads[name] = (a.grad[i].clone(), b.grad[i].clone())
    # q_B from eq. 3.4
    pos = torch.exp((z1[i] @ z2[i]) / t)
    others = [j for j in range(n) if j != i]
    u = torch.exp(z1[i] @ z1[others].T / t).sum() + torch.exp(z1[i] @ z2[others].T / t).sum()
    q = 1 - pos / (pos + u)
    assert 0 < q.item() < 1
    torch.testing.assert_close(grads["simclr"][1], -(q / t) * z1[i])
    torch.testing.assert_close(grads["dcl"][1], -(1 / t) * z1[i])
    torch.testing.assert_close(grads["simclr"][0], q * grads["dcl"][0])
    # the shrink is real: SimCLR's positive-pair gradient is smaller than DCL's
    assert grads["simclr"][1].norm() < grads["dcl"][1].norm()


def _positive_grads(z1: torch.Tensor, z2: torch.Tensor, t: float, decoupled: bool,
                    anchors: list[int]) -> torch.Tensor:
    """Rows dL_i^(1)/dz_i^(2) of the project's per-anchor loss, for each anchor i given."""
    b = z2.clone().requires_grad_()
    terms = contrastive_terms(z1, b, temperature=t, decoupled=decoupled)
    return torch.stack([torch.autograd.grad(terms[i], b, retain_graph=True)[0][i]
                        for i in anchors])


def test_npc_multiplier_grows_with_batch():
    """q_B read off the project's SimCLR gradients (dL_i^(1)/dz_i^(2) = -(q_B/t) z_i^(1),
    eqs. 3.3-3.4) equals 1 - exp(<z_i^1,z_i^2>/t) / (exp(<z_i^1,z_i^2>/t) + U_i) for every
    anchor, and its mean rises towards 1 as the batch grows (Figure 3.1: SimCLR's positive
    gradient shrinks at small batch); DCL's multiplier is exactly 1 at every batch size."""
    t = 0.1
    g = torch.Generator().manual_seed(0)
    means = []
    for n in (4, 32, 256):
        z1 = F.normalize(torch.randn(n, 16, generator=g, dtype=torch.float64), dim=1)
        z2 = F.normalize(z1 + 0.5 * torch.randn(n, 16, generator=g, dtype=torch.float64), dim=1)
        anchors = list(range(min(n, 32)))
        # independent q_B (eq. 3.4), one anchor at a time
        q_ref = []
        for i in anchors:
            pos = math.exp(float(z1[i] @ z2[i]) / t)
            u = sum(math.exp(float(z1[i] @ z[j]) / t) for j in range(n) if j != i for z in (z1, z2))
            q_ref.append(1 - pos / (pos + u))
        q_ref = torch.tensor(q_ref, dtype=torch.float64)
        simclr = _positive_grads(z1, z2, t, False, anchors)
        dcl = _positive_grads(z1, z2, t, True, anchors)
        torch.testing.assert_close(simclr, -(q_ref[:, None] / t) * z1[anchors])
        torch.testing.assert_close(dcl, -(1 / t) * z1[anchors])
        q_proj = -t * (simclr * z1[anchors]).sum(1)     # |z_i^(1)| = 1
        torch.testing.assert_close(q_proj, q_ref)
        torch.testing.assert_close(-t * (dcl * z1[anchors]).sum(1), torch.ones(len(anchors),
                                                                                dtype=torch.float64))
        means.append(q_proj.mean().item())
    assert 0 < means[0] < means[1] < means[2] < 1
    assert means[0] < 0.9 * means[2]  # the small-batch shrink is large, not a rounding effect


def test_bad_inputs():
    with pytest.raises(ValueError):
        NTXentLoss(0.0)
    with pytest.raises(ValueError):
        DCLWLoss(0.1, sigma=-1)
    with pytest.raises(ValueError):
        build_loss("infonce2")
    with pytest.raises(ValueError):
        DCLLoss()(torch.randn(3, 4), torch.randn(4, 4))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_worker(rank: int, world: int, port: int, out: str) -> None:
    import os

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    res = {}
    for kind in ("simclr", "dcl", "dclw"):
        a, b = x0.clone().requires_grad_(), x1.clone().requires_grad_()
        sl = slice(4 * rank, 4 * rank + 4)
        loss = build_loss(kind, temperature=0.2, gather_distributed=True)(a[sl], b[sl])
        loss.backward()
        stats = torch.cat([loss.detach()[None], a.grad.flatten(), b.grad.flatten()])
        torch.distributed.all_reduce(stats)
        res[kind] = stats / world
    if rank == 0:
        torch.save(res, out)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_gather_distributed_two_processes_equal_global_batch(tmp_path):
    """Two gloo processes with 4 images each == one process with all 8 (loss and grads)."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "res.pt")
    mp.start_processes(_gather_worker, args=(2, _free_port(), out), nprocs=2,
                       start_method="spawn")
    res = torch.load(out, weights_only=True)
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    for kind in ("simclr", "dcl", "dclw"):
        a, b = x0.clone().requires_grad_(), x1.clone().requires_grad_()
        loss = build_loss(kind, temperature=0.2)(a, b)
        loss.backward()
        ref = torch.cat([loss.detach()[None], a.grad.flatten(), b.grad.flatten()])
        torch.testing.assert_close(res[kind], ref, rtol=1e-5, atol=1e-6)
