"""DCL's training step with and without leaving out the kernel taps that see only padding.

    python -m scripts.bench_conv_taps [--steps 10] [--warmup 2] [--rounds 2] \
        [--threads 2] [--out reports/conv_taps]

DCL's default run (``training/configs/dcl.yaml``: ResNet-18, timm stem, batch 256 of 28 px
Fashion-MNIST, two augmented views per image) through the real engine
(:class:`training.engine.Trainer`, clocked by :func:`scripts.bench_train.timed_steps`), once with the encoder as it is built
(:class:`models.conv_taps.TapTrimmedConv2d` everywhere in the backbone) and once with every
convolution turned back into a plain ``nn.Conv2d``, each with ``train.amp`` native (the
default) and fp32, in ``--rounds`` interleaved rounds of ``--warmup`` + ``--steps`` steps.
Seconds per step (median over the timed steps of each round, then the median over rounds),
and the largest difference between the two encoders' features on a test batch (the same
weights; the trimmed convolution computes the same function).

Writes ``<out>.json`` and ``<out>.md`` atomically, with the command, data, seed and machine
read from the run.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from runtime.machine import cpu_name

VARIANTS = (("trimmed", "native", True), ("full", "native", False),
            ("trimmed", "fp32", True), ("full", "fp32", False))


def time_variant(artifacts: Path, trimmed: bool, amp: str, args: argparse.Namespace
                 ) -> dict[str, Any]:
    """Train ``warmup + steps`` DCL steps; seconds of each timed step."""
    import torch

    from models.conv_taps import trim_conv_taps
    from scripts.bench_train import timed_steps
    from training.config import resolve_config
    from training.methods import build_method

    name = f"{'trimmed' if trimmed else 'full'}_{amp}"
    cfg = resolve_config("dcl", None, [
        f"train.max_steps={args.warmup + args.steps}", f"train.threads={args.threads}",
        "train.log_every=1000", "train.ckpt_every=0", f"train.amp={amp}",
        f"run.seed={args.seed}", f"run.name={name}", "run.device=cpu"])
    method = build_method("dcl", cfg)
    build = method.build_model
    method.build_model = lambda: trim_conv_taps(build(), trimmed)  # type: ignore[method-assign]
    method.evaluate = lambda model, device: {}  # type: ignore[method-assign]
    load = round(os.getloadavg()[0], 2)
    step_s, summary = timed_steps("dcl", method, cfg, artifacts, args.warmup)
    return {"variant": name, "trimmed": trimmed, "amp": amp,
            "precision": summary.get("precision"), "steps": args.steps,
            "batch": int(cfg["train"]["batch_size"]),
            "median_step_s": round(statistics.median(step_s), 4),
            "step_s": [round(s, 4) for s in step_s], "load_1min": load,
            "torch_threads": int(torch.get_num_threads())}


def same_function(seed: int) -> float:
    """max |features(trimmed) - features(full)| on 64 test images, the same weights."""
    import torch

    from models.conv_taps import trim_conv_taps
    from training.config import resolve_config
    from training.methods import build_method

    method = build_method("dcl", resolve_config("dcl", None, [f"run.seed={seed}"]))
    torch.manual_seed(seed)
    trimmed = method.build_model().eval()
    full = trim_conv_taps(method.build_model(), False).eval()
    full.load_state_dict(trimmed.state_dict())
    x = method._eval_tensors()["test_x"][:64]
    with torch.no_grad():
        return float((trimmed.embed(x) - full.embed(x)).abs().max())


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = ["# DCL training step: kernel taps that see only padding left out", "",
             f"Command: `{result['command']}`  ",
             f"Git commit: `{result['git_commit']}`  ",
             f"Machine: {m['cpu']} ({m['cpus']} logical cores), {m['platform']}, Python "
             f"{m['python']}, torch {m['torch']}, {result['threads']} torch thread(s); "
             f"started {result['started']}  ",
             "Data: Fashion-MNIST train (Debian's dataset-fashion-mnist), batch 256, two views "
             f"per image, the DCL config's augmentation; seed {result['seed']}  ", "",
             f"{result['steps']} timed steps after {result['warmup']} warm-up steps per run, "
             f"{result['rounds']} interleaved rounds.", "",
             "| encoder | train.amp | forward | s/step (median of rounds) | each round (s/step @ load) |",
             "|---|---|---|---|---|"]
    for name, amp, trimmed in VARIANTS:
        rows = [r for r in result["runs"] if r["trimmed"] == trimmed and r["amp"] == amp]
        med = statistics.median(r["median_step_s"] for r in rows)
        each = ", ".join(f"{r['median_step_s']:.3f} @ {r['load_1min']}" for r in rows)
        lines.append(f"| {name} | {amp} | {rows[0]['precision']} | {med:.3f} | {each} |")
    lines += [""]
    for amp, ratio in result["speedup"].items():
        lines.append(f"- train.amp {amp}: full / trimmed = **{ratio:.2f}x** per step")
    lines += [f"- Same weights, 64 test images: max |features(trimmed) - features(full)| = "
              f"{result['max_feature_diff']:.3g}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports/conv_taps")
    args = p.parse_args(argv)
    import torch

    from runtime.artifacts import write_report

    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for _, amp, trimmed in VARIANTS:
                print(f"[bench_conv_taps] round {r + 1}: trimmed={trimmed} amp={amp}", flush=True)
                runs.append(time_variant(Path(tmp) / f"r{r}", trimmed, amp, args))
    speedup = {}
    for amp in ("native", "fp32"):
        med = {t: statistics.median(x["median_step_s"] for x in runs
                                    if x["amp"] == amp and x["trimmed"] == t) for t in (True, False)}
        speedup[amp] = round(med[False] / med[True], 3)
    cpu = cpu_name()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    result = {
        "command": " ".join(["python -m scripts.bench_conv_taps", *(sys.argv[1:] if argv is None
                                                                      else argv)]),
        "git_commit": commit.stdout.strip() or "unknown", "started": started,
        "machine": {"cpu": cpu, "cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "threads": args.threads, "seed": args.seed, "steps": args.steps,
        "warmup": args.warmup, "rounds": args.rounds, "runs": runs, "speedup": speedup,
        "max_feature_diff": same_function(args.seed)}
    write_report(args.out, result, render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
