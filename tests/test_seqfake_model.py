"""The Chapter 5 network and the SeqFakeFormer-style baseline: shapes, u, dissim, ONNX."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.registry import create_model
from models.seqfake import (OUTPUT_NAMES, dissimilarity_map, pairwise_similarity,
                            sorted_upper_triangle)
from models.seqfakeformer import teacher_forcing_loss

SMALL = {"dim": 32, "heads": 2, "img_size": 32, "out_indices": [2, 3]}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return create_model("seqfake_resnet18", num_classes=5, **SMALL).eval()


def test_forward_shapes_and_fusion(net):
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = net(x)
    assert list(out) == list(OUTPUT_NAMES)
    n_tok = 4 * 4  # stride 8 at 32 px
    assert out["logits"].shape == out["logits_patch"].shape == out["logits_cls"].shape == (3, 5)
    assert out["u"].shape == (3, n_tok * (n_tok - 1) // 2)
    assert out["dissim"].shape == (3, 4, 4)
    assert out["features"].shape == (3, net.cls_tokens.shape[-1])  # pooled, for the domain check
    torch.testing.assert_close(out["logits"], (out["logits_patch"] + out["logits_cls"]) / 2)
    u = out["u"]
    assert (u[:, 1:] >= u[:, :-1]).all() and u.min() >= 0 and u.max() <= 1 + 1e-6


def test_u_and_dissim_match_loop_reference():
    g = torch.Generator().manual_seed(0)
    tok = torch.randn(2, 5, 8, generator=g)
    s = pairwise_similarity(tok)
    u = sorted_upper_triangle(s)
    t = torch.nn.functional.normalize(tok, dim=-1)
    for b in range(2):
        pairs = sorted(max(0.0, float(t[b, i] @ t[b, j])) for i in range(5) for j in range(i + 1, 5))
        np.testing.assert_allclose(u[b].numpy(), pairs, atol=1e-6)
    d = dissimilarity_map(s, 1, 5)
    for b in range(2):
        for i in range(5):
            ref = 1 - np.mean([max(0.0, float(t[b, i] @ t[b, j])) for j in range(5) if j != i])
            assert d[b, 0, i].item() == pytest.approx(ref, abs=1e-6)


def test_binary_mode_and_backbones_register():
    m = create_model("seqfake_resnet18", num_classes=1, **SMALL).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 32, 32))
    assert out["logits"].shape == (2, 1) and m.cls_tokens.shape[1] == 1
    from models.registry import list_models
    names = list_models()
    for n in ("seqfake_resnet18", "seqfake_resnet34", "seqfake_resnet50", "seqfakeformer_resnet18"):
        assert n in names


def test_gradients_reach_backbone_from_every_term():
    torch.manual_seed(0)
    m = create_model("seqfake_resnet18", num_classes=5, **SMALL)
    for key in ("logits_patch", "logits_cls", "u"):
        m.zero_grad()
        out = m(torch.randn(2, 3, 32, 32))
        out[key].sum().backward()
        grad = m.backbone.conv1.weight.grad
        assert grad is not None and grad.abs().sum() > 0, key


def test_seqfakeformer_teacher_forcing_and_greedy():
    torch.manual_seed(0)
    m = create_model("seqfakeformer_resnet18", num_classes=5, **SMALL)
    x = torch.randn(2, 3, 32, 32)
    seq = torch.tensor([[4, 2, 0, 0, 0], [0, 0, 0, 0, 0]])
    loss = teacher_forcing_loss(m, x, seq)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    m.eval()
    with torch.no_grad():
        out = m(x)
    assert out["sequence"].shape == (2, 5) and out["logits"].shape == (2, 5, 6)
    assert out["sequence"].min() >= 0 and out["sequence"].max() <= 5
    # causal: greedy decoding equals teacher forcing on its own output
    with torch.no_grad():
        sos = torch.full((2, 1), m.sos)
        tf = m(x, torch.cat([sos, out["sequence"][:, :-1]], 1))
    torch.testing.assert_close(tf["logits"], out["logits"], atol=1e-5, rtol=1e-5)


def test_onnx_export_matches_torch(tmp_path, net):
    ort = pytest.importorskip("onnxruntime")

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            o = self.m(x)
            return tuple(o[k] for k in OUTPUT_NAMES)

    w = Wrap(net).eval()
    path = tmp_path / "seqfake.onnx"
    torch.onnx.export(w, (torch.randn(2, 3, 32, 32),), str(path), opset_version=18,
                      dynamo=False, input_names=["input"], output_names=list(OUTPUT_NAMES),
                      dynamic_axes={"input": {0: "batch"}, **{k: {0: "batch"} for k in OUTPUT_NAMES}})
    w.eval()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 3):
        x = torch.randn(b, 3, 32, 32)
        with torch.no_grad():
            ref = w(x)
        got = sess.run(None, {"input": x.numpy()})
        for r, o in zip(ref, got):
            np.testing.assert_allclose(o, r.numpy(), atol=1e-4)
