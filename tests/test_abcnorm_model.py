"""The classifier, the numpy CAM (equals pytorch-grad-cam's GradCAM), overlays, metrics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.cam import cam_from_features, overlay
from runtime.preprocess import FASHION_MNIST
from models.registry import create_model
from training.checkpoint import save_checkpoint
from training.gradcam import explain_checkpoint, gradcam
from training.metrics.longtail import (confusion_matrix, longtail_accuracy,
                                       per_class_accuracy, plot_confusion_matrix,
                                       plot_per_class_accuracy)

TINY = {"backbone": "resnet18", "num_classes": 4, "in_chans": 1, "stem": "cifar",
        "stem_stride": 2, "backbone_kwargs": {"output_stride": 16, "layers": [1, 1, 1, 1],
                                              "channels": [8, 16, 32, 64]}}


def _model(seed: int = 0):
    torch.manual_seed(seed)
    m = create_model("lt_classifier", **TINY).eval()
    # non-trivial BN statistics so that eval differs from a fresh init
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    return m


def test_shapes_and_head():
    m = _model()
    x = torch.randn(3, 1, 28, 28)
    logits, feats = m.forward_with_features(x)
    assert logits.shape == (3, 4) and feats.shape == (3, 64, 4, 4)
    torch.testing.assert_close(m(x), logits)
    assert m.head_weight.shape == (4, 64) and m.head_bias.shape == (4,)
    torch.testing.assert_close(feats.mean((2, 3)) @ m.head_weight.T + m.head_bias, logits)


def test_imagenet_stem_and_bad_stem():
    m = create_model("lt_classifier", backbone="resnet18", num_classes=3, in_chans=3,
                     stem="imagenet", backbone_kwargs={"layers": [1, 1, 1, 1],
                                                       "channels": [8, 16, 32, 64]})
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(ValueError):
        create_model("lt_classifier", backbone="resnet18", stem="other")


@pytest.mark.parametrize("class_idx", [0, 3])
def test_cam_from_features_equals_gradcam(class_idx):
    m = _model(1)
    x = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        feats = m.forward_features(x)[0].numpy()
    ours_small = cam_from_features(feats, m.head_weight.detach().numpy(), class_idx)
    ours = cam_from_features(feats, m.head_weight.detach().numpy(), class_idx, size=(28, 28))
    theirs = gradcam(m, x, class_idx)
    assert ours_small.shape == (4, 4) and ours.shape == theirs.shape == (28, 28)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert ours.max() == pytest.approx(1.0, abs=1e-4) and ours.min() >= 0


def test_cam_by_hand():
    f = np.zeros((2, 2, 2), dtype=np.float32)
    f[0] = [[1, 0], [0, 0]]
    f[1] = [[0, 0], [0, 2]]
    w = np.array([[1.0, -1.0], [0.0, 1.0]], dtype=np.float32)
    # class 0: [[1, 0], [0, -2]] -> relu -> [[1, 0], [0, 0]]
    np.testing.assert_allclose(cam_from_features(f, w, 0), [[1, 0], [0, 0]], atol=1e-6)
    np.testing.assert_allclose(cam_from_features(f, w, 1), [[0, 0], [0, 1]], atol=1e-6)
    with pytest.raises(ValueError):
        cam_from_features(f, w, 2)


def test_overlay_and_gradcam_on_a_checkpoint(tmp_path):
    m = _model(2)
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"model_spec": {"name": "lt_classifier", "kwargs": TINY},
                           "model": m.state_dict(),
                           "extra": {"preprocess": FASHION_MNIST.to_dict(),
                                     "labels": ["a", "b", "c", "d"]}})
    image = (np.arange(28 * 28).reshape(28, 28) % 255).astype(np.uint8)
    exp, labels = explain_checkpoint(path, image)
    assert labels == ["a", "b", "c", "d"] and exp.class_idx == exp.predicted
    assert exp.cam.shape == (28, 28) and exp.overlay.shape == (28, 28, 3)
    assert exp.overlay.dtype == np.uint8
    exp2, _ = explain_checkpoint(path, image, class_idx=(exp.predicted + 1) % 4)
    assert exp2.class_idx != exp2.predicted
    rgb = overlay(np.zeros((10, 12, 3), np.uint8), np.ones((2, 2)), alpha=1.0)
    assert rgb.shape == (10, 12, 3) and (rgb[..., 0] > 100).all()  # jet at 1.0 is red


def test_group_metrics_by_hand():
    groups = ["many", "medium", "few"]
    targets = np.array([0, 0, 1, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 0, 2, 0])
    m = longtail_accuracy(targets, preds, groups)
    assert m["top1"] == pytest.approx(4 / 7)
    assert m["many"] == pytest.approx(1 / 2)
    assert m["medium"] == pytest.approx(2 / 3)
    assert m["few"] == pytest.approx(1 / 2)
    m2 = longtail_accuracy(targets, preds, ["many", "many", "medium"])
    assert np.isnan(m2["few"]) and m2["many"] == pytest.approx(3 / 5)


def test_confusion_matrix_matches_loop():
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    ref = np.zeros((5, 5), int)
    for a, b in zip(t, p):
        ref[a, b] += 1
    cm = confusion_matrix(t, p, 5)
    assert np.array_equal(cm, ref)
    acc = per_class_accuracy(cm)
    for c in range(5):
        assert acc[c] == pytest.approx(np.mean(p[t == c] == c))


def test_plots_are_written(tmp_path):
    plot_per_class_accuracy([100, 10, 1], {"ce": [0.9, 0.5, 0.1], "abc": [0.8, 0.6, 0.3]},
                            ["x", "y", "z"], tmp_path / "a.png", "t")
    plot_confusion_matrix(np.eye(3, dtype=int) * 5, ["x", "y", "z"], tmp_path / "c.png")
    assert (tmp_path / "a.png").stat().st_size > 1000 and (tmp_path / "c.png").stat().st_size > 1000
