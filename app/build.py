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

from methods import SMOKE_COMMON, get_method, served_runs



def default_runs() -> dict[str, tuple[str, list[str]]]:
    """run name -> (method, overrides): every registered method's default build runs."""
    return {r.run: (d.name, list(r.overrides)) for d, r in served_runs()}


def smoke_overrides(method: str) -> list[str]:
    """Tiny budgets for the smoke build of ``method`` (pipeline checks, not useful models)."""
    return [*SMOKE_COMMON, *get_method(method).smoke]


class BuildError(RuntimeError):
    """A training or export step of the build failed (its output says why)."""

    user_error = True  # runtime.cli: one line, exit 2


def checkpoint_done(artifacts: Path, run: str) -> bool:
    """True when ``runs/<run>/summary.json`` exists (written when training finishes)."""
    return (artifacts / "runs" / run / "summary.json").is_file()


def _run(cmd: list[str], what: str) -> None:
    print(f"[build] {what}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise BuildError(f"{what} failed (exit {proc.returncode}); see the output above")
    print(f"[build] {what} done in {time.time() - t0:.0f} s", flush=True)


def ensure_artifacts(artifacts: Path, smoke: bool = False, runs: list[str] | None = None) -> None:
    """Train what is missing, then export if any checkpoint is newer than the manifest."""
    plan = default_runs()
    runs = runs or list(plan)
    missing = [r for r in runs if not checkpoint_done(artifacts, r)]
    if missing:
        print(f"[build] {artifacts} lacks trained models for: {', '.join(missing)}; training "
              f"them now{' (smoke budgets)' if smoke else ''}. To serve only what exists, run "
              f"`python -m app --no-build`.", flush=True)
    trained = False
    for i, run in enumerate(runs, 1):
        if checkpoint_done(artifacts, run):
            continue
        method, overrides = plan[run]
        over = [f"run.name={run}", *overrides]
        if smoke:
            over += smoke_overrides(method)
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
