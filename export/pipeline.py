"""Export finished runs, update the manifest, then run each method's post-export hooks.

Everything method-specific comes from the registry (:mod:`methods`): the checkpoint's
``method`` names a descriptor, its ``extra`` state names the variant, and the variant gives
the export view and the serving contract (input/output names and dynamic axes).
"""
from __future__ import annotations

import datetime as dt
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.calibration import calibrate_run
from export.commit import commit_entry, discard, entry_files, fresh_name
from export.domain import fit_run, write_sidecars
from export.onnx_export import export_module
from methods import all_methods, get_method, resolve
from runtime.artifacts import atomic_path, hold_run_lock
from runtime.engine import OnnxModel
from runtime.manifest import ManifestError, read_manifest, sha256_file
from training.checkpoint import load_trained
from training.methods import plugin_for_run

ONNX_DIR = "onnx"


class ExportError(RuntimeError):
    """Some runs could not be exported (each is named with its reason)."""

    user_error = True  # runtime.cli: one line, exit 2


def _shape(t: torch.Tensor, axes: dict[int, str]) -> list[int | str]:
    return [axes.get(i, int(s)) for i, s in enumerate(t.shape)]


def view_of(model: torch.nn.Module, ckpt: dict[str, Any]):
    """(variant, export view) of a trained model, from the registry."""
    extra = dict(ckpt.get("extra", {}))
    variant = get_method(ckpt["method"]).variant(extra)
    return variant, resolve(variant.view)(model, extra)


def export_run(artifacts: Path, run: str, int8: bool = True,
               options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export ``runs/<run>/checkpoint.pt`` and make it the manifest's entry ``run``; with
    ``int8`` (and ``enabled`` in ``export/int8.yaml``) also its INT8 version
    (:mod:`export.int8`). With ``options`` (:func:`export_all`'s), the variant's ``assets``
    hook writes the model's assets (the retrieval gallery) with it; None: the model alone.

    Every file is written under a fresh name and the manifest switches to them in one
    rename (:mod:`export.commit`): stopped at any point (Ctrl-C, an error), the previous
    model stays served and what this export wrote is removed. The run's lock
    (:func:`runtime.artifacts.hold_run_lock`) keeps a training or another export of the
    same run out meanwhile.
    """
    artifacts = Path(artifacts)
    run_dir = artifacts / "runs" / run
    lock = hold_run_lock(run_dir) if run_dir.is_dir() else None
    entry: dict[str, Any] = {}
    written: list[str] = []
    try:
        t0 = time.time()
        _stage(artifacts, run, int8, options, entry, written)
        commit_entry(artifacts, run, entry)
    except BaseException:
        discard(artifacts, [*written, *entry_files(entry)])
        raise
    finally:
        if lock is not None:
            lock.close()
    print(f"[export] {run}: {entry['file']} ({entry['method']}/{entry['variant']}, "
          f"{entry['exporter']}, opset {entry['opset']}, parity "
          f"{entry['parity_max_abs_diff']:.1e}) in {time.time() - t0:.1f} s", flush=True)
    return entry


def _stage(artifacts: Path, run: str, int8: bool, options: dict[str, Any] | None,
           entry: dict[str, Any], written: list[str]) -> None:
    """Write every file of the run's export under fresh names (each added to ``written``
    before it is written) and fill ``entry``, the manifest entry that names them; the
    manifest itself is not touched."""
    ckpt_path = artifacts / "runs" / run / "checkpoint.pt"
    ckpt_sha = sha256_file(ckpt_path) if ckpt_path.is_file() else None
    model, ckpt = load_trained(ckpt_path)
    if not ckpt.get("finished"):
        raise RuntimeError(f"{ckpt_path} is not finished; resume training first")
    method, extra = ckpt["method"], dict(ckpt.get("extra", {}))
    variant, view = view_of(model, ckpt)
    contract = variant.io
    onnx_rel = fresh_name(artifacts, f"{ONNX_DIR}/{run}", ".onnx")
    written.append(onnx_rel)
    info = export_module(view.module, view.inputs, artifacts / onnx_rel, contract.inputs,
                         contract.outputs, contract.dynamic_axes, view.check_inputs)
    entry.update({
        "name": run, "method": method, "variant": variant.name, "served": variant.served,
        "version": f"{run}-{str(ckpt.get('git_commit', 'unknown'))[:8]}-"
                   f"{dt.datetime.fromtimestamp(ckpt_path.stat().st_mtime):%Y%m%d%H%M}",
        "file": onnx_rel, "sha256": sha256_file(artifacts / onnx_rel),
        "opset": info["opset"], "exporter": info["exporter"],
        "parity_max_abs_diff": info["max_abs_diff"],
        "labels": list(extra.get("labels", [])),
        "preprocess": extra.get("preprocess"),
        "inputs": [{"name": n, "shape": _shape(t, contract.dynamic_axes.get(n, {})),
                    "dtype": "float32"} for n, t in zip(contract.inputs, view.inputs)],
        "outputs": list(contract.outputs),
        "output_dtypes": {n: contract.output_dtypes.get(n, "float32") for n in contract.outputs},
        "training": {"data": ckpt["config"].get("data", {}), "config": ckpt["config"],
                     "checkpoint": str(ckpt_path.relative_to(artifacts)),
                     "checkpoint_sha256": ckpt_sha,  # what app.build compares for staleness
                     "git_commit": ckpt.get("git_commit"), "steps": ckpt.get("global_step")},
        "metrics": ckpt.get("metrics", {}),
        "learned": ckpt.get("learned"),  # the held-out metric against chance (training.verdict)
        "pretrained": ckpt.get("pretrained"),  # the starting weights, in words
        "extra": {k: v for k, v in extra.items() if k not in ("preprocess", "labels")},
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })
    for suffix, arrays in view.sidecars.items():
        _write_sidecar(artifacts, entry, suffix, arrays, written)
    if variant.evaluate and int8:  # first: the domain check and temperature then fit the
        _add_int8(artifacts, entry, ckpt, method, variant, written)  # served file (fp32 or int8)
    if variant.domain:
        _add_domain_check(artifacts, entry, ckpt, method, variant.domain, written)
    if variant.calibration:
        _add_calibration(artifacts, entry, ckpt, method, variant.calibration,
                         variant.calibration_output)
    if variant.assets and options is not None:
        resolve(variant.assets)(artifacts, entry, dict(options))


def _write_sidecar(artifacts: Path, entry: dict[str, Any], suffix: str,
                   arrays: dict[str, Any], written: list[str]) -> None:
    """Save ``arrays`` beside the entry's ONNX file (``<stem><suffix>``) and record it with
    its sha256 under the entry's ``sidecars``."""
    side = (artifacts / entry["file"]).with_suffix(suffix)
    written.append(str(side.relative_to(artifacts)))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with atomic_path(side) as tmp:
        tmp.write_bytes(buf.getvalue())
    entry.setdefault("sidecars", {})[suffix] = {"file": str(side.relative_to(artifacts)),
                                                "sha256": sha256_file(side)}


def _add_int8(artifacts: Path, entry: dict[str, Any], ckpt: dict[str, Any], method: str,
              variant: Any, written: list[str]) -> None:
    """Quantise the run (:mod:`export.int8`), measure both files and record which one is
    served (``precision``) and why (``int8.reason``); a failure leaves it served in fp32
    with the reason recorded."""
    from export import int8

    cfg = int8.settings()
    if not cfg["enabled"]:
        return
    entry["precision"] = "fp32"
    written.append(str(Path(entry["file"]).with_suffix(int8.SUFFIX)))
    try:
        plugin = plugin_for_run(method, ckpt["config"], artifacts)
        entry.update(int8.quantize_run(artifacts, entry, plugin, variant.headline,
                                       resolve(variant.evaluate), cfg))
    except Exception as exc:  # the fp32 model is fine: serve it, say why there is no int8
        entry["int8"] = {"reason": f"no int8 model ({type(exc).__name__}: {exc})"}
        print(f"[export] {entry['name']}: {entry['int8']['reason']}", flush=True)
        return
    print(f"[export] {entry['name']}: serves {entry['precision']}: {entry['int8']['reason']} "
          f"(in {entry['int8']['seconds']:.1f} s)", flush=True)


def _add_domain_check(artifacts: Path, entry: dict[str, Any], ckpt: dict[str, Any], method: str,
                      names: tuple[str, ...], written: list[str]) -> None:
    """Fit the run's domain check (:mod:`export.domain`) and record it as a sidecar; a run
    whose training images cannot be read is exported without one (said in the log)."""
    t0 = time.time()
    try:
        dm, record, network = fit_run(artifacts, entry, ckpt["config"], names)
    except Exception as exc:  # the model itself is fine: serve it, without the check
        print(f"[export] {entry['name']}: no domain check ({type(exc).__name__}: {exc})",
              flush=True)
        return
    write_sidecars(artifacts, entry, dm, network, written)
    entry["domain"] = record
    print(f"[export] {entry['name']}: domain check on {record['n_fit']} training images, "
          f"{record['dim']}-d features, threshold {record['threshold']:.3g} "
          f"(p{record['percentile']:g} of {record['n_held_out']} {record['threshold_from']}) "
          f"in {time.time() - t0:.1f} s", flush=True)


def _add_calibration(artifacts: Path, entry: dict[str, Any], ckpt: dict[str, Any], method: str,
                     kind: str, output: str) -> None:
    """Fit the run's temperature on its validation images or bags (the plug-in's
    ``calibration_items``, :mod:`export.calibration`); a run without them is exported
    uncalibrated (said in the log)."""
    t0 = time.time()
    try:
        plugin = plugin_for_run(method, ckpt["config"], artifacts)
        val, test = plugin.calibration_items("val"), plugin.calibration_items("test")
        if len(val[0]) < 2 or val[1] is None or len(test[0]) < 2:
            raise ValueError("no labelled validation and test images")
        rec = calibrate_run(OnnxModel(entry["name"], entry, artifacts), kind, val, test,
                            output=output)
    except Exception as exc:  # the model itself is fine: serve it uncalibrated
        print(f"[export] {entry['name']}: not calibrated ({type(exc).__name__}: {exc})",
              flush=True)
        return
    entry["calibration"] = rec
    print(f"[export] {entry['name']}: temperature {rec['temperature']:.3f} on "
          f"{rec['fitted_on']}; test ECE {rec['ece_test_before']:.4f} -> "
          f"{rec['ece_test_after']:.4f} in {time.time() - t0:.1f} s", flush=True)


def export_all(artifacts: Path, runs: list[str] | None = None,
               options: dict[str, Any] | None = None) -> None:
    """Export the named runs (default: every finished run), then the post-export hooks.

    ``options`` are passed to every method's hooks (e.g. ``gallery``, ``gallery_dir``,
    ``gallery_limit`` for the retrieval gallery; ``int8``: False skips the INT8 versions).
    A run that fails (say, a checkpoint of an
    older architecture) is reported and skipped; the rest are exported, and a RuntimeError
    naming the failed runs is raised at the end.
    """
    run_root = artifacts / "runs"
    if runs is None:
        runs = sorted(p.parent.name for p in run_root.glob("*/summary.json"))
        if not runs:
            raise FileNotFoundError(f"no finished training runs under {run_root}; train first "
                                    f"(python -m training METHOD)")
    failed: dict[str, str] = {}
    for run in runs:
        try:
            export_run(artifacts, run, int8=(options or {}).get("int8", True),
                       options=dict(options or {}))
        except Exception as exc:  # one bad run must not stop the others; reported below
            failed[run] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            print(f"[export] {run}: FAILED ({failed[run]})", flush=True)
    try:
        manifest = read_manifest(artifacts)
    except ManifestError:  # nothing exported here yet: no hooks (each failure is said below)
        manifest = None
    exported = [r for r in runs if r not in failed]
    for desc in all_methods() if manifest is not None else ():
        mine = [r for r in exported if manifest["models"].get(r, {}).get("method") == desc.name]
        for hook in desc.post_export:
            resolve(hook)(artifacts, mine, dict(options or {}))
    if failed:
        raise ExportError(f"{len(failed)} of {len(runs)} runs failed to export (the others "
                           f"were exported): " + "; ".join(f"{r}: {m}" for r, m in failed.items()))
