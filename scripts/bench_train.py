"""Training speed at 224 px RGB with and without channels_last and bf16, and the served latency.

    python -m scripts.bench_train [--batch 32] [--steps 6] [--warmup 2] [--rounds 2] \
        [--threads 2] [--backbone resnet18] [--out reports/train_speed]

ABC-Norm (the one method that trains on 224 px RGB image folders today) with a timm
ResNet-18 (``--backbone``) and timm's ImageNet stem, through the real engine
(:class:`training.engine.Trainer`, ``python -m training abcnorm --data DIR`` with
``data.size=[224, 224]``): every training step as the engine runs it (PNG decoding, the
method's augmentation and normalisation, forward, ABC-Norm loss, backward, SGD step).

Data: a generated ImageFolder (4 classes x 48 training images, 8 validation images, 256 x
256 RGB noise with a per-class colour cast; seed ``--seed``) in a temporary folder: the
speed does not depend on the pixels.

For each variant (``train.amp`` fp32 / bf16 x ``train.channels_last`` false / true), in
``--rounds`` interleaved rounds: ``--warmup`` + ``--steps`` optimiser steps; the clock runs
from the first timed step's start to the next step's start (the last step is timed to its
end), so img/s = batch x steps / seconds. Per variant: the median and the best over rounds
(on a shared machine the best round is the one least slowed by other jobs), with the 1-minute
load average at the start of each round's run.

Then the fp32 run is exported (``python -m export RUN``, the same command the app's build
runs) and its latency measured as the app serves it: ``app.services.classify.classify`` (image
decode, preprocessing, onnxruntime at batch 1, domain check, CAM overlay) and the bare
onnxruntime call at batch 1, each after warm-up calls; median and 90th percentile.

Writes ``<out>.json`` and ``<out>.md`` atomically, with the command, data, seed and machine
read from the run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

VARIANTS = (("fp32", "fp32", False), ("channels_last", "fp32", True),
            ("bf16", "bf16", False), ("bf16 + channels_last", "bf16", True))


def image_folder(root: Path, seed: int, classes: int = 4, n_train: int = 48,
                 n_val: int = 2, size: int = 256) -> Path:
    """An ImageFolder tree (train/<class>/*.png, val/<class>/*.png) of RGB noise images."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            cast = rng.integers(0, 128, 3)
            for i in range(n):
                px = rng.integers(0, 128, (size, size, 3)) + cast
                Image.fromarray(px.astype(np.uint8)).save(d / f"{i:03d}.png")
    return root


def timed_steps(name: str, method: Any, cfg: dict[str, Any], artifacts: Path, warmup: int
                ) -> tuple[list[float], dict[str, Any]]:
    """Train ``method`` through the engine (:class:`training.engine.Trainer`) and clock its
    steps: the seconds of each step after the first ``warmup`` ones (each from its start to
    the next step's start; the last to the end of the epoch, before any evaluation), and the
    run's summary."""
    from training.engine import Trainer

    starts: list[float] = []
    loss_fn = method.loss

    def timed_loss(model: Any, batch: Any, device: Any) -> Any:
        starts.append(time.perf_counter())
        return loss_fn(model, batch, device)

    method.loss = timed_loss  # type: ignore[method-assign]
    trainer = Trainer(name, method, cfg, artifacts=artifacts, progress=False)
    end: list[float] = []
    step = trainer._train_epoch

    def epoch_then_clock(run: Any, epoch: int, stop: Any) -> bool:
        out = step(run, epoch, stop)
        end.append(time.perf_counter())  # after the last step, before the evaluation
        return out

    trainer._train_epoch = epoch_then_clock  # type: ignore[method-assign]
    summary = trainer.fit()
    marks = starts[warmup:] + end[-1:]
    return [b - a for a, b in zip(marks, marks[1:])], summary


def time_variant(data: Path, artifacts: Path, name: str, amp: str, channels_last: bool,
                 args: argparse.Namespace) -> dict[str, Any]:
    """Train ``warmup + steps`` steps of one variant; img/s of the timed steps."""
    import torch

    from training.config import resolve_config
    from training.methods import build_method

    cfg = resolve_config("abcnorm", None, [
        f"data.root={data}", "data.size=[224, 224]", "data.channels=3",
        f"model.real_data.backbone={args.backbone}", "model.real_data.stem=imagenet",
        f"train.batch_size={args.batch}", f"train.max_steps={args.warmup + args.steps}",
        f"train.threads={args.threads}", "train.log_every=1000", "train.ckpt_every=0",
        "train.num_workers=0", f"train.amp={amp}", f"train.channels_last={channels_last}",
        f"run.seed={args.seed}", f"run.name={name}", "run.device=cpu"])
    method = build_method("abcnorm", cfg)
    load = round(os.getloadavg()[0], 2)
    step_s, summary = timed_steps("abcnorm", method, cfg, artifacts, args.warmup)
    seconds = sum(step_s)
    return {"variant": name, "amp": amp, "channels_last": channels_last,
            "steps": args.steps, "batch": args.batch, "seconds": round(seconds, 3),
            "img_per_s": round(args.batch * args.steps / seconds, 2),
            "step_s": [round(x, 3) for x in step_s],
            "torch_threads": int(torch.get_num_threads()), "load_1min": load,
            "run_dir": summary["run_dir"]}


def latency(artifacts: Path, run: str, image: Path, calls: int, warmup: int
            ) -> dict[str, Any]:
    """The app's classify call and the bare onnxruntime call at batch 1 (ms)."""
    from app.services.classify import METHOD, classify
    from runtime.engine import Engine

    engine = Engine(artifacts)
    model = engine.get(run, METHOD)
    rgb = np.asarray(Image.open(image).convert("RGB"))
    x = model.prepare([rgb])

    def measure(fn: Any) -> list[float]:
        for _ in range(warmup):
            fn()
        out = []
        for _ in range(calls):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
        return out

    app_ms = measure(lambda: classify(engine, str(image), model_name=run))
    ort_ms = measure(lambda: model.run({"image": x}))
    q = lambda v, p: round(float(np.percentile(v, p)), 1)  # noqa: E731
    return {"model": run, "file": model.path.name, "provider": model.provider,
            "input": list(x.shape), "calls": calls, "warmup_calls": warmup,
            "app_classify_ms": {"median": q(app_ms, 50), "p90": q(app_ms, 90)},
            "onnxruntime_ms": {"median": q(ort_ms, 50), "p90": q(ort_ms, 90)}}


def render(result: dict[str, Any]) -> str:
    from training.experiments.harness import provenance_lines

    rows = result["variants"]
    base = next(r for r in rows if r["variant"] == "fp32")["img_per_s"]
    lat = result["latency"]
    lines = ["# Training speed at 224 px RGB and the served latency (ABC-Norm, "
             f"{result['backbone']})", ""]
    lines += provenance_lines(result["provenance"])
    lines += [f"Load average before / after (1 min): {result['load_before']} / "
              f"{result['load_after']}; CPU bf16 instructions (avx512_bf16 / amx_bf16): "
              f"{result['cpu_bf16']}  ",
              f"Data: {result['data']}; seed {result['seed']}  ", "",
              f"Training: `python -m training abcnorm --data DIR --set data.size=[224, 224] "
              f"--set model.real_data.backbone={result['backbone']} --set "
              f"train.batch_size={result['batch']} --set train.amp=... --set "
              f"train.channels_last=...`, {result['steps']} timed steps after "
              f"{result['warmup']} warm-up steps each, {result['rounds']} interleaved rounds "
              f"(round r of every variant, then round r + 1).", "",
              "| variant | train.amp | train.channels_last | img/s median | img/s best | "
              "vs fp32 (best) | each round (img/s @ load) |", "|---|---|---|---|---|---|---|"]
    best = next(r for r in rows if r["variant"] == "fp32")["best_img_per_s"]
    for r in rows:
        each = ", ".join(f"{v:.1f} @ {ld:g}" for v, ld in zip(r["rounds"], r["load_1min"]))
        lines.append(f"| {r['variant']} | {r['amp']} | {str(r['channels_last']).lower()} | "
                     f"{r['img_per_s']:.1f} | {r['best_img_per_s']:.1f} | "
                     f"{r['best_img_per_s'] / best:.2f}x | {each} |")
    lines.append(f"\nMedian vs fp32: " + ", ".join(
        f"{r['variant']} {r['img_per_s'] / base:.2f}x" for r in rows) + ".")
    loads = [ld for r in rows for ld in r.get("load_1min", [])]
    cores = result["provenance"].get("cpu_count") or 1
    if loads and max(loads) > cores:
        lines.append(f"\nThe 1-minute load average was {min(loads):g}-{max(loads):g} on "
                     f"{cores} cores during the runs: other jobs shared the CPU, so these "
                     f"figures are lower bounds and noisy; rerun on an idle machine for "
                     f"absolute speeds.")
    lines += ["", f"Served (`python -m export {lat['model']}`, then as the app runs it; "
              f"{lat['file']}, provider {lat['provider']}, input {lat['input']}, "
              f"{lat['calls']} calls after {lat['warmup_calls']} warm-up calls):", "",
              "| call | median ms | p90 ms |", "|---|---|---|",
              f"| app classify (decode, preprocess, onnxruntime, domain check, CAM overlay) | "
              f"{lat['app_classify_ms']['median']} | {lat['app_classify_ms']['p90']} |",
              f"| onnxruntime alone, batch 1 | {lat['onnxruntime_ms']['median']} | "
              f"{lat['onnxruntime_ms']['p90']} |", ""]
    return "\n".join(lines)


def _cpu_bf16() -> str:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "unknown"
    found = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join(found) or "none"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="timed steps per variant and round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calls", type=int, default=30, help="latency calls (after 5 warm-up)")
    p.add_argument("--out", default="reports/train_speed", help="output path without suffix")
    p.add_argument("--render", action="store_true",
                   help="only rewrite <out>.md from <out>.json (no measurement)")
    args = p.parse_args(argv)
    if args.render:
        import json

        from runtime.artifacts import atomic_path

        out = Path(args.out)
        with atomic_path(out.with_suffix(".md")) as tmp_md:
            tmp_md.write_text(render(json.loads(out.with_suffix(".json").read_text())))
        return 0

    from runtime.artifacts import write_report
    from training.experiments.harness import provenance

    load_before = round(os.getloadavg()[0], 2)
    prov = provenance("cpu", module="scripts.bench_train",
                      args=sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        tmp_path = Path(tmp)
        data = image_folder(tmp_path / "data", args.seed)
        art = tmp_path / "artifacts"
        by_variant: dict[str, list[dict[str, Any]]] = {v[0]: [] for v in VARIANTS}
        for r in range(args.rounds):
            for name, amp, cl in VARIANTS:
                run = name.replace(" + ", "_")
                res = time_variant(data, art, f"bench_{run}", amp, cl, args)
                print(f"[bench] round {r + 1}: {name}: {res['img_per_s']} img/s", flush=True)
                by_variant[name].append(res)
        rows = []
        for name, amp, cl in VARIANTS:
            rates = [x["img_per_s"] for x in by_variant[name]]
            rows.append({"variant": name, "amp": amp, "channels_last": cl,
                         "img_per_s": round(statistics.median(rates), 2), "rounds": rates,
                         "best_img_per_s": max(rates),
                         "load_1min": [x["load_1min"] for x in by_variant[name]],
                         "step_s": [x["step_s"] for x in by_variant[name]]})
        env = {**os.environ, "REPLENS_ARTIFACTS": str(art)}
        subprocess.run([sys.executable, "-m", "export", "bench_fp32", "--artifacts",
                        str(art)], check=True, env=env)
        lat = latency(art, "bench_fp32", next((data / "val" / "class0").glob("*.png")),
                      calls=args.calls, warmup=5)
    result = {"backbone": args.backbone, "batch": args.batch, "steps": args.steps,
              "warmup": args.warmup, "rounds": args.rounds, "seed": args.seed,
              "data": "generated ImageFolder, 4 classes x 48 training images (256 x 256 RGB "
                      "noise, resized to 224 x 224 by the loader), 8 validation images",
              "variants": rows, "latency": lat, "provenance": prov,
              "load_before": load_before, "load_after": round(os.getloadavg()[0], 2),
              "cpu_bf16": _cpu_bf16()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_report(out, result, render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
