"""DCL encoders, SimCLR augmentations, the kNN classifier and the plug-in end to end."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from runtime.preprocess import FASHION_MNIST, normalize
from models.registry import create_model
from training.data.ssl_aug import AugConfig, augment, two_views, uint8_to_unit
from training.metrics.knn import knn_accuracy, knn_predict, knn_scores


@pytest.mark.parametrize("name,kw,feat", [
    ("dcl_resnet18", {"stem": "cifar"}, 512),
    ("dcl_resnet18", {"stem": "cifar_s2"}, 512),
    ("dcl_resnet18", {"stem": "timm"}, 512),
    ("dcl_small_cnn", {"width": 8}, 64),
])
def test_encoder_outputs(name, kw, feat):
    torch.manual_seed(0)
    m = create_model(name, in_chans=1, **kw).eval()
    x = torch.randn(3, 1, 28, 28)
    out = m(x)
    assert out["features"].shape == (3, feat) and out["projection"].shape == (3, 128)
    e = m.embed(x)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    assert m.feature_dim == feat


def test_cifar_stem_keeps_resolution():
    m = create_model("dcl_resnet18", stem="cifar")
    assert m.backbone.conv1.kernel_size == (3, 3) and m.backbone.conv1.stride == (1, 1)
    assert isinstance(m.backbone.maxpool, torch.nn.Identity)
    assert m.backbone.forward_features(torch.zeros(1, 1, 28, 28)).shape[-1] == 4  # 28/8 -> 4


def test_any_timm_backbone_and_bad_stem():
    m = create_model("dcl_encoder", backbone="resnet10t", stem="timm", in_chans=3)
    assert m(torch.zeros(2, 3, 32, 32))["projection"].shape == (2, 128)
    with pytest.raises(ValueError, match="stem"):
        create_model("dcl_resnet18", stem="huge")
    with pytest.raises(ValueError, match="ResNet-style"):
        create_model("dcl_encoder", backbone="mobilenetv3_small_050", stem="cifar")


# --- augmentations -------------------------------------------------------------------
def test_identity_augmentation_and_flip():
    x = torch.rand(4, 1, 28, 28)
    ident = AugConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, brightness=0.4,
                      contrast=0.4, jitter_p=0.0, channel_shuffle_p=0.0, gray_p=0.0)
    torch.testing.assert_close(augment(x, ident), x, atol=1e-5, rtol=0)
    flip = AugConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=1.0, brightness=0.4,
                     contrast=0.4, jitter_p=0.0, channel_shuffle_p=0.0, gray_p=0.0)
    torch.testing.assert_close(augment(x, flip), x.flip(-1), atol=1e-5, rtol=0)


def test_two_views_differ_are_normalised_and_reproducible():
    imgs = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8))
    from training.config import resolve_config

    cfg = AugConfig.from_dict(resolve_config("dcl")["aug"])
    a1, a2 = two_views(imgs, FASHION_MNIST, cfg, generator=torch.Generator().manual_seed(1))
    b1, b2 = two_views(imgs, FASHION_MNIST, cfg, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a1, b1)
    assert a1.shape == (5, 1, 28, 28) and not torch.allclose(a1, a2)
    lo, hi = normalize(np.zeros((1, 1, 1), np.float32), FASHION_MNIST).item(), normalize(
        np.ones((1, 1, 1), np.float32), FASHION_MNIST).item()
    assert a1.min() >= lo - 1e-5 and a1.max() <= hi + 1e-5
    assert uint8_to_unit(imgs).max() <= 1.0


# --- weighted kNN --------------------------------------------------------------------
def test_knn_hand_worked():
    """Bank: e1 (class 0), e2 (1), (e1+e2)/sqrt2 (1), -e1 (0); query e1; k = 3.

    Neighbours: e1 (sim 1, class 0), diag (0.7071, class 1), e2 (0, class 1).
    T = 1:   class 0 = e^1 = 2.718; class 1 = e^0.7071 + e^0 = 3.028 -> predicts 1.
    T = 0.1: class 0 = e^10 = 22026; class 1 = e^7.071 + 1 = 1177.4 -> predicts 0.
    """
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    q = torch.tensor([[2.0, 0.0]])  # not unit: normalised inside
    s1 = knn_scores(q, bank, labels, 2, k=3, temperature=1.0)[0]
    assert s1[0].item() == pytest.approx(math.e, rel=1e-5)
    assert s1[1].item() == pytest.approx(math.exp(math.sqrt(0.5)) + 1, rel=1e-5)
    assert knn_predict(q, bank, labels, 2, k=3, temperature=1.0).item() == 1
    s2 = knn_scores(q, bank, labels, 2, k=3, temperature=0.1)[0]
    assert s2[0].item() == pytest.approx(math.exp(10), rel=1e-5)
    assert s2[1].item() == pytest.approx(math.exp(10 * math.sqrt(0.5)) + 1, rel=1e-5)
    assert knn_predict(q, bank, labels, 2, k=3, temperature=0.1).item() == 0
    # k larger than the bank is capped; -e1 (sim -1) then votes for class 0 too
    s3 = knn_scores(q, bank, labels, 2, k=200, temperature=1.0)[0]
    assert s3[0].item() == pytest.approx(math.e + math.exp(-1), rel=1e-5)
    assert knn_accuracy(q, torch.tensor([0]), bank, labels, 2, k=3, temperature=0.1) == 1.0


def test_knn_matches_loop_on_random_data():
    g = torch.Generator().manual_seed(0)
    bank, q = torch.randn(50, 6, generator=g), torch.randn(7, 6, generator=g)
    labels = torch.randint(0, 4, (50,), generator=g)
    got = knn_scores(q, bank, labels, 4, k=10, temperature=0.1, chunk=3)
    bn, qn = bank / bank.norm(dim=1, keepdim=True), q / q.norm(dim=1, keepdim=True)
    for i in range(7):
        sims = sorted(((float(qn[i] @ bn[j]), int(labels[j])) for j in range(50)), reverse=True)
        ref = [0.0] * 4
        for s, c in sims[:10]:
            ref[c] += math.exp(s / 0.1)
        torch.testing.assert_close(got[i], torch.tensor(ref), rtol=1e-4, atol=1e-4)
