"""Export finished runs, update the manifest, build the gallery and the examples."""
from __future__ import annotations

import datetime as dt
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.adapters import view_for
from export.onnx_export import export_module
from models.artifacts import atomic_path
from models.manifest import read_manifest, sha256_file, update_manifest
from models.registry import create_model
from training.checkpoint import load_checkpoint

ONNX_DIR = "onnx"


def load_trained(ckpt_path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a network from a checkpoint (weights_only load) in eval mode."""
    ckpt = load_checkpoint(ckpt_path)
    spec = ckpt["model_spec"]
    model = create_model(spec["name"], **spec.get("kwargs", {}))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def _shape(t: torch.Tensor, axes: dict[int, str]) -> list[int | str]:
    return [axes.get(i, int(s)) for i, s in enumerate(t.shape)]


def export_run(artifacts: Path, run: str) -> dict[str, Any]:
    """Export ``runs/<run>/checkpoint.pt`` and record it in the manifest."""
    ckpt_path = artifacts / "runs" / run / "checkpoint.pt"
    model, ckpt = load_trained(ckpt_path)
    if not ckpt.get("finished"):
        raise RuntimeError(f"{ckpt_path} is not finished; resume training first")
    method, extra = ckpt["method"], dict(ckpt.get("extra", {}))
    view = view_for(method, model, extra)
    onnx_rel = f"{ONNX_DIR}/{run}.onnx"
    t0 = time.time()
    info = export_module(view.module, view.inputs, artifacts / onnx_rel, view.input_names,
                         view.output_names, view.dynamic_axes, view.check_inputs)
    entry: dict[str, Any] = {
        "name": run, "method": method,
        "version": f"{run}-{str(ckpt.get('git_commit', 'unknown'))[:8]}-"
                   f"{dt.datetime.fromtimestamp(ckpt_path.stat().st_mtime):%Y%m%d%H%M}",
        "file": onnx_rel, "sha256": sha256_file(artifacts / onnx_rel),
        "opset": info["opset"], "exporter": info["exporter"],
        "parity_max_abs_diff": info["max_abs_diff"],
        "labels": list(extra.get("labels", [])),
        "preprocess": extra["preprocess"],
        "inputs": [{"name": n, "shape": _shape(t, view.dynamic_axes.get(n, {})),
                    "dtype": "float32"} for n, t in zip(view.input_names, view.inputs)],
        "outputs": view.output_names,
        "training": {"data": ckpt["config"].get("data", {}), "config": ckpt["config"],
                     "checkpoint": str(ckpt_path.relative_to(artifacts)),
                     "git_commit": ckpt.get("git_commit"), "steps": ckpt.get("global_step")},
        "metrics": ckpt.get("metrics", {}),
        "extra": {k: v for k, v in extra.items() if k not in ("preprocess", "labels")},
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    for suffix, arrays in view.sidecars.items():
        side = (artifacts / onnx_rel).with_suffix(suffix)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        with atomic_path(side) as tmp:
            tmp.write_bytes(buf.getvalue())
        entry["head_sha256" if suffix == ".head.npz" else f"{suffix}_sha256"] = sha256_file(side)
    update_manifest(artifacts, run, entry)
    print(f"[export] {run}: {onnx_rel} ({info['exporter']}, opset {info['opset']}, "
          f"parity {info['max_abs_diff']:.1e}) in {time.time() - t0:.1f} s", flush=True)
    return entry


def export_all(artifacts: Path, runs: list[str] | None = None, gallery: bool = True,
               gallery_dir: str | None = None, gallery_limit: int | None = None) -> None:
    """Export the named runs (default: every finished run), then gallery and examples.

    A run that fails (say, a checkpoint of an older architecture) is reported and skipped;
    the rest are exported, and a RuntimeError naming the failed runs is raised at the end.
    """
    run_root = artifacts / "runs"
    if runs is None:
        runs = sorted(p.parent.name for p in run_root.glob("*/summary.json"))
        if not runs:
            raise FileNotFoundError(f"no finished training runs under {run_root}; train first "
                                    f"(python -m training METHOD)")
    failed: dict[str, str] = {}
    for run in runs:
        if run == "toy":
            continue
        try:
            export_run(artifacts, run)
        except Exception as exc:  # one bad run must not stop the others; reported below
            failed[run] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            print(f"[export] {run}: FAILED ({failed[run]})", flush=True)
    manifest = read_manifest(artifacts)
    if gallery and "dcl" in manifest["models"] and (
            "dcl" in runs or gallery_dir or not _gallery_matches(artifacts, manifest)):
        from export.gallery import build_gallery

        build_gallery(artifacts, gallery_dir, limit=gallery_limit)
    from export.examples import write_examples

    write_examples(artifacts)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(runs)} runs failed to export (the others "
                           f"were exported): " + "; ".join(f"{r}: {m}" for r, m in failed.items()))


def _gallery_matches(artifacts: Path, manifest: dict[str, Any]) -> bool:
    """True when the saved gallery was embedded by the DCL encoder in the manifest."""
    import json

    meta = artifacts / "gallery" / "meta.json"
    try:
        return json.loads(meta.read_text()).get("encoder_hash") == manifest["models"]["dcl"]["sha256"]
    except (OSError, ValueError, KeyError):
        return False
