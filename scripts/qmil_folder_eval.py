"""qMIL trained on an ImageFolder of colour images (64 px): held-out bag accuracy and
attention accuracy, measured, with the command, data, seed and machine read from the run.

    .venv/bin/python -m scripts.qmil_folder_eval [--per-class 40] [--size 64] [--seed 0]
        [--data DIR] [--set KEY=VALUE ...] [--out reports/qmil_folder]

Without ``--data`` it writes the easy fixture of :mod:`training.data.shapes` (circle /
square / triangle, each its own colour, train/ val/ test/ trees) to a temporary folder.
It runs ``python -m training qmil --data DIR`` (the default config, plus ``--set``), whose
evaluation bags are drawn from the test split only (images no training bag holds), and
writes ``OUT.json`` and ``OUT.md``: bag accuracy, attention accuracy (the top-attention
instance of a positive bag is of the query's class) against its chance level (the share
of query-class instances in the positive bags), per query word.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

from runtime.artifacts import write_json_atomic
from training.__main__ import main as train_main
from training.data.shapes import write_shapes_folder


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
            "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="an ImageFolder (default: write the shapes fixture)")
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="fixture seed and run.seed")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", default="reports/qmil_folder")
    args = p.parse_args(argv)
    command = "python -m scripts.qmil_folder_eval " + " ".join(shlex.quote(a) for a in
                                                               (argv or sys.argv[1:]))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "shapes"
        if not args.data:
            write_shapes_folder(data, per_class=args.per_class, size=args.size,
                                layout="splits", seed=args.seed)
        art = Path(tmp) / "art"
        sets = [f"run.seed={args.seed}", f"data.user_data.image_size={args.size}",
                *args.overrides]
        t0 = time.time()
        rc = train_main(["qmil", "--data", str(data), "--artifacts", str(art), "--no-progress",
                         *[x for s in sets for x in ("--set", s)]])
        if rc:
            return rc
        summary = json.loads((art / "runs" / "qmil" / "summary.json").read_text())
        import torch

        ck = torch.load(art / "runs" / "qmil" / "checkpoint.pt", weights_only=True)
    m = summary["metrics"]
    words = ck["extra"]["labels"]
    result = {
        "command": command, "train_command": "python -m training qmil --data DIR " +
        " ".join(f"--set {shlex.quote(s)}" for s in sets),
        "data": str(args.data) if args.data else
        f"training.data.shapes fixture: {', '.join(words)}; {args.per_class} images per class "
        f"at {args.size} px (60/20/20 % train/val/test), seed {args.seed}",
        "dataset": ck["extra"]["dataset"], "data_source": ck["extra"]["data_source"],
        "preprocess": ck["extra"]["preprocess"], "seed": args.seed,
        "steps": summary["steps"], "train_seconds": summary.get("train_seconds"),
        "wall_seconds": round(time.time() - t0, 1),
        "eval_bags": int(ck["config"]["data"]["eval_bags_per_query"]) * len(words),
        "metrics": m, "machine": machine(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out.with_suffix(".json"), result)
    def per(kind: str, word: str) -> float:
        return float(m.get(kind + "/" + word.replace(" ", "_").replace("-", "_"), float("nan")))

    rows = "\n".join(f"| {w} | {per('bag_acc', w):.3f} | {per('att_acc', w):.3f} |"
                     for w in words)
    text = f"""# qMIL on a user's ImageFolder of colour images

Command: `{command}`  
Training: `{result['train_command']}` (every other value: `training/configs/qmil.yaml`)  
Data: {result['data']}  
Model input: {result['preprocess']['size'][0]} x {result['preprocess']['size'][1]},
{result['preprocess']['channels']} channels; {result['dataset']}  
Machine: {result['machine']['platform']}, {result['machine']['cpus']} CPUs, torch
{result['machine']['torch']}, CUDA {result['machine']['cuda']}, load {result['machine']['load_1min']}
at the end; {result['steps']} steps in {result['train_seconds']} s.

Held-out bags: {result['eval_bags']} balanced bags drawn from the test split only (images
that no training bag holds), half of them holding the query word's class.

| metric | value |
|---|---|
| bag accuracy | {m['bag_acc']:.3f} (chance 0.5) |
| attention accuracy (positive bags: top instance of the query's class) | {m['att_acc']:.3f} |
| its chance level (share of query-class instances in positive bags) | {m['att_chance']:.3f} |
| attention accuracy over bags predicted positive | {m['att_acc_predicted']:.3f} |

| query word (folder name) | bag accuracy | attention accuracy |
|---|---|---|
{rows}
"""
    with open(out.with_suffix(".md"), "w") as fh:
        fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
