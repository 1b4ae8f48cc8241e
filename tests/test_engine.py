"""The training engine: checkpoints, exact resume, DDP equivalence, config overrides."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from training.checkpoint import CheckpointError, load_checkpoint
from training.config import apply_overrides, default_config_path, load_config
from training.engine import Trainer
from training.methods import build_method
from training.sampler import ResumableSampler


def _cfg(**over):
    cfg = load_config(default_config_path("toy"))
    return apply_overrides(cfg, [f"{k}={v}" for k, v in over.items()])


def _train(tmp, cfg, **kw):
    t = Trainer("toy", build_method("toy", cfg), cfg, artifacts=tmp, progress=False)
    return t, t.fit(**kw)


def _params(path):
    return load_checkpoint(path)["model"]


def test_overrides_parse_yaml_values():
    cfg = apply_overrides({"a": {"b": 1}}, ["a.b=2.5", "c.d=[1, 2]", "e=true"])
    assert cfg == {"a": {"b": 2.5}, "c": {"d": [1, 2]}, "e": True}
    with pytest.raises(ValueError):
        apply_overrides({}, ["novalue"])


def test_sampler_covers_each_index_once_and_shards_by_rank():
    full = list(ResumableSampler(40, 8, seed=3))
    assert len(full) == 40 and sorted(full) == list(range(40))
    r0 = list(ResumableSampler(40, 8, seed=3, rank=0, world=2))
    r1 = list(ResumableSampler(40, 8, seed=3, rank=1, world=2))
    for g in range(5):  # global batch g = rank0's 4 + rank1's 4, in order
        assert full[8 * g : 8 * g + 8] == r0[4 * g : 4 * g + 4] + r1[4 * g : 4 * g + 4]
    s = ResumableSampler(40, 8, seed=3)
    s.set_epoch(0, start_batch=2)
    assert list(s) == full[16:]
    s.set_epoch(1)
    assert list(s) != full  # a new permutation each epoch


def test_resume_matches_uninterrupted(tmp_path):
    cfg = _cfg()
    _, s_full = _train(tmp_path / "a", cfg)
    # interrupted mid-epoch (step 8 of 6 per epoch -> epoch 1, batch 2), then resumed
    _, s_part = _train(tmp_path / "b", cfg, stop_after_steps=8)
    assert s_part["interrupted"] and s_part["steps"] == 8
    ck = load_checkpoint(tmp_path / "b/runs/toy/checkpoint.pt")
    assert (ck["epoch"], ck["batch"], ck["finished"]) == (1, 2, False)
    _, s_res = _train(tmp_path / "b", cfg, resume=True)
    assert s_res["steps"] == s_full["steps"] == 18
    pa, pb = _params(tmp_path / "a/runs/toy/checkpoint.pt"), _params(tmp_path / "b/runs/toy/checkpoint.pt")
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=0, atol=1e-6)
    assert s_res["metrics"]["mse"] == pytest.approx(s_full["metrics"]["mse"], abs=1e-6)


def test_resume_without_restoring_would_differ(tmp_path):
    """Guard: the equality above is not trivial (a fresh run on other data differs)."""
    cfg = _cfg()
    _train(tmp_path / "a", cfg)
    _train(tmp_path / "c", apply_overrides(cfg, ["run.seed=1"]))
    pa, pc = _params(tmp_path / "a/runs/toy/checkpoint.pt"), _params(tmp_path / "c/runs/toy/checkpoint.pt")
    assert any((pa[k] - pc[k]).abs().max() > 1e-3 for k in pa)


def test_checkpoint_holds_config_commit_and_rejects_garbage(tmp_path):
    cfg = _cfg()
    _train(tmp_path, cfg)
    ck = load_checkpoint(tmp_path / "runs/toy/checkpoint.pt")
    assert ck["config"]["train"]["batch_size"] == 16 and ck["finished"]
    assert isinstance(ck["git_commit"], str) and ck["model_spec"]["name"] == "toy_regressor"
    assert (tmp_path / "runs/toy/metrics.jsonl").read_text().count("\n") > 5
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path):
    """``torchrun --nproc_per_node 2 -m training toy`` (gloo on CPU) == one process."""
    over = ["--set", "toy.dropout=0.0", "--set", "toy.input_noise=0.0", "--set", "run.device=cpu"]
    cfg = _cfg(**{"toy.dropout": 0.0, "toy.input_noise": 0.0, "run.device": "cpu"})
    _train(tmp_path / "single", cfg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "training", "toy", "--artifacts", str(tmp_path / "ddp"), "--no-progress", *over]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"world_size": 2' in proc.stdout
    p1 = _params(tmp_path / "single/runs/toy/checkpoint.pt")
    p2 = _params(tmp_path / "ddp/runs/toy/checkpoint.pt")
    for k in p1:
        torch.testing.assert_close(p1[k], p2[k], rtol=1e-4, atol=1e-5)
