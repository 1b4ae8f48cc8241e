"""Build the default artifacts when they are missing: train, export, index.

Runs the training and export commands as subprocesses (``python -m training ...``,
``python -m export --all``) so the app itself imports nothing from ``training/``.
Their progress bars go straight to the terminal.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

# run name -> (method, extra overrides)
DEFAULT_RUNS: dict[str, tuple[str, list[str]]] = {
    "seqfake": ("seqfake", []),
    "seqfake_attr": ("seqfake", ["data.task=attributes"]),  # the attributes variant (Seq-FaceAttr)
    "qmil": ("qmil", []),
    "dcl": ("dcl", []),
    "abcnorm": ("abcnorm", []),
    "abcnorm_ce": ("abcnorm", ["loss.name=ce"]),
}
# Tiny budgets for smoke tests of the whole pipeline (not useful models).
SMOKE_OVERRIDES: dict[str, list[str]] = {
    "common": ["train.epochs=1", "train.max_steps=3", "train.log_every=1"],
    "seqfake": ["data.generate.n_train=48", "data.generate.n_val=8", "data.generate.n_test=24",
                "train.batch_size=8"],
    "qmil": ["data.bags_per_query=8", "data.eval_bags_per_query=4", "train.batch_size=8"],
    "dcl": ["data.train_subset=256", "eval.gallery_size=256", "eval.test_size=256",
            "eval.random_init_reference=false", "train.batch_size=32"],
    "abcnorm": ["train.batch_size=32"],
}


def checkpoint_done(artifacts: Path, run: str) -> bool:
    """True when ``runs/<run>/summary.json`` exists (written when training finishes)."""
    return (artifacts / "runs" / run / "summary.json").is_file()


def _run(cmd: list[str], what: str) -> None:
    print(f"[build] {what}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}); see the output above")
    print(f"[build] {what} done in {time.time() - t0:.0f} s", flush=True)


def ensure_artifacts(artifacts: Path, smoke: bool = False, runs: list[str] | None = None) -> None:
    """Train what is missing, then export if any checkpoint is newer than the manifest."""
    runs = runs or list(DEFAULT_RUNS)
    trained = False
    for i, run in enumerate(runs, 1):
        if checkpoint_done(artifacts, run):
            continue
        method, overrides = DEFAULT_RUNS[run]
        over = [f"run.name={run}", *overrides]
        if smoke:
            over += SMOKE_OVERRIDES["common"] + SMOKE_OVERRIDES.get(method, [])
        cmd = [sys.executable, "-m", "training", method, "--artifacts", str(artifacts)]
        for o in over:
            cmd += ["--set", o]
        _run(cmd, f"training {run} ({i}/{len(runs)})")
        trained = True
    manifest = artifacts / "manifest.json"
    newest = max((p.stat().st_mtime for p in (artifacts / "runs").glob("*/checkpoint.pt")),
                 default=0.0)
    if trained or not manifest.is_file() or manifest.stat().st_mtime < newest:
        # export the runs the app serves (other runs in the folder: python -m export --all)
        cmd = [sys.executable, "-m", "export", *runs, "--artifacts", str(artifacts)]
        if smoke:
            cmd += ["--gallery-limit", "1000"]
        _run(cmd, "exporting to ONNX")
