"""qMIL trained on an ImageFolder of colour images (64 px): held-out bag accuracy and
attention accuracy, measured for one or several seeds, with the command, data, seeds and
machine read from the runs.

    .venv/bin/python -m scripts.qmil_folder_eval [--per-class 40] [--size 64] [--seeds 0 1 2]
        [--data DIR] [--set KEY=VALUE ...] [--out reports/qmil_folder]

Without ``--data`` it writes, per seed, the easy fixture of :mod:`training.data.shapes`
(circle / square / triangle, each its own colour, train/ val/ test/ trees; the seed draws
the images) to a temporary folder. Each seed runs ``python -m training qmil --data DIR
--set run.seed=S`` (the default config, plus ``--set``), whose evaluation bags are drawn
from the test split only (images no training bag holds), and the report (``OUT.json``,
``OUT.md``) gives per seed: bag accuracy, attention accuracy (the top-attention instance of
a positive bag is of the query's class) against its chance level (the share of
query-class instances in the positive bags), per query word; and per word the lowest of
the seeds (a word left at chance by one seed shows there).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from runtime.artifacts import write_report
from training.__main__ import main as train_main
from training.data.shapes import write_shapes_folder


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
            "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def run_seed(seed: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Train and evaluate one seed: the fixture (or ``--data``) -> ``python -m training qmil``.

    Returns the run's record: seed, steps, seconds, metrics, the config values that decide
    the result (temperature, lr), labels, preprocessing, data source."""
    import json

    import torch

    data = Path(args.data) if args.data else tmp / f"shapes{seed}"
    if not args.data:
        write_shapes_folder(data, per_class=args.per_class, size=args.size, layout="splits",
                            seed=seed)
    art = tmp / f"art{seed}"
    sets = [f"run.seed={seed}", f"data.user_data.image_size={args.size}", *args.overrides]
    t0 = time.time()
    rc = train_main(["qmil", "--data", str(data), "--artifacts", str(art), "--no-progress",
                     *[x for s in sets for x in ("--set", s)]])
    if rc:
        raise SystemExit(rc)
    summary = json.loads((art / "runs" / "qmil" / "summary.json").read_text())
    ck = torch.load(art / "runs" / "qmil" / "checkpoint.pt", weights_only=True)
    ex = ck["extra"]
    return {"seed": seed, "steps": summary["steps"], "train_seconds": summary.get("train_seconds"),
            "wall_seconds": round(time.time() - t0, 1), "metrics": summary["metrics"],
            "temperature": ex.get("temperature"), "lr": ck["config"]["optim"]["lr"],
            "labels": list(ex["labels"]), "dataset": ex["dataset"],
            "data_source": ex["data_source"], "preprocess": ex["preprocess"],
            "eval_bags": int(ck["config"]["data"]["eval_bags_per_query"]) * len(ex["labels"]),
            "sets": sets}


def _per(m: dict[str, float], kind: str, word: str) -> float:
    return float(m.get(kind + "/" + word.replace(" ", "_").replace("-", "_"), float("nan")))


def render(result: dict[str, Any]) -> str:
    """The Markdown report of :func:`main`'s result."""
    runs, words = result["runs"], result["runs"][0]["labels"]
    first, mach = runs[0], result["machine"]
    seed_rows = "\n".join(
        f"| {r['seed']} | {r['temperature']:g} | {r['metrics']['bag_acc']:.3f} | "
        f"{r['metrics']['att_acc']:.3f} | {r['metrics']['att_chance']:.3f} | " +
        " | ".join(f"{_per(r['metrics'], 'bag_acc', w):.3f} / {_per(r['metrics'], 'att_acc', w):.3f}"
                   for w in words) + f" | {r['steps']} | {r['train_seconds']} |" for r in runs)
    low = "\n".join(
        f"| {w} | {min(_per(r['metrics'], 'bag_acc', w) for r in runs):.3f} | "
        f"{min(_per(r['metrics'], 'att_acc', w) for r in runs):.3f} | "
        f"{sum(_per(r['metrics'], 'bag_acc', w) >= 0.9 for r in runs)} of {len(runs)} |"
        for w in words)
    return f"""# qMIL on a user's ImageFolder of colour images

Command: `{result['command']}`  
Training, per seed S: `{result['train_command']}` (every other value: `training/configs/qmil.yaml`)  
Data: {result['data']}  
Model input: {first['preprocess']['size'][0]} x {first['preprocess']['size'][1]},
{first['preprocess']['channels']} channels; {first['dataset']}  
Machine: {mach['platform']}, {mach['cpus']} CPUs, torch {mach['torch']}, CUDA {mach['cuda']},
load {mach['load_1min']} at the end.

Held-out bags: {first['eval_bags']} balanced bags per seed, drawn from the test split only
(images that no training bag holds), half of them holding the query word's class. Chance:
bag accuracy 0.5; attention accuracy (positive bags: the top-attention instance is of the
query's class) the share of query-class instances in the positive bags (column "chance").

| seed | tau | bag acc | att acc | chance | {' | '.join(f'{w}: bag / att' for w in words)} | steps | train s |
|---|---|---|---|---|{'---|' * len(words)}---|---|
{seed_rows}

Per query word (folder name), over the seeds:

| word | lowest bag acc | lowest att acc | seeds with bag acc >= 0.9 |
|---|---|---|---|
{low}
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="an ImageFolder (default: write the shapes fixture)")
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="run.seed values (and fixture seeds), one run each")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", default="reports/qmil_folder")
    args = p.parse_args(argv)
    command = "python -m scripts.qmil_folder_eval " + " ".join(shlex.quote(a) for a in
                                                               (argv or sys.argv[1:]))
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_seed(seed, args, Path(tmp)) for seed in args.seeds]
    sets = ["run.seed=S", *runs[0]["sets"][1:]]
    result = {
        "command": command,
        "train_command": "python -m training qmil --data DIR " +
        " ".join(f"--set {shlex.quote(s)}" for s in sets),
        "data": str(args.data) if args.data else
        f"training.data.shapes fixture: {', '.join(runs[0]['labels'])}; {args.per_class} images "
        f"per class at {args.size} px (60/20/20 % train/val/test), drawn with the run's seed",
        "seeds": args.seeds, "runs": runs, "machine": machine(),
    }
    write_report(args.out, result, render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
