"""``python -m export.bench``: onnxruntime vs eager torch, same inputs, same run.

For each exported model: batch 1 and batch 32 (for qMIL: bags of 10 instances), after
warm-up, median wall time over repeats; writes ``reports/bench.json`` and
``reports/bench.md`` with the ratios, the provider and the machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from runtime.engine import OnnxModel
from export.pipeline import view_of
from runtime.artifacts import artifacts_dir, write_json_atomic
from training.checkpoint import load_trained
from runtime.manifest import read_manifest


def _time(fn: Callable[[], Any], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _inputs(view, batch: int) -> tuple[torch.Tensor, ...]:
    """The view's example inputs, repeated along the batch axis to ``batch`` rows."""
    return tuple(torch.cat([t] * -(-batch // t.shape[0]))[:batch] for t in view.inputs)


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "onnxruntime": __import__("onnxruntime").__version__,
            "cuda": torch.cuda.is_available()}


def bench(artifacts: Path, batches: tuple[int, ...] = (1, 32), repeats: int = 30,
          warmup: int = 5) -> dict[str, Any]:
    manifest = read_manifest(artifacts)
    results: dict[str, Any] = {}
    for name, entry in manifest["models"].items():
        model, ckpt = load_trained(artifacts / entry["training"]["checkpoint"])
        variant, view = view_of(model, ckpt)
        onnx = OnnxModel(name, entry, artifacts)
        rows = {}
        for b in batches:
            tin = _inputs(view, b)
            feeds = {n: t.numpy() for n, t in zip(variant.io.inputs, tin)}
            reps = repeats if b == 1 else max(5, repeats // 3)

            def run_torch() -> None:
                with torch.inference_mode():
                    view.module(*tin)

            t_torch = _time(run_torch, warmup, reps)
            t_ort = _time(lambda: onnx.run(feeds), warmup, reps)
            rows[f"batch_{b}"] = {"torch_ms": round(1e3 * t_torch, 3), "onnxruntime_ms": round(1e3 * t_ort, 3),
                                  "speedup": round(t_torch / t_ort, 3)}
            print(f"[bench] {name} batch {b}: torch {1e3 * t_torch:.2f} ms, onnxruntime "
                  f"{1e3 * t_ort:.2f} ms, x{t_torch / t_ort:.2f}", flush=True)
        results[name] = {"provider": onnx.provider, "inputs": {n: list(t.shape) for n, t in zip(variant.io.inputs, _inputs(view, 1))},
                         **rows}
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.bench", description=__doc__)
    p.add_argument("--artifacts")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out", default="reports")
    args = p.parse_args(argv)
    art = artifacts_dir(args.artifacts)
    t0 = time.time()
    res = bench(art, repeats=args.repeats)
    report = {"command": "python -m export.bench" + (f" --repeats {args.repeats}" if args.repeats != 30 else ""),
              "machine": machine(), "wall_seconds": round(time.time() - t0, 1),
              "method": "median wall time after 5 warm-up calls; batch 1 over `repeats` calls, "
                        "batch 32 over max(5, repeats/3); same random inputs for both runtimes; "
                        "onnxruntime ORT_ENABLE_ALL, default threads; torch eager in inference_mode",
              "models": res}
    out = Path(args.out)
    write_json_atomic(out / "bench.json", report)
    lines = ["# onnxruntime vs eager torch", "", f"Command: `{report['command']}`  ",
             f"Machine: {report['machine']['processor']}, {report['machine']['cpu_count']} cores, "
             f"torch {report['machine']['torch']} ({report['machine']['torch_threads']} threads), "
             f"onnxruntime {report['machine']['onnxruntime']}", "", report["method"], "",
             "| model | provider | batch | torch ms | onnxruntime ms | speed-up |", "|---|---|---|---|---|---|"]
    for name, r in res.items():
        for key in ("batch_1", "batch_32"):
            if key in r:
                x = r[key]
                lines.append(f"| {name} | {r['provider']} | {key.split('_')[1]} | {x['torch_ms']} | "
                             f"{x['onnxruntime_ms']} | {x['speedup']} |")
    (out / "bench.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    from runtime.cli import run_main

    raise SystemExit(run_main(main))
