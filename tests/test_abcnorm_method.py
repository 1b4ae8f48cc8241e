"""The ABC-Norm plug-in end to end: `python -m training abcnorm --data DIR`, cRT, LDAM-DRW,
and the checkpoint contents serving needs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from training.__main__ import main
from training.checkpoint import load_checkpoint
from training.config import apply_overrides, default_config_path, load_config
from training.data.fashion_mnist import find_root
from training.losses.longtail_baselines import LDAMLoss
from training.methods import build_method

TINY = ["model.backbone_kwargs={output_stride: 16, layers: [1, 1, 1, 1], channels: [8, 16, 32, 64]}"]
TINY_REAL = ["model.real_data={backbone: resnet18, stem: cifar, stem_stride: 2, "
             "backbone_kwargs: {layers: [1, 1, 1, 1], channels: [8, 16, 32, 64]}}",
             "data.size=[32, 32]"]


@pytest.fixture()
def tree(tmp_path):
    """ImageFolder tree with a long-tailed training split and a class-count file."""
    rng = np.random.default_rng(0)
    counts = {"ant": 12, "bee": 6, "cow": 2}
    for split, per in (("train", counts), ("val", {"ant": 2, "bee": 2, "cow": 2})):
        for k, (cls, n) in enumerate(per.items()):
            for i in range(n):
                arr = (rng.random((40, 36, 3)) * 60 + 60 * k).astype(np.uint8)
                p = tmp_path / "data" / split / cls / f"{i}.jpg"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(p)
    (tmp_path / "data" / "class_counts.json").write_text('{"ant": 1200, "bee": 60, "cow": 6}')
    return tmp_path


def _sets(*items):
    out = []
    for it in items:
        out += ["--set", it]
    return out


def test_trains_on_an_image_folder_tree(tree):
    art = tree / "art"
    rc = main(["abcnorm", "--data", str(tree / "data"), "--artifacts", str(art), "--no-progress",
               *_sets(*TINY_REAL, "train.batch_size=4", "train.epochs=1", "train.max_steps=2",
                      "data.many_above=100", "data.few_below=20", "loss.lam=0.5")])
    assert rc == 0
    ck = load_checkpoint(art / "runs/abcnorm/checkpoint.pt")  # weights_only=True inside
    ex = ck["extra"]
    assert ex["labels"] == ["ant", "bee", "cow"]
    assert ex["class_counts"] == [1200, 60, 6] and ex["class_counts_source"] == "class_counts.json"
    assert ex["groups"] == ["many", "medium", "few"]
    assert ex["group_thresholds"] == {"many_above": 100, "few_below": 20}
    assert ex["loss"] == "abcnorm" and ex["preprocess"]["size"] == [32, 32]
    assert ex["preprocess"]["channels"] == 3
    assert set(ck["metrics"]) == {"top1", "many", "medium", "few"}
    assert ck["model_spec"]["name"] == "lt_classifier" and ck["global_step"] == 2
    assert ck["model_spec"]["kwargs"]["num_classes"] == 3


def test_crt_retrains_only_the_head_with_balanced_sampling(tree):
    art = tree / "art"
    base = [*TINY_REAL, "train.batch_size=4", "train.epochs=1", "train.max_steps=2",
            "loss.name=ce"]
    assert main(["abcnorm", "--data", str(tree / "data"), "--artifacts", str(art),
                 "--no-progress", *_sets(*base)]) == 0
    stage1 = art / "runs/abcnorm/checkpoint.pt"
    assert main(["abcnorm", "--data", str(tree / "data"), "--artifacts", str(art),
                 "--no-progress", *_sets(*base, "run.name=crt", "stage.name=crt",
                                         f"stage.init_checkpoint={stage1}",
                                         "optim.weight_decay=0")]) == 0
    a = load_checkpoint(stage1)["model"]
    b = load_checkpoint(art / "runs/crt/checkpoint.pt")["model"]
    for k in a:
        if k.startswith("backbone."):
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)  # BN stats too
    assert not torch.equal(a["head.weight"], b["head.weight"])
    cfg = load_config(default_config_path("abcnorm"))
    cfg = apply_overrides(cfg, [f"data.root={tree / 'data'}", *TINY_REAL, "stage.name=crt",
                                f"stage.init_checkpoint={stage1}", "stage.samples_per_epoch=3000"])
    ds = build_method("abcnorm", cfg).train_dataset()
    labels = np.array([ds[i][1] for i in range(len(ds))])
    assert np.allclose(np.bincount(labels) / len(labels), 1 / 3, atol=0.04)


def test_crt_needs_a_checkpoint(tree):
    cfg = apply_overrides(load_config(default_config_path("abcnorm")),
                          [f"data.root={tree / 'data'}", *TINY_REAL, "stage.name=crt"])
    with pytest.raises(ValueError, match="init_checkpoint"):
        build_method("abcnorm", cfg).build_model()


def test_ldam_drw_schedule_and_unknown_loss(tree):
    cfg = apply_overrides(load_config(default_config_path("abcnorm")),
                          [f"data.root={tree / 'data'}", *TINY_REAL, "loss.name=ldam",
                           "loss.drw_start_epoch=2"])
    m = build_method("abcnorm", cfg)
    assert isinstance(m.criterion, LDAMLoss)
    m.on_epoch_start(None, 1)
    assert torch.equal(m.criterion.class_weights, torch.ones(3))
    m.on_epoch_start(None, 2)
    w = m.criterion.class_weights
    assert w[2] > w[1] > w[0] and w.sum().item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="loss.name must be one of .*, got .focal."):
        build_method("abcnorm", apply_overrides(cfg, ["loss.name=focal"]))


@pytest.mark.skipif(find_root() is None, reason="Fashion-MNIST IDX files not installed")
def test_default_fashion_mnist_lt_config_runs(tmp_path):
    cfg = apply_overrides(load_config(default_config_path("abcnorm")),
                          [*TINY, "data.class_order=permutation", "data.eval_limit=300"])
    m = build_method("abcnorm", cfg)
    assert sorted(m.class_counts, reverse=True)[0] == 6000 and min(m.class_counts) == 60
    assert m.groups.count("many") == 4 and m.groups.count("few") == 3
    assert m.extra_state()["longtail_split"]["order"] != list(range(10))
    model = m.build_model()
    batch = torch.utils.data.default_collate([m.train_dataset()[i] for i in range(8)])
    loss, logs = m.loss(model, batch, torch.device("cpu"))
    loss.backward()
    assert torch.isfinite(loss) and 0 <= logs["train_acc"] <= 1
    metrics = m.evaluate(model.eval(), torch.device("cpu"))
    assert set(metrics) == {"top1", "many", "medium", "few"}
