"""qMIL and gated-attention MIL networks: eq. 2.2-2.3, masking, permutation invariance."""
from __future__ import annotations

import pytest
import torch

from models.registry import create_model


def _inputs(b=3, k=7, d=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, k, 1, 28, 28, generator=g)
    sizes = torch.tensor([k, 3, 5])[:b]
    mask = torch.arange(k)[None] < sizes[:, None]
    query = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=-1)
    return images, mask, query


@pytest.fixture(scope="module")
def qmil():
    torch.manual_seed(0)
    return create_model("qmil_lenet", word_dim=50).eval()


@pytest.fixture(scope="module")
def gated():
    torch.manual_seed(0)
    return create_model("gated_mil_lenet").eval()


def _run(model, images, mask, query):
    return model(images, mask, query) if query is not None else model(images, mask)


@pytest.mark.parametrize("which", ["qmil", "gated"])
def test_padding_gets_exactly_zero_attention_and_changes_nothing(which, qmil, gated):
    model = qmil if which == "qmil" else gated
    images, mask, query = _inputs()
    q = query if which == "qmil" else None
    out = _run(model, images, mask, q)
    assert set(out) == {"logit", "prob", "alpha", "beta"}
    assert out["beta"].shape == out["alpha"].shape == (3, 7) and out["prob"].shape == (3,)
    assert torch.all(out["beta"][~mask] == 0) and torch.all(out["alpha"][~mask] == 0)
    torch.testing.assert_close(out["beta"].sum(1), torch.ones(3))
    # garbage in padded slots, and extra padding columns, change nothing
    noisy = images.clone()
    noisy[~mask] = 1e3
    out2 = _run(model, noisy, mask, q)
    wide = torch.cat([images, torch.randn(3, 4, 1, 28, 28)], 1)
    wmask = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], 1)
    out3 = _run(model, wide, wmask, q)
    for o in (out2, out3):
        torch.testing.assert_close(o["logit"], out["logit"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(o["beta"][:, :7], out["beta"], rtol=1e-5, atol=1e-6)
    # a float mask (1.0 / 0.0) gives the same result as the bool mask
    out4 = _run(model, images, mask.float(), q)
    torch.testing.assert_close(out4["logit"], out["logit"])
    # training mode encodes only real instances (packed); same numbers
    model.train()
    out5 = _run(model, images, mask, q)
    model.eval()
    torch.testing.assert_close(out5["logit"], out["logit"], rtol=1e-5, atol=1e-5)


def test_attention_follows_eq_2_2_and_2_3(qmil):
    images, mask, query = _inputs()
    out = qmil(images, mask, query)
    x = qmil.encoder(images.flatten(0, 1)).unflatten(0, images.shape[:2])
    psi, phi = qmil.norm_psi(qmil.psi(x)), qmil.norm_phi(qmil.phi(query))
    alpha = qmil.w(torch.tanh(qmil.V(psi * phi[:, None]))).squeeze(-1)
    for b in range(3):
        k = int(mask[b].sum())
        torch.testing.assert_close(out["alpha"][b, :k], alpha[b, :k])
        beta = torch.softmax(alpha[b, :k] / 0.5, 0)
        torch.testing.assert_close(out["beta"][b, :k], beta)
        z = (beta[:, None] * x[b, :k]).sum(0)
        torch.testing.assert_close(out["logit"][b], qmil.classifier(z)[0])
    torch.testing.assert_close(out["prob"], torch.sigmoid(out["logit"]))


def test_permutation_invariant_and_query_dependent(qmil):
    images, mask, query = _inputs()
    perm = torch.tensor([2, 0, 1, 4, 3, 6, 5])
    full = torch.ones_like(mask)
    a = qmil(images, full, query)
    b = qmil(images[:, perm], full, query)
    torch.testing.assert_close(a["logit"], b["logit"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a["beta"][:, perm], b["beta"])
    c = qmil(images, full, query.flip(0))
    assert not torch.allclose(a["alpha"], c["alpha"])


def test_variants_build_and_run():
    images, mask, query = _inputs(b=2, k=3)
    m = create_model("qmil_timm", encoder="resnet18", word_dim=50, feat_dim=64).eval()
    assert m(images, mask[:2, :3], query[:2])["prob"].shape == (2,)
    m = create_model("qmil_lenet", word_dim=50, classifier_query="bilinear", attn_init="torch",
                     embed_norm=False).eval()
    assert m(images, mask[:2, :3], query[:2])["prob"].shape == (2,)
    with pytest.raises(ValueError):
        create_model("qmil_lenet", classifier_query="concat")


def test_scaled_init_makes_attention_vary_inside_a_bag():
    """With PyTorch's default init beta is ~uniform (alpha varies by ~1e-4): no signal."""
    images, mask, query = _inputs()
    full = torch.ones_like(mask)
    torch.manual_seed(1)
    scaled = create_model("qmil_lenet", word_dim=50).eval()
    torch.manual_seed(1)
    plain = create_model("qmil_lenet", word_dim=50, attn_init="torch", embed_norm=False).eval()
    with torch.no_grad():
        s = scaled(images, full, query)["alpha"].std(1).mean()
        p = plain(images, full, query)["alpha"].std(1).mean()
    assert s > 0.05 and p < 0.01
