"""qMIL and gated-attention MIL networks: eq. 2.2-2.3 and Ilse et al.'s gated attention from
the raw parameter tensors, masking, permutation invariance."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from models.registry import create_model
from training.methods.qmil import TRAINING_KEYS

ROOT = Path(__file__).resolve().parents[1]


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


# --- independent references: plain torch on the models' parameter tensors ----------------
def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items()}


def _linear_stack(p: dict[str, torch.Tensor], prefix: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (weight, bias) pairs of the Linear layers stored under ``prefix.<i>.`` in order;
    asserts that nothing else (no other parameter) lives under the prefix."""
    keys = [k for k in p if k.startswith(prefix + ".")]
    idx = sorted({int(k.split(".")[1]) for k in keys})
    assert sorted(keys) == sorted(f"{prefix}.{i}.{n}" for i in idx for n in ("weight", "bias"))
    layers = [(p[f"{prefix}.{i}.weight"], p[f"{prefix}.{i}.bias"]) for i in idx]
    assert all(w.ndim == 2 and b.shape == (w.shape[0],) for w, b in layers)
    return layers


def _mlp_ref(x: torch.Tensor, layers) -> torch.Tensor:
    """x W_1^T + b_1 -> ReLU -> ... -> x W_n^T + b_n (no activation after the last)."""
    for j, (w, b) in enumerate(layers):
        x = x @ w.T + b
        if j < len(layers) - 1:
            x = x.clamp_min(0)
    return x


def _layer_norm_ref(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor, eps: float = 1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * g + b


def _lenet_ref(p: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Ilse et al.'s LeNet: conv 5x5 (20) - ReLU - pool 2 - conv 5x5 (50) - ReLU - pool 2 -
    fc (M) - ReLU. (B, K, 1, 28, 28) -> (B, K, M)."""
    F = torch.nn.functional
    x = images.flatten(0, 1)
    x = F.max_pool2d(F.conv2d(x, p["encoder.features.0.weight"], p["encoder.features.0.bias"]).clamp_min(0), 2)
    x = F.max_pool2d(F.conv2d(x, p["encoder.features.3.weight"], p["encoder.features.3.bias"]).clamp_min(0), 2)
    x = (x.flatten(1) @ p["encoder.fc.1.weight"].T + p["encoder.fc.1.bias"]).clamp_min(0)
    return x.unflatten(0, images.shape[:2])


def _perturbed_double(model):
    """A float64 copy whose 1-d parameters (biases, LayerNorm gains and shifts, the bilinear
    bias) are moved off their init values (zeros / ones), so the references check them too."""
    m = copy.deepcopy(model).double().eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for prm in m.parameters():
            if prm.ndim == 1:
                prm.add_(0.1 * torch.randn(prm.shape, generator=g, dtype=prm.dtype))
    return m


def _config_qmil():
    """qMIL as training/configs/qmil.yaml builds it for its built-in data (classifier_query:
    bilinear; ``user_data`` holds a user's folder's values, ``freeze_backbone`` a training
    choice and ``word_vectors`` the query vectors' package, not network arguments)."""
    cfg = yaml.safe_load((ROOT / "training" / "configs" / "qmil.yaml").read_text())["model"]
    kw = {k: v for k, v in cfg.items()
          if k not in ("name", "user_data", *TRAINING_KEYS)}
    torch.manual_seed(0)
    return create_model(cfg["name"], word_dim=50, **kw).eval(), cfg


@pytest.mark.parametrize("variant", ["config", "thesis_literal"])
def test_attention_follows_eq_2_2_and_2_3(variant, qmil):
    """docs/qmil.md, Eqs. (2.2)-(2.3), from the raw parameter tensors: psi a 3-layer MLP
    (M -> d -> d -> d), phi a 2-layer MLP (D -> d -> d),
    alpha_k = w^T tanh(V (psi(x_k) * phi(q))), beta = softmax(alpha / 0.5) over the real
    instances, z = sum_k beta_k x_k, and the classifier on z: the config's bilinear read-out
    logit = <h(z), phi(q)> + b, or (thesis-literal) h(z). Project choices in the reference
    (docs/qmil.md): ReLU between MLP layers, LayerNorm on psi(x) and phi(q) (embed_norm), h a
    2-layer MLP."""
    if variant == "config":
        base, cfg = _config_qmil()
        assert cfg["classifier_query"] == "bilinear" and cfg["embed_norm"] is True
        assert cfg["temperature"] == 0.5
        d, m_dim, l_dim, hid = cfg["embed_dim"], cfg["feat_dim"], cfg["attn_dim"], cfg["classifier_hidden"]
    else:
        base, d, m_dim, l_dim, hid = qmil, 128, 500, 128, 128
    model = _perturbed_double(base)
    p = _params(model)
    # architecture: layer structure and shapes (thesis: psi 3 layers, phi 2 layers)
    psi_l, phi_l = _linear_stack(p, "psi"), _linear_stack(p, "phi")
    assert [tuple(w.shape) for w, _ in psi_l] == [(d, m_dim), (d, d), (d, d)]
    assert [tuple(w.shape) for w, _ in phi_l] == [(d, 50), (d, d)]
    assert p["V.weight"].shape == (l_dim, d) and p["w.weight"].shape == (1, l_dim)
    bilinear = variant == "config"
    cls_l = _linear_stack(p, "classifier")
    assert [tuple(w.shape) for w, _ in cls_l] == [(hid, m_dim), (d if bilinear else 1, hid)]
    assert ("cls_bias" in p) == bilinear

    images, mask, query = _inputs()
    images, query = images.double(), query.double()
    with torch.no_grad():
        out = model(images, mask, query)
    x = _lenet_ref(p, images)                                                  # (B, K, M)
    psi = _layer_norm_ref(_mlp_ref(x, psi_l), p["norm_psi.weight"], p["norm_psi.bias"])
    phi = _layer_norm_ref(_mlp_ref(query, phi_l), p["norm_phi.weight"], p["norm_phi.bias"])
    for b in range(3):
        k = int(mask[b].sum())
        prod = psi[b, :k] * phi[b]                                             # (k, d)
        alpha = torch.tanh(prod @ p["V.weight"].T + p["V.bias"]) @ p["w.weight"][0] + p["w.bias"][0]
        torch.testing.assert_close(out["alpha"][b, :k], alpha, rtol=1e-9, atol=1e-10)
        e = torch.exp((alpha - alpha.max()) / 0.5)
        beta = e / e.sum()
        torch.testing.assert_close(out["beta"][b, :k], beta, rtol=1e-9, atol=1e-12)
        assert torch.all(out["alpha"][b, k:] == 0) and torch.all(out["beta"][b, k:] == 0)
        z = (beta[:, None] * x[b, :k]).sum(0)                                  # (M,)
        h = _mlp_ref(z, cls_l)
        logit = (h * phi[b]).sum() + p["cls_bias"][0] if bilinear else h[0]
        torch.testing.assert_close(out["logit"][b], logit, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out["prob"], torch.sigmoid(out["logit"]))
    # alpha varies inside a bag (else beta is uniform and the check above is weak)
    assert out["alpha"][0].std() > 1e-2


def test_gated_attention_follows_ilse_et_al(gated):
    """Gated attention (Ilse et al. 2018) from the raw tensors of V, U, w:
    a_k = w^T (tanh(V h_k) * sigmoid(U h_k)), beta = softmax(a) over the real instances,
    z = sum_k beta_k h_k, logit = c^T z + b; M = 500, L = 128."""
    model = _perturbed_double(gated)
    p = _params(model)
    assert p["attention_V.weight"].shape == p["attention_U.weight"].shape == (128, 500)
    assert p["attention_w.weight"].shape == (1, 128) and p["classifier.weight"].shape == (1, 500)
    images, mask, _ = _inputs()
    images = images.double()
    with torch.no_grad():
        out = model(images, mask)
    hs = _lenet_ref(p, images)
    for b in range(3):
        k = int(mask[b].sum())
        h = hs[b, :k]
        gate = (torch.tanh(h @ p["attention_V.weight"].T + p["attention_V.bias"])
                * torch.sigmoid(h @ p["attention_U.weight"].T + p["attention_U.bias"]))
        a = gate @ p["attention_w.weight"][0] + p["attention_w.bias"][0]
        torch.testing.assert_close(out["alpha"][b, :k], a, rtol=1e-9, atol=1e-10)
        e = torch.exp(a - a.max())
        beta = e / e.sum()
        torch.testing.assert_close(out["beta"][b, :k], beta, rtol=1e-9, atol=1e-12)
        assert torch.all(out["alpha"][b, k:] == 0) and torch.all(out["beta"][b, k:] == 0)
        logit = (beta[:, None] * h).sum(0) @ p["classifier.weight"][0] + p["classifier.bias"][0]
        torch.testing.assert_close(out["logit"][b], logit, rtol=1e-9, atol=1e-10)
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
