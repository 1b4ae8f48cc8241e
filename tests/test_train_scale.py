"""Real-scale training options of the engine: bf16 autocast, gradient accumulation,
channels_last, DataLoader workers with exact resume, local pretrained weights."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from methods.schema import ConfigError
from models.registry import create_model
from training.checkpoint import load_checkpoint
from training.config import apply_overrides, default_config_path, load_config, resolve_config
from training.engine import Trainer
from training.loader import train_loader
from training.methods import build_method
from training.precision import TrainForward, autocast_dtype
from training.pretrained import PretrainedError, load_pretrained
from training.sampler import ResumableSampler


def _cfg(*over: str) -> dict:
    return apply_overrides(load_config(default_config_path("toy")), list(over))


def _train(tmp, cfg, method=None, **kw):
    t = Trainer("toy", method or build_method("toy", cfg), cfg, artifacts=tmp, progress=False)
    return t.fit(**kw)


def _params(tmp):
    return load_checkpoint(tmp / "runs/toy/checkpoint.pt")["model"]


# --- mixed precision ------------------------------------------------------------------------
def test_bf16_autocast_on_cpu_trains_a_step_with_finite_loss(tmp_path):
    cfg = _cfg("train.amp=bf16", "train.max_steps=1")
    method = build_method("toy", cfg)
    seen: dict[str, torch.dtype] = {}
    build = method.build_model

    def hooked_build():
        model = build()
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        last.register_forward_hook(lambda mod, inp, out: None if "logits" in seen
                                   else seen.update(logits=out.dtype))
        return model

    method.build_model = hooked_build
    losses = []
    loss_fn = method.loss

    def recorded_loss(model, batch, device):
        losses.append(loss_fn(model, batch, device))
        return losses[-1]

    method.loss = recorded_loss
    summary = _train(tmp_path, cfg, method)
    assert summary["steps"] == 1
    assert seen["logits"] == torch.bfloat16          # autocast was on inside the model
    loss = losses[0][0]
    assert loss.dtype == torch.float32 and math.isfinite(float(loss))  # loss in float32
    assert all(v.dtype == torch.float32 for v in _params(tmp_path).values())  # weights fp32


def test_amp_modes_resolve_per_device():
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None       # off by default on the CPU
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="train.amp"):
        autocast_dtype("fp8", cpu)
    for bad in ("half", "off"):  # YAML reads an unquoted off as false: refused, named
        with pytest.raises(ConfigError, match="train.amp"):
            resolve_config("toy", None, [f"train.amp={bad}"])


@pytest.mark.parametrize("native_bf16", [True, False])
def test_amp_native_follows_the_cpu(monkeypatch, native_bf16):
    """``native``: bf16 only on a CPU that computes it natively; fp32 on any other CPU."""
    import training.precision as precision
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: native_bf16)
    cpu = torch.device("cpu")
    assert precision.autocast_dtype("native", cpu) is (torch.bfloat16 if native_bf16 else None)
    assert precision.autocast_dtype("auto", cpu) is None   # auto never changes CPU numbers


def test_amp_native_probe_reads_torch(monkeypatch):
    from training import precision
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert precision.cpu_has_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert precision.cpu_has_bf16() is True


def test_summary_records_the_forward_precision(tmp_path):
    cfg = _cfg("train.amp=bf16", "train.max_steps=1")
    assert _train(tmp_path, cfg)["precision"] == "bfloat16"
    cfg = _cfg("train.amp=fp32", "train.max_steps=1")
    assert _train(tmp_path / "b", cfg)["precision"] == "float32"


# --- gradient accumulation ------------------------------------------------------------------
def test_accumulating_micro_batches_equals_one_big_batch(tmp_path):
    base = ["toy.dropout=0.0", "toy.input_noise=0.0", "train.max_steps=2",
            "train.batch_size=16", "optim.momentum=0.0"]
    _train(tmp_path / "big", _cfg(*base, "train.accum_steps=1"))
    _train(tmp_path / "acc", _cfg(*base, "train.accum_steps=4"))
    big, acc = _params(tmp_path / "big"), _params(tmp_path / "acc")
    init = create_model("toy_regressor", in_dim=8, hidden=16, dropout=0.0).state_dict()
    for k in big:
        assert (big[k] - init[k]).abs().max() > 1e-4  # the steps moved the weights
        torch.testing.assert_close(acc[k], big[k], rtol=0, atol=1e-6)


def test_accumulation_must_divide_the_batch(tmp_path):
    with pytest.raises(ValueError, match="accum_steps"):
        _train(tmp_path, _cfg("train.batch_size=16", "train.accum_steps=3"))


# --- channels_last --------------------------------------------------------------------------
def test_channels_last_forward_matches_and_gets_nhwc_inputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 4, 3, padding=1)).eval()
    x = torch.randn(2, 3, 16, 16)
    ref = net(x)
    seen = []
    net[0].register_forward_pre_hook(lambda m, a: seen.append(
        a[0].is_contiguous(memory_format=torch.channels_last)))
    net = net.to(memory_format=torch.channels_last)
    out = TrainForward(net, net, torch.device("cpu"), None, channels_last=True)(x)
    assert seen == [True]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    bf = TrainForward(net, net, torch.device("cpu"), torch.bfloat16, channels_last=True)(x)
    assert bf.dtype == torch.float32 and (bf - ref).abs().max() < 0.1


# --- workers --------------------------------------------------------------------------------
class _Noisy(Dataset):
    """Items that draw from torch, numpy and random (augmentation-like)."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, i: int) -> torch.Tensor:
        import random

        return torch.tensor([float(i), float(torch.rand(())), float(np.random.rand()),
                             random.random()])


def _batches(workers: int, start_batch: int = 0, epoch: int = 1) -> list[torch.Tensor]:
    sampler = ResumableSampler(24, 4, seed=5)
    sampler.set_epoch(epoch, start_batch)
    loader = train_loader(_Noisy(), sampler, 4, collate_fn=None, num_workers=workers,
                          pin_memory=False, seed=5, epoch=epoch)
    return list(loader)


def test_worker_items_are_the_same_for_any_worker_count_and_after_resume():
    one, two = _batches(1), _batches(2)
    assert len(one) == 6
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    resumed = _batches(2, start_batch=4)
    for a, b in zip(one[4:], resumed):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(one[0][:, 1:], _batches(1, epoch=2)[0][:, 1:])  # new draws per epoch


def test_resume_with_workers_matches_uninterrupted(tmp_path):
    cfg = _cfg("train.num_workers=2", "train.epochs=2")
    full = _train(tmp_path / "a", cfg)
    part = _train(tmp_path / "b", cfg, stop_after_steps=4)
    assert part["interrupted"]
    res = _train(tmp_path / "b", cfg, resume=True)
    assert res["steps"] == full["steps"] == 12
    pa, pb = _params(tmp_path / "a"), _params(tmp_path / "b")
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=0, atol=1e-6)


# --- pretrained weights ---------------------------------------------------------------------
_SLIM = {"backbone": "resnet18", "num_classes": 3, "in_chans": 3, "stem": "imagenet",
         "stem_stride": 1, "backbone_kwargs": {"layers": [1, 1, 1, 1],
                                                "channels": [8, 16, 32, 64]}}


def test_a_timm_checkpoint_loads_into_the_backbone(tmp_path):
    src = create_model("lt_classifier", **_SLIM)
    # a timm training checkpoint: DDP's "module." prefix, a classifier the model lacks
    state = {f"module.{k}": v for k, v in src.backbone.state_dict().items()}
    state["module.fc.weight"], state["module.fc.bias"] = torch.zeros(1000, 64), torch.zeros(1000)
    f = tmp_path / "timm.pth.tar"
    torch.save({"epoch": 3, "arch": "resnet18", "state_dict": state}, f)
    dst = create_model("lt_classifier", **_SLIM)
    report = load_pretrained(dst, f, "backbone")
    assert report.loaded == len(src.backbone.state_dict()) and report.prefix == "module."
    assert report.unused == ["module.fc.weight", "module.fc.bias"]
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(dst.backbone.state_dict()[k], v)


def test_mismatched_or_missing_keys_are_named(tmp_path):
    src = create_model("lt_classifier", **{**_SLIM, "in_chans": 1}).backbone.state_dict()
    f = tmp_path / "gray.pth"
    torch.save(src, f)
    with pytest.raises(PretrainedError, match=r"conv1\.weight: model \(64, 3, 7, 7\), "
                                              r"file \(64, 1, 7, 7\)"):
        load_pretrained(create_model("lt_classifier", **_SLIM), f, "backbone")
    partial = {k: v for k, v in create_model("lt_classifier", **_SLIM).backbone.state_dict().items()
               if not k.startswith("layer4.")}
    torch.save(partial, f)
    with pytest.raises(PretrainedError, match=r"missing from the file: layer4\.0\.conv1\.weight"):
        load_pretrained(create_model("lt_classifier", **_SLIM), f, "backbone")
    with pytest.raises(PretrainedError, match="no submodule 'encoder'"):
        load_pretrained(create_model("lt_classifier", **_SLIM), f, "encoder")


def test_the_engine_starts_from_the_weights_file(tmp_path):
    src = create_model("toy_regressor", in_dim=8, hidden=16, dropout=0.1)
    f = tmp_path / "toy.pth"
    torch.save({"model": src.state_dict()}, f)  # a RepLens-style checkpoint
    _train(tmp_path, _cfg(f"pretrained.weights={f}", "optim.lr=0.0", "train.max_steps=1"))
    for k, v in src.state_dict().items():
        assert torch.equal(_params(tmp_path)[k], v)
    with pytest.raises(ConfigError, match="pretrained.weights"):
        resolve_config("toy", None, [f"pretrained.weights={tmp_path / 'nope.pth'}"])
