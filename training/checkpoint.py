"""Checkpoints: atomic writes, safe loading (``weights_only=True``), RNG capture."""
from __future__ import annotations

import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.artifacts import atomic_path


def git_commit() -> str:
    """The repository's HEAD commit, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def rng_state() -> dict[str, Any]:
    """Capture Python, numpy and torch RNG states in weights-only-loadable types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                  float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` with ``torch.save`` atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or not one of ours."""

    user_error = True  # runtime.cli: a one-line message, exit 2


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: no arbitrary unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, disallowed pickle global
        raise CheckpointError(f"checkpoint {path} is corrupt or unsafe to load: {exc}") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a checkpoint written by this project")
    return ckpt


def load_trained(path: str | Path, map_location: str | torch.device = "cpu"
                 ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the network of a checkpoint (``create_model(model_spec)`` + its weights), in
    eval mode; returns ``(model, checkpoint)``. The one checkpoint-to-model rebuild."""
    from models.registry import create_model

    ckpt = load_checkpoint(path, map_location)
    spec = ckpt["model_spec"]
    model = create_model(spec["name"], **spec.get("kwargs", {}))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt
