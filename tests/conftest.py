"""Shared fixtures. ``smoke_artifacts``: the whole pipeline (train -> export -> gallery ->
examples) run once per session by the main command with tiny budgets."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def smoke_artifacts(tmp_path_factory) -> Path:
    reuse = os.environ.get("REPLENS_TEST_ARTIFACTS")  # developers: reuse a smoke build
    if reuse:
        return Path(reuse)
    art = tmp_path_factory.mktemp("artifacts")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "app", "--build-only", "--smoke",
                           "--artifacts", str(art)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout[-4000:] + "\n" + proc.stderr[-4000:])
    (art / "build_seconds.txt").write_text(f"{time.time() - t0:.1f}\n")
    return art


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny models (faster without thread contention)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
