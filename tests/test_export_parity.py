"""ONNX (through the app's engine) vs eager torch on the same inputs, for all four models,
on outputs and on the derived predictions the app shows."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.engine import Engine
from export.pipeline import view_of
from training.checkpoint import load_trained
from runtime.cam import cam_from_features
from runtime.sequence import decode_sequence

pytestmark = pytest.mark.slow
ATOL = 1e-4


def _torch_view(art, entry):
    """(export view, model, output names from the registered contract) of a served model."""
    model, ckpt = load_trained(art / entry["training"]["checkpoint"])
    variant, view = view_of(model, ckpt)
    return view, model, variant.io.outputs


def _images(art, kind="fashion", n=6):
    from PIL import Image

    files = sorted((art / "examples" / kind).glob("*.png"))[:n]
    assert files, f"no {kind} examples"
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def _close(ort_out, torch_out):
    for o, t in zip(ort_out, torch_out):
        assert o.shape == tuple(t.shape)
        np.testing.assert_allclose(o, t.detach().numpy(), atol=ATOL, rtol=0)


def test_manifest_lists_four_models_with_required_fields(smoke_artifacts):
    engine = Engine(smoke_artifacts)
    assert {"seqfake", "qmil", "dcl", "abcnorm"} <= set(engine.names())
    for name in engine.names():
        e = engine.manifest["models"][name]
        for key in ("version", "labels", "preprocess", "inputs", "outputs", "training",
                    "metrics", "sha256", "opset"):
            assert key in e, (name, key)
        assert len(e["sha256"]) == 64 and e["opset"] >= 17


def test_seqfake_parity_and_sequence(smoke_artifacts):
    engine = Engine(smoke_artifacts)
    m = engine.get("seqfake")
    view, _, names = _torch_view(smoke_artifacts, m.entry)
    x = m.prepare(_images(smoke_artifacts, "faces"))
    out = m.run({"image": x})
    with torch.no_grad():
        ref = view.module(torch.from_numpy(x))
    _close([out[k] for k in names], ref)
    for p_o, p_t in zip(out["probs"], ref[0].numpy()):
        for thr in (0.3, 0.5, 0.7):
            assert decode_sequence(p_o, thr) == decode_sequence(p_t, thr)


def test_qmil_parity_with_padding_and_answers(smoke_artifacts):
    from app.services.qmil import query_vector

    engine = Engine(smoke_artifacts)
    m = engine.get("qmil")
    view, _, names = _torch_view(smoke_artifacts, m.entry)
    imgs = m.prepare(_images(smoke_artifacts, "fashion", 8))          # (8, C, H, W)
    bags = np.stack([imgs, imgs[::-1]])                                # (2, 8, C, H, W)
    mask = np.ones((2, 8), np.float32)
    mask[1, 5:] = 0                                                    # padded instances
    q = np.stack([query_vector("sneaker"), query_vector("boot")])      # seen and zero-shot words
    out = m.run({"images": bags, "mask": mask, "query": q})
    with torch.no_grad():
        ref = view.module(*(torch.from_numpy(a) for a in (bags, mask, q)))
    _close([out[k] for k in names], ref)
    assert np.all(out["beta"][1, 5:] == 0)                              # padding gets no attention
    np.testing.assert_allclose(out["beta"].sum(1), 1.0, atol=1e-5)
    assert list(out["prob"] >= 0.5) == list(ref[0].numpy() >= 0.5)


def test_dcl_parity_and_neighbours(smoke_artifacts):
    from runtime.gallery import GalleryIndex

    engine = Engine(smoke_artifacts)
    m = engine.get("dcl")
    view, _, names = _torch_view(smoke_artifacts, m.entry)
    x = m.prepare(_images(smoke_artifacts, "fashion"))
    out = m.run({"image": x})[names[0]]
    with torch.no_grad():
        ref = view.module(torch.from_numpy(x))
    _close([out], [ref])
    gallery = GalleryIndex.load(smoke_artifacts / "gallery")
    s_onnx, i_onnx, _ = gallery.query(out, 5, m.entry["sha256"])
    s_torch, i_torch, _ = gallery.query(ref.numpy(), 5, m.entry["sha256"])
    np.testing.assert_allclose(s_onnx, s_torch, atol=ATOL)
    # same neighbours, except where two gallery items tie within the tolerance (a barely
    # trained smoke encoder maps many images to almost the same point)
    gaps = np.diff(np.concatenate([s_torch, np.full((len(s_torch), 1), -np.inf)], 1), axis=1)
    clear = (np.abs(gaps) > ATOL) & (np.abs(np.diff(np.concatenate(
        [np.full((len(s_torch), 1), np.inf), s_torch], 1), axis=1)) > ATOL)
    np.testing.assert_array_equal(i_onnx[clear], i_torch[clear])
    with pytest.raises(ValueError, match="encoder"):
        gallery.query(out, 5, "0" * 64)                                # another encoder


def test_abcnorm_parity_top1_and_cam_equals_gradcam(smoke_artifacts):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from app.services.classify import head_weights

    engine = Engine(smoke_artifacts)
    m = engine.get("abcnorm")
    view, model, names = _torch_view(smoke_artifacts, m.entry)
    x = m.prepare(_images(smoke_artifacts, "fashion"))
    out = m.run({"image": x})
    with torch.no_grad():
        ref = view.module(torch.from_numpy(x))
    _close([out[k] for k in names], ref)
    np.testing.assert_array_equal(out["logits"].argmax(1), ref[0].argmax(1).numpy())
    weight, _ = head_weights(m)
    xt = torch.from_numpy(x[:2])
    for b in range(2):
        target = int(out["logits"][b].argmax())
        with GradCAM(model=model, target_layers=[model.last_stage()]) as cam:
            g = cam(input_tensor=xt[b : b + 1], targets=[ClassifierOutputTarget(target)])[0]
        mine = cam_from_features(out["features"][b], weight, target, size=g.shape)
        np.testing.assert_allclose(mine, g, atol=1e-3)
