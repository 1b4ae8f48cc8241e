"""The DCL plug-in through the engine on a tiny IDX fixture, and the linear probe."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training.checkpoint import load_checkpoint
from training.config import apply_overrides, default_config_path, load_config
from training.data.fashion_mnist import CLASS_NAMES, write_idx
from training.engine import Trainer
from training.linear_probe import fit_linear_probe
from training.methods import build_method


def _fixture(folder, n_train=64, n_test=20):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        imgs = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):  # a class-dependent bright bar
            imgs[i, 2 * c + 2 : 2 * c + 6, 4:24] = 230
        write_idx(folder / f"{stem}-images-idx3-ubyte", imgs)
        write_idx(folder / f"{stem}-labels-idx1-ubyte", labels)


@pytest.mark.parametrize("loss", ["simclr", "dclw"])
def test_dcl_method_trains_and_checkpoints(tmp_path, loss):
    _fixture(tmp_path / "fm")
    cfg = apply_overrides(load_config(default_config_path("dcl")), [
        f"data.root={tmp_path / 'fm'}", "train.batch_size=16", "train.max_steps=3",
        "train.ckpt_every=0", "model.name=dcl_small_cnn", "model.kwargs={in_chans: 1, width: 8}",
        f"dcl.loss={loss}", "eval.gallery_size=64", "eval.test_size=20", "eval.k=5",
        "run.device=cpu"])
    t = Trainer("dcl", build_method("dcl", cfg), cfg, artifacts=tmp_path / "art", progress=False)
    summary = t.fit()
    assert summary["steps"] == 3
    m = summary["metrics"]
    assert 0.0 <= m["knn_top1"] <= 1.0 and 0.0 <= m["knn_top1_random_init"] <= 1.0
    ck = load_checkpoint(tmp_path / "art/runs/dcl/checkpoint.pt")  # weights_only=True inside
    ex = ck["extra"]
    assert ex["labels"] == list(CLASS_NAMES) and ex["loss"] == loss
    assert ex["embedding_dim"] == 64 and ex["preprocess"]["size"] == [28, 28]
    assert ck["model_spec"] == {"name": "dcl_small_cnn", "kwargs": {"in_chans": 1, "width": 8}}


def test_linear_probe_separable():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 8, generator=g) * 4
    y = torch.arange(300) % 3
    x = centers[y] + torch.randn(300, 8, generator=g)
    res = fit_linear_probe(x[:200], y[:200], x[200:], y[200:], 3, epochs=20, batch_size=64)
    assert res["linear_test_top1"] > 0.95
