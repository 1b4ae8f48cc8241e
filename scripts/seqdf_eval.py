"""The face model on a Seq-DeepFake folder that is not the generated-faces default.

    python -m scripts.seqdf_eval make OUT [--n-train 1500] [--n-val 150] [--n-test 300] [--seed 1]
    python -m scripts.seqdf_eval run OUT --out reports/own_data_faces.json --recipe default [--seed 0]
    python -m scripts.seqdf_eval table reports/own_data_faces.json     # the Markdown table

``make`` writes a folder in the Seq-DeepFake layout (``OUT/facial_components/annotations/
{train,val,test}.csv`` and the 256 x 256 face crops) with the project's face generator
(:mod:`training.data.faces_synth`, its own seed so the faces differ from the default set), in
one process, and removes the generator's extra landmark files so the folder holds only what
the Seq-DeepFake release holds (the loader then uses canonical landmarks). These are
generated faces with synthetic edits, not real deepfakes.

``run`` trains ``python -m training seqfake --data OUT`` with one recipe (:data:`RECIPES`:
``default``, the defaults for a user's Seq-DeepFake folder; ``scratch``, ResNet-18 from random
initialisation at 64 px, the generated-faces network; ``default_none``, the default network
from random initialisation) on one torch thread and appends the
command, the summary's metrics, training seconds, steps, starting weights and the load
average before and after it to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from runtime.machine import cpu_name

RECIPES: dict[str, list[str]] = {
    "default": [],
    "scratch": ["model.user_data.backbone=resnet18", "data.user_data.img_size=64",
                "pretrained.weights=none"],
    "default_none": ["pretrained.weights=none"],
}
METRICS = ("fixed_acc", "adaptive_acc", "multilabel_acc", "exact_set_acc",
           "random_order_fixed_acc", "random_order_adaptive_acc")


def make(out: Path, n_train: int, n_val: int, n_test: int, seed: int) -> Path:
    """Write the Seq-DeepFake folder under ``out``; returns its task folder."""
    from training.data import faces_synth

    task = faces_synth.generate(out, n_train, n_val, n_test, seed, workers=1)
    shutil.rmtree(task / "landmarks", ignore_errors=True)
    (task / "DONE").unlink(missing_ok=True)
    return task


def run(root: Path, out: Path, recipe: str, seed: int, artifacts: Path) -> dict:
    """Train one recipe on ``root``; append the record to ``out`` and return it."""
    name = f"seqdf_{recipe}_s{seed}"
    cmd = [sys.executable, "-m", "training", "seqfake", "--data", str(root), "--artifacts",
           str(artifacts), "--no-progress", "--set", f"run.name={name}", "--set",
           f"run.seed={seed}", "--set", "train.threads=1"]
    for s in RECIPES[recipe]:
        cmd += ["--set", s]
    record: dict = {"recipe": recipe, "seed": seed, "data": "OUT (scripts/seqdf_eval.py make)",
                    "command": " ".join(["python"] + cmd[1:]).replace(str(root), "OUT")
                    .replace(str(artifacts), "ART"),
                    "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "load_before": list(os.getloadavg())}
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    record.update(rc=proc.returncode, wall_s=round(time.time() - t0, 1),
                  load_after=list(os.getloadavg()),
                  plan=[ln for ln in proc.stdout.splitlines() if ln.startswith("[plan]")])
    summary_file = artifacts / "runs" / name / "summary.json"
    if proc.returncode == 0 and summary_file.is_file():
        s = json.loads(summary_file.read_text())
        m = s.get("metrics", {})
        record.update(metrics={k: m[k] for k in METRICS if k in m},
                      train_seconds=s.get("train_seconds"), steps=s.get("steps"),
                      pretrained=s.get("pretrained"), learned=s.get("learned"),
                      summary_plan=s.get("plan"))
    else:
        record["error"] = (proc.stderr or proc.stdout)[-2000:]
    results = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    results["machine"] = {"cpu": cpu_name(),
                          "cores": os.cpu_count(), "platform": platform.platform()}
    results["runs"].append(record)
    out.write_text(json.dumps(results, indent=1) + "\n")
    return record


def network(record: dict) -> str:
    """The network a run trained, as its printed plan names it (``start: NAME, ...``)."""
    for line in record.get("plan", []):
        if "start: " in line:
            return line.split("start: ", 1)[1].split(",", 1)[0]
    return "-"


def table(path: Path) -> str:
    """The Markdown table of the runs in ``path``."""
    rows = ["| recipe | seed | network | input | start | Fixed-Acc | Adaptive-Acc | "
            "multi-label | exact set | random-order Fixed | steps | train s | load at start |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in json.loads(path.read_text())["runs"]:
        m = r.get("metrics", {})
        pct = {k: f"{100 * m[k]:.1f}" if k in m else "-" for k in METRICS}
        start = "ImageNet" if "ImageNet" in str(r.get("pretrained")) else "random init"
        size = next((ln.split("input (", 1)[1].split(",")[0] + " px"
                     for ln in r.get("plan", []) if "input (" in ln), "-")
        rows.append(f"| {r['recipe']} | {r['seed']} | {network(r)} | {size} | {start} | "
                    f"{pct['fixed_acc']} | {pct['adaptive_acc']} | {pct['multilabel_acc']} | "
                    f"{pct['exact_set_acc']} | "
                    f"{pct['random_order_fixed_acc']} | {r.get('steps', '-')} | "
                    f"{r.get('train_seconds', '-')} | {r['load_before'][0]:.1f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.seqdf_eval",
                                description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make", help="write the Seq-DeepFake folder")
    mk.add_argument("out", type=Path)
    mk.add_argument("--n-train", type=int, default=1500)
    mk.add_argument("--n-val", type=int, default=150)
    mk.add_argument("--n-test", type=int, default=300)
    mk.add_argument("--seed", type=int, default=1)
    rn = sub.add_parser("run", help="train one recipe on the folder")
    rn.add_argument("root", type=Path)
    rn.add_argument("--out", type=Path, required=True)
    rn.add_argument("--recipe", choices=tuple(RECIPES), default="default")
    rn.add_argument("--seed", type=int, default=0)
    rn.add_argument("--artifacts", type=Path, default=None,
                    help="where the runs go (default: ROOT/art)")
    tb = sub.add_parser("table", help="print the Markdown table")
    tb.add_argument("path", type=Path)
    a = p.parse_args(argv)
    if a.cmd == "make":
        t0 = time.time()
        print(f"wrote {make(a.out, a.n_train, a.n_val, a.n_test, a.seed)} in "
              f"{time.time() - t0:.0f} s")
    elif a.cmd == "run":
        rec = run(a.root, a.out, a.recipe, a.seed, a.artifacts or a.root / "art")
        print(json.dumps({k: rec.get(k) for k in ("recipe", "seed", "rc", "metrics",
                                                   "train_seconds", "steps", "load_before")}))
    else:
        print(table(a.path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
