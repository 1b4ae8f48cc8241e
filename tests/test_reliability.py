"""Faults: a training run killed mid-epoch resumes to the same result; the server binds
127.0.0.1 unless exposed, and then asks for credentials when REPLENS_AUTH is set."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch

from training.checkpoint import CheckpointError, load_checkpoint

pytestmark = pytest.mark.slow


def _train_cmd(art, *extra):
    return [sys.executable, "-m", "training", "toy", "--artifacts", str(art), "--no-progress",
            "--set", "train.epochs=4", "--set", "train.ckpt_every=2", *extra]


def test_sigkill_mid_epoch_then_resume_matches(tmp_path):
    ref = subprocess.run(_train_cmd(tmp_path / "ref"), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    art = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(art, "--set", "toy.step_sleep=0.15"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = art / "runs/toy/checkpoint.pt"
    deadline = time.time() + 120
    step = 0
    while time.time() < deadline and step < 9:  # epoch 1 has steps 7..12: kill inside it
        time.sleep(0.05)
        try:
            step = load_checkpoint(ckpt)["global_step"] if ckpt.exists() else 0
        except CheckpointError:
            pytest.fail("a checkpoint on disk was unreadable: the write was not atomic")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = load_checkpoint(ckpt)
    assert not killed["finished"] and 0 < killed["global_step"] < 24
    res = subprocess.run(_train_cmd(art, "--resume"), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "resuming from" in res.stdout
    a = load_checkpoint(tmp_path / "ref/runs/toy/checkpoint.pt")
    b = load_checkpoint(ckpt)
    assert b["finished"] and a["global_step"] == b["global_step"] == 24
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-6)
    assert abs(a["metrics"]["mse"] - b["metrics"]["mse"]) < 1e-6


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_binds_localhost_by_default(smoke_artifacts):
    from app.server import launch

    port = _port()
    demo = launch(smoke_artifacts, port=port, block=False)
    try:
        assert demo.server_name == "127.0.0.1"
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).status == 200
        ip = _local_ip()
        if ip:
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://{ip}:{port}/", timeout=3)
    finally:
        demo.close()


def test_exposed_app_requires_auth(smoke_artifacts, monkeypatch):
    from app.server import launch

    monkeypatch.setenv("REPLENS_AUTH", "analyst:s3cret")
    port = _port()
    demo = launch(smoke_artifacts, port=port, expose=True, block=False)
    try:
        assert demo.server_name == "0.0.0.0"
        from gradio_client import Client

        with pytest.raises(Exception):
            Client(f"http://127.0.0.1:{port}/", verbose=False).predict(api_name="/status")
        c = Client(f"http://127.0.0.1:{port}/", auth=("analyst", "s3cret"), verbose=False)
        from tests.api_schema import validate

        assert "models" in validate("/status", c.predict(api_name="/status"))
    finally:
        demo.close()


def test_bad_auth_variable_is_refused(monkeypatch):
    from app.server import auth_from_env

    monkeypatch.setenv("REPLENS_AUTH", "no-colon")
    with pytest.raises(ValueError, match="user:password"):
        auth_from_env()
