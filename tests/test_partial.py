"""Partial fine-tuning on cached trunk maps (training/partial.py): the trunk then the tail is
the whole backbone; qMIL and DCL train the last stages on cached maps and answer as the whole
network does; the plan names what is frozen and what trains; the cached path reports float32;
the colour augmentations of a user's views."""
from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch

from training.partial import split_backbone, trunk_maps


@pytest.fixture(autouse=True)
def _threads():
    """The frozen qMIL path sets one thread: the process's count is restored after."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _mobilenet() -> torch.nn.Module:
    torch.manual_seed(0)
    net = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=0)
    for m in net.modules():  # batch-norm statistics other than the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture(scope="module")
def mobilenet():
    return _mobilenet()


@pytest.mark.parametrize("stages", [0, 2, 7])
def test_the_trunk_then_the_tail_is_the_whole_backbone(stages, mobilenet):
    net = mobilenet
    cut = split_backbone(net, stages)
    x = torch.randn(2, 3, 32, 32)
    net.train()  # trunk_maps runs the trunk in eval mode and gives the modes back
    maps = trunk_maps(cut.trunk, x)
    assert all(m.training for m in net.modules())
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(cut.tail(maps), net(x), atol=1e-5, rtol=1e-5)
    ids = {id(p) for p in cut.tail_params}
    assert ids.isdisjoint(id(p) for p in cut.trunk_params)
    assert len(ids) + len(cut.trunk_params) == len(list(net.parameters()))
    if stages:
        assert all(id(p) in ids for p in net.conv_head.parameters())
    if 0 < stages < len(net.blocks):
        assert not any(id(p) in ids for p in net.blocks[len(net.blocks) - stages - 1].parameters())


def test_the_cut_is_described_and_a_wrong_one_refused(mobilenet):
    net = mobilenet
    assert split_backbone(net, 2).describe() == \
        "frozen stem + stages 0-4 (their maps cached), trained stages 5-6 + head conv"
    assert "trained stage 6 +" in split_backbone(net, 1).describe()
    with pytest.raises(ValueError, match="has 7 stages"):
        split_backbone(net, 8)
    resnet = timm.create_model("resnet18", pretrained=False, num_classes=0)
    with pytest.raises(ValueError, match="no stages to cut"):
        split_backbone(resnet, 2)


# --- qMIL ------------------------------------------------------------------------------
TINY = ["train.batch_size=4", "data.bags_per_query=4", "data.eval_bags_per_query=3",
        "data.size_mean=3", "data.size_std=1", "data.max_size=4", "data.image_size=32",
        "model.feat_dim=16", "model.embed_dim=8", "model.attn_dim=8",
        "model.classifier_hidden=8"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from training.data.shapes import write_shapes_folder

    root = tmp_path_factory.mktemp("partial")
    write_shapes_folder(root, ("circle", "square", "star"), per_class=8, size=32)
    return root


def _qmil(root, *sets):
    from training.config import resolve_config
    from training.methods import build_method

    return build_method("qmil", resolve_config("qmil", None, [f"data.root={root}", *TINY,
                                                               *sets]))


def _started(method, model):
    from training.imagenet import load_imagenet

    load_imagenet(model, str(method.cfg["pretrained"]["module"]))
    return model


@pytest.mark.slow
def test_qmil_trains_the_last_stages_on_cached_maps_and_answers_as_the_whole_network(folder):
    from training.zeroshot import predict_bags

    m = _qmil(folder, "model.train_stages=2", "model.cache_views=2")
    assert m.frozen and m.train_precision("bfloat16") == "float32"
    assert "trained stages 5-6 + head conv, 2 cached views" in m.trained_parts()
    torch.manual_seed(0)
    model = _started(m, m.build_model())
    trunk0 = [p.detach().clone() for p in m.cut(model.encoder.backbone).trunk_params]
    tail0 = [p.detach().clone() for p in m.cut(model.encoder.backbone).tail_params]
    params = m.parameters_to_train(model)
    assert m.train_views().shape[:3] == (2, len(m.split("train").images), 96)  # stride 16
    opt = torch.optim.SGD(params, lr=0.5)
    ds = m.train_dataset()
    batch = m.collate_fn()([ds[i] for i in range(4)])
    model.train()
    loss, _ = m.loss(model, batch, torch.device("cpu"))
    loss.backward()
    opt.step()
    cut = m.cut(model.encoder.backbone)
    assert all(torch.equal(a, b) for a, b in zip(trunk0, cut.trunk_params))
    assert any(not torch.equal(a, b) for a, b in zip(tail0, cut.tail_params))
    bags = m.eval_bags("seen")
    cached = m.predict(model, bags, torch.device("cpu"))
    whole = predict_bags(model, bags, m.split("test").images, m.query_vectors, "cpu",
                         spec=m.spec)
    np.testing.assert_allclose(cached["prob"], whole["prob"], atol=1e-5)
    np.testing.assert_allclose(cached["beta"], whole["beta"], atol=1e-5)


# --- DCL -------------------------------------------------------------------------------
DCL_TINY = ["data.image_size=32", "model.user_data.kwargs.proj_hidden=16",
            "model.user_data.kwargs.proj_dim=8",
            "eval.k=5", "partial.user_data.views=3"]   # a user's folder: stages 5-6 train


def _dcl(root, *sets):
    from training.config import resolve_config
    from training.methods import build_method

    return build_method("dcl", resolve_config("dcl", None, [f"data.root={root}", *DCL_TINY,
                                                             *sets]))


@pytest.mark.slow
def test_dcl_trains_the_last_stages_on_cached_views_and_its_knn_is_the_whole_networks(folder):
    m = _dcl(folder)
    assert m.partial and m.views == 3 and m.train_precision("bfloat16") == "float32"
    assert m.aug.channel_shuffle_p > 0 and m.aug.gray_p > 0  # aug.user_data
    torch.manual_seed(0)
    model = _started(m, m.build_model())
    params = m.parameters_to_train(model)
    cut = m.cut(model.backbone)
    assert {id(p) for p in params}.isdisjoint(id(p) for p in cut.trunk_params)
    maps = m.view_maps()
    assert maps.shape[:2] == (3, len(m._train_data()))
    assert not torch.equal(maps[0], maps[1])  # augmented views
    opt = torch.optim.SGD(params, lr=0.5)
    model.train()
    loss, _ = m.loss(model, [torch.arange(8)], torch.device("cpu"))
    loss.backward()
    opt.step()
    cached = m.knn_top1(model, torch.device("cpu"))
    assert m._eval_maps
    whole = m.knn_top1(model, torch.device("cpu"), cached=False)
    assert cached == pytest.approx(whole)
    from training.metrics.embed import embed_tensor

    d = m._eval_tensors()
    torch.testing.assert_close(m._embed_cached(model, "test_x", torch.device("cpu"), 16),
                               embed_tensor(model, d["test_x"], torch.device("cpu")),
                               atol=1e-5, rtol=1e-4)


def test_dcl_without_a_start_or_stages_trains_the_whole_encoder_on_images(folder):
    assert not _dcl(folder, "pretrained.weights=none").partial
    m = _dcl(folder, "partial.user_data.train_stages=0")
    assert not m.partial and m.trained_parts() is None and m.train_precision("x") == "x"
    with pytest.raises(ValueError, match="partial.views"):
        _dcl(folder, "partial.user_data.views=1")


@pytest.mark.slow
def test_the_plan_names_the_frozen_and_trained_parts_and_the_input(folder, tmp_path, capsys):
    from training.__main__ import main

    args = ["dcl", "--data", str(folder), "--artifacts", str(tmp_path / "art"), "--no-progress"]
    for s in (*DCL_TINY, "budget.epochs=1", "budget.min_steps=1", "budget.batch_size=8",
              "eval.random_init_reference=false"):
        args += ["--set", s]
    assert main(args) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[plan]"))
    assert "frozen stem + stages 0-4" in line and "trained stages 5-6 + head conv" in line
    assert "3 cached views" in line and "input (32, 32)" in line
    summary = json.loads((tmp_path / "art/runs/dcl/summary.json").read_text())
    assert summary["precision"] == "float32" and "trained stages 5-6" in \
        summary["plan"]["trained"]


# --- colour views ----------------------------------------------------------------------
def _aug(**kw):
    from training.data.ssl_aug import AugConfig

    base = dict(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], flip_p=0.0, brightness=0.0,
                contrast=0.0, jitter_p=0.0, channel_shuffle_p=0.0, gray_p=0.0)
    return AugConfig.from_dict({**base, **kw, "user_data": {}})


def test_colour_views_shuffle_channels_or_go_gray_and_draw_nothing_when_off():
    from training.data.ssl_aug import augment

    x = torch.zeros(16, 3, 8, 8)
    x[:, 0] = 0.9  # pure red
    gray = augment(x, _aug(gray_p=1.0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(gray[:, 0], gray[:, 1])
    torch.testing.assert_close(gray[:, 0], torch.full_like(gray[:, 0], 0.299 * 0.9))
    shuffled = augment(x, _aug(channel_shuffle_p=1.0), torch.Generator().manual_seed(0))
    red = shuffled.mean(dim=(2, 3)).argmax(1)
    assert set(red.tolist()) > {0}  # the red moved to other channels in some views
    torch.testing.assert_close(shuffled.sum(1), x.sum(1), atol=1e-5, rtol=0)
    g = torch.Generator().manual_seed(3)
    augment(x, _aug(), g)
    h = torch.Generator().manual_seed(3)
    augment(x[:, :1], _aug(channel_shuffle_p=1.0, gray_p=1.0), h)  # gray input: no colour
    assert torch.equal(g.get_state(), h.get_state())
