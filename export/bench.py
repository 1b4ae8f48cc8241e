"""``python -m export.bench``: eager torch, onnxruntime fp32 and onnxruntime int8, one run.

For each exported model (and a user-sized ResNet-50 at 224 px): batch 1 and batch 32 (for
qMIL: 32 bags of 10 instances), the three runtimes timed in turn in blocks on the same
inputs, each block after warm-up (median wall time, :func:`export.int8.median_ms`), so a load
change on a shared machine hits all three alike. The exported models' int8 files are those of ``python -m export`` (static QDQ,
:mod:`export.int8`); the table also gives what the manifest serves and why (the export's
own batch-1 measurement and the headline test metric of both files).

The ResNet-50 (timm, *random init*: no weights are downloaded; speed does not depend on
the weights, accuracy is not measured) stands for a model a user trains on their own
photos; it is exported and quantised here the same way, calibrated on Fashion-MNIST
training images resized to 224 px RGB with ImageNet normalisation; its int8 outputs are
compared with fp32 (top-1 agreement) as a sanity check only.

Writes ``reports/bench.json`` and ``reports/bench.md`` with the command, the machine and
its load average.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from export.int8 import median_ms
from export.pipeline import view_of
from runtime.artifacts import artifacts_dir, write_json_atomic
from runtime.engine import OnnxModel
from runtime.machine import cpu_name
from runtime.manifest import read_manifest
from training.checkpoint import load_trained

BATCHES = (1, 32)


def _inputs(view, batch: int) -> tuple[torch.Tensor, ...]:
    """The view's example inputs, repeated along the batch axis to ``batch`` rows."""
    return tuple(torch.cat([t] * -(-batch // t.shape[0]))[:batch] for t in view.inputs)


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": cpu_name(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "onnxruntime": __import__("onnxruntime").__version__,
            "cuda": torch.cuda.is_available()}


def _rows(runs: dict[str, Callable[[int], Callable[[], Any]]], repeats: int,
          warmup: int, label: str) -> dict[str, Any]:
    """Per batch size: median ms of each runtime (``runs[name](batch)`` gives the call)."""
    rows: dict[str, Any] = {}
    for b in BATCHES:
        calls = {k: make(b) for k, make in runs.items()}
        reps = repeats if b == 1 else max(5, repeats // 3)
        ms = median_ms(calls, warmup if b == 1 else max(1, warmup // 2), reps)
        row = {f"{k}_ms": round(v, 3) for k, v in ms.items()}
        if "int8" in ms:
            row["int8_vs_fp32"] = round(ms["fp32"] / ms["int8"], 3)
        row["fp32_vs_torch"] = round(ms["torch"] / ms["fp32"], 3)
        rows[f"batch_{b}"] = row
        print(f"[bench] {label} batch {b}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items()),
              flush=True)
    return rows


def bench_exported(artifacts: Path, repeats: int, warmup: int) -> dict[str, Any]:
    """Every model of the manifest: torch eager, its fp32 file and (if any) its int8 file."""
    manifest = read_manifest(artifacts)
    results: dict[str, Any] = {}
    for name, entry in manifest["models"].items():
        model, ckpt = load_trained(artifacts / entry["training"]["checkpoint"])
        variant, view = view_of(model, ckpt)
        files = {"fp32": OnnxModel(name, entry, artifacts, precision="fp32")}
        if (entry.get("int8") or {}).get("file"):
            files["int8"] = OnnxModel(name, entry, artifacts, precision="int8")

        def runner(kind: str) -> Callable[[int], Callable[[], Any]]:
            def make(b: int) -> Callable[[], Any]:
                tin = _inputs(view, b)
                if kind == "torch":
                    def run_torch() -> None:
                        with torch.inference_mode():
                            view.module(*tin)
                    return run_torch
                feeds = {n: t.numpy() for n, t in zip(variant.io.inputs, tin)}
                return lambda: files[kind].run(feeds)
            return make

        rows = _rows({k: runner(k) for k in ("torch", *files)}, repeats, warmup, name)
        q = entry.get("int8") or {}
        results[name] = {
            "provider": files["fp32"].provider, "served": entry.get("precision", "fp32"),
            "inputs": {n: list(t.shape) for n, t in zip(variant.io.inputs, _inputs(view, 1))},
            "export_decision": {k: q.get(k) for k in (
                "headline", "n_test", "test_fp32", "test_int8", "loss_points", "ms_batch1_fp32",
                "ms_batch1_int8", "speedup_batch1", "reason")},
            **rows}
    return results


def bench_resnet50(repeats: int, warmup: int, calibration_images: int = 32) -> dict[str, Any]:
    """A random-init timm ResNet-50 at 224 px: exported, quantised (static QDQ) and timed."""
    import timm

    from export import int8
    from export.onnx_export import export_module
    from runtime.manifest import sha256_file
    from runtime.preprocess import IMAGENET_RGB, to_input
    from training.data.fashion_mnist import load_fashion_mnist

    torch.manual_seed(0)
    net = timm.create_model("resnet50", pretrained=False, num_classes=1000).eval()
    train = load_fashion_mnist("train")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(train.images))
    cal = to_input(list(train.images[idx[:calibration_images]]), IMAGENET_RGB)     # (N, 3, 224, 224)
    held = to_input(list(train.images[idx[-64:]]), IMAGENET_RGB)                   # not calibrated on
    with tempfile.TemporaryDirectory(prefix="replens-bench-") as tmp:
        art = Path(tmp)
        t0 = time.time()
        info = export_module(net, (torch.from_numpy(cal[:2]),), art / "onnx/resnet50.onnx",
                             ["image"], ["logits"], {"image": {0: "batch"}, "logits": {0: "batch"}},
                             [(torch.from_numpy(cal[2:3]),)])
        t_export = time.time() - t0
        cfg = int8.settings()
        feeds = [{"image": cal[i:i + 8]} for i in range(0, len(cal), 8)]
        t0 = time.time()
        quant = int8.quantize(art / "onnx/resnet50.onnx", art / "onnx/resnet50.int8.onnx", feeds, cfg)
        t_quant = time.time() - t0
        entry = {"name": "resnet50", "file": "onnx/resnet50.onnx",
                 "sha256": sha256_file(art / "onnx/resnet50.onnx"),
                 "int8": {"file": "onnx/resnet50.int8.onnx",
                          "sha256": sha256_file(art / "onnx/resnet50.int8.onnx")}}
        files = {p: OnnxModel("resnet50", entry, art, precision=p) for p in ("fp32", "int8")}
        z32 = np.concatenate([files["fp32"].run({"image": held[i:i + 16]})["logits"]
                              for i in range(0, len(held), 16)])
        z8 = np.concatenate([files["int8"].run({"image": held[i:i + 16]})["logits"]
                             for i in range(0, len(held), 16)])
        x = {b: np.concatenate([held] * -(-b // len(held)))[:b] for b in BATCHES}

        def runner(kind: str) -> Callable[[int], Callable[[], Any]]:
            def make(b: int) -> Callable[[], Any]:
                if kind == "torch":
                    t = torch.from_numpy(x[b])

                    def run_torch() -> None:
                        with torch.inference_mode():
                            net(t)
                    return run_torch
                return lambda: files[kind].run({"image": x[b]})
            return make

        rows = _rows({k: runner(k) for k in ("torch", "fp32", "int8")}, repeats, warmup,
                     "resnet50 (224 px)")
        sizes = {p: round((art / entry[p]["file"] if p == "int8" else art / entry["file"])
                          .stat().st_size / 2 ** 20, 1) for p in ("fp32", "int8")}
    return {"provider": files["fp32"].provider, "served": "(not exported by the app)",
            "inputs": {"image": [1, 3, 224, 224]},
            "weights": "timm resnet50, random init (seed 0): speed only, no accuracy",
            "exporter": info["exporter"], "export_seconds": round(t_export, 1),
            "quantization": quant, "quantize_seconds": round(t_quant, 1),
            "file_mb": sizes,
            "int8_top1_agreement_with_fp32": round(float((z32.argmax(1) == z8.argmax(1)).mean()), 4),
            "n_agreement": int(len(held)), **rows}


def main(argv: list[str] | None = None) -> int:
    """The command; ``--render`` rewrites ``bench.md`` from an existing ``bench.json``."""
    import json
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m export.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts")
    p.add_argument("--repeats", type=int, default=30, help="timed calls at batch 1 (batch 32: "
                   "a third, at least 5)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--no-resnet50", action="store_true", help="skip the user-sized ResNet-50")
    p.add_argument("--out", default="reports")
    p.add_argument("--render", action="store_true",
                   help="only rewrite <out>/bench.md from <out>/bench.json (no measuring)")
    args = p.parse_args(argv)
    if args.render:
        (Path(args.out) / "bench.md").write_text(
            render(json.loads((Path(args.out) / "bench.json").read_text())))
        return 0
    art = artifacts_dir(args.artifacts)
    t0 = time.time()
    load0 = os.getloadavg()
    res = bench_exported(art, args.repeats, args.warmup)
    if not args.no_resnet50:
        res["resnet50_224 (user-sized)"] = bench_resnet50(args.repeats, args.warmup)
    report = {"command": shlex.join(["python", "-m", "export.bench", *argv]),
              "artifacts": str(art), "machine": machine(),
              "load_average_1min": {"start": round(load0[0], 2),
                                    "end": round(os.getloadavg()[0], 2)},
              "wall_seconds": round(time.time() - t0, 1),
              "method": f"median wall time; torch eager (inference_mode), onnxruntime fp32 and "
                        f"int8 (ORT_ENABLE_ALL, default threads) timed in turn, in 3 blocks "
                        f"each, on the same inputs; batch 1: {args.warmup} warm-up calls before "
                        f"each block and {args.repeats} timed calls in all, batch 32: "
                        f"{max(1, args.warmup // 2)} and "
                        f"{max(5, args.repeats // 3)}; inputs: the export's example inputs "
                        f"repeated (ResNet-50: Fashion-MNIST images at 224 px)",
              "models": res}
    out = Path(args.out)
    write_json_atomic(out / "bench.json", report)
    (out / "bench.md").write_text(render(report))
    return 0


def _f(v: Any, nd: int = 2) -> str:
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def render(report: dict[str, Any]) -> str:
    """``reports/bench.md`` from ``reports/bench.json``."""
    m = report["machine"]
    lines = ["# Eager torch vs onnxruntime fp32 vs onnxruntime int8", "",
             f"Command: `{report['command']}` (artifacts: `{report['artifacts']}`)  ",
             f"Machine: {m['processor']}, {m['cpu_count']} cores, {m['platform']}; torch "
             f"{m['torch']} ({m['torch_threads']} threads), onnxruntime {m['onnxruntime']}; "
             f"1-min load average {report['load_average_1min']['start']} at the start, "
             f"{report['load_average_1min']['end']} at the end (other work on the machine); "
             f"{report['wall_seconds']} s", "", report["method"] + ".", "",
             "Timings on a shared machine move with the load of other work (above): compare "
             "the columns of one row, measured together, rather than rows with each other.", "",
             "## Speed, one run", "",
             "| model | batch | torch ms | ort fp32 ms | ort int8 ms | int8 vs fp32 | fp32 vs torch |",
             "|---|---|---|---|---|---|---|"]
    for name, r in report["models"].items():
        for b in BATCHES:
            x = r.get(f"batch_{b}")
            if x:
                lines.append(f"| {name} | {b} | {_f(x['torch_ms'])} | {_f(x['fp32_ms'])} | "
                             f"{_f(x.get('int8_ms'))} | {_f(x.get('int8_vs_fp32'))}x | "
                             f"{_f(x['fp32_vs_torch'])}x |")
    lines += ["", "## What the app serves (decided at export: `python -m export`, "
              "rule in `export/int8.yaml`)", "",
              "The export measures the headline test metric of both files through onnxruntime "
              "and their batch-1 speed (with the app's threads and with one thread; the "
              "smaller speed-up counts), then serves int8 only when it is fast and accurate "
              "enough.", "",
              "| model | serves | headline (test) | fp32 | int8 | int8 - fp32 (points) | batch-1 speed-up at export | reason |",
              "|---|---|---|---|---|---|---|---|"]
    for name, r in report["models"].items():
        d = r.get("export_decision")
        if d is None:
            continue
        lines.append(f"| {name} | {r['served']} | {_f(d.get('headline'))} (n={_f(d.get('n_test'))}) | "
                     f"{_f(d.get('test_fp32'), 4)} | {_f(d.get('test_int8'), 4)} | "
                     f"{_f(None if d.get('loss_points') is None else -d['loss_points'])} | "
                     f"{_f(d.get('speedup_batch1'))}x | {_f(d.get('reason'))} |")
    r50 = next((r for n, r in report["models"].items() if n.startswith("resnet50")), None)
    if r50:
        lines += ["", "## The user-sized model", "",
                  f"ResNet-50 at 224 px: {r50['weights']}; exported with {r50['exporter']} in "
                  f"{r50['export_seconds']} s, quantised ({r50['quantization']['format']}, "
                  f"{r50['quantization']['weights']}, "
                  f"{r50['quantization']['calibration'].replace('training images', 'Fashion-MNIST training images at 224 px')}) in "
                  f"{r50['quantize_seconds']} s; files {r50['file_mb']['fp32']} MB fp32, "
                  f"{r50['file_mb']['int8']} MB int8; int8 top-1 agrees with fp32 on "
                  f"{100 * r50['int8_top1_agreement_with_fp32']:.1f} % of {r50['n_agreement']} "
                  f"held-out images (random weights: a sanity check, not an accuracy)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from runtime.cli import run_main

    raise SystemExit(run_main(main))
