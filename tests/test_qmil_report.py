"""The qMIL report's --reuse: finished runs with the same config are loaded, not retrained,
give the same numbers, and are named in the report."""
from __future__ import annotations

import json

import pytest

from training.data.fashion_mnist import find_root
from training.experiments.qmil_report import main

pytestmark = pytest.mark.skipif(find_root() is None, reason="Fashion-MNIST not installed")


def test_reuse_loads_finished_runs_and_names_them(tmp_path):
    args = ["--quick", "--seeds", "0", "--ratios", "--skip-ablation",
            "--artifacts", str(tmp_path / "art")]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    first = json.loads((tmp_path / "a" / "qmil.json").read_text())
    assert first["reused"] == []
    assert main(args + ["--out", str(tmp_path / "b"), "--reuse"]) == 0
    second = json.loads((tmp_path / "b" / "qmil.json").read_text())
    assert "qmil_s0" in second["reused"] and len(second["reused"]) == 1 + 7   # qMIL + 7 gated
    assert second["summary"]["qmil"]["bag_acc"] == first["summary"]["qmil"]["bag_acc"]
    assert second["summary"]["gated"]["bag_acc"] == first["summary"]["gated"]["bag_acc"]
    assert "Reused with `--reuse`" in (tmp_path / "b" / "qmil.md").read_text()
    # a changed config is retrained, not reused
    assert main(args + ["--out", str(tmp_path / "c"), "--reuse", "--set", "loss.lam=0.001"]) == 0
    assert json.loads((tmp_path / "c" / "qmil.json").read_text())["reused"] == []
