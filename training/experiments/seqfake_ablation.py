"""Ablation of the Chapter 5 losses and the SeqFakeFormer-style baseline (thesis Table 5.3).

Trains, on the generated faces and with the same budget (epochs, images, resolution), for
each seed:

* ``bce_only``   (a) L_BCE^U only; decoded from f^U (thesis model I),
* ``bce_mil``    (b) + contrastive MIL L_CLS; decoded from f^U (model II),
* ``bce_rank``   (c) L_BCE^U + L_Rank; decoded from the fused head (model III),
* ``full``       (d) L_CLS + L_BCE^U + L_BCE^V + L_Rank (model VI),
* ``seqfakeformer``: the autoregressive baseline on the same backbone,

then writes ``reports/seqfake.json`` and ``reports/seqfake.md`` with Fixed-Acc,
Adaptive-Acc, multi-label accuracy, training time, inference throughput (batch 1 and 32)
and the accuracy of a random order of the detected components.

    python -m training.experiments.seqfake_ablation --seeds 0 1

Runs go through the experiment harness (:mod:`training.experiments.harness`): a run with the
same config hash as a finished one is reused with its stored metrics and throughput
(``--fresh`` retrains). ``--render reports/seqfake.json`` re-renders the report from the
stored per-run numbers, without training.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.artifacts import artifacts_dir, write_json_atomic, atomic_path
from training.data.seqdeepfake import describe
from training.experiments import harness
from training.methods import build_method

MODULE = "training.experiments.seqfake_ablation"

VARIANTS: dict[str, list[str]] = {
    "full": ["loss.weights={cls: 1, bce_patch: 1, bce_cls: 1, rank: 1, slots: 0}",
             "eval.decode_from=fused", "loss.reg_reduction=sum"],
    "bce_only": ["loss.weights={cls: 0, bce_patch: 1, bce_cls: 0, rank: 0, slots: 0}",
                 "eval.decode_from=patch"],
    "bce_mil": ["loss.weights={cls: 1, bce_patch: 1, bce_cls: 0, rank: 0, slots: 0}",
                "eval.decode_from=patch", "loss.reg_reduction=sum"],
    "bce_rank": ["loss.weights={cls: 0, bce_patch: 1, bce_cls: 0, rank: 1, slots: 0}",
                 "eval.decode_from=fused"],
    "seqfakeformer": ["model.arch=seqfakeformer"],
    "full_regmean": ["loss.weights={cls: 1, bce_patch: 1, bce_cls: 1, rank: 1, slots: 0}",
                     "eval.decode_from=fused", "loss.reg_reduction=mean"],
}
LABELS = {"bce_only": "(a) BCE^U only", "bce_mil": "(b) BCE^U + contrastive MIL",
          "bce_rank": "(c) BCE^U + ranking", "full": "(d) full (CLS + BCE^U + BCE^V + Rank)",
          "seqfakeformer": "SeqFakeFormer-style baseline",
          "full_regmean": "(d') full, l_Reg averaged over the n pairs (not the thesis)"}
METRICS = ("fixed_acc", "adaptive_acc", "multilabel_acc", "exact_set_acc",
           "random_order_fixed_acc", "random_order_adaptive_acc")
THESIS_TABLE_5_3 = {"bce_only": 51.22, "bce_mil": 53.14, "bce_rank": 71.12, "full": 73.34,
                    "seqfakeformer": 72.65}


@torch.no_grad()
def throughput(model: torch.nn.Module, img_size: int, batch: int, seconds: float = 4.0
               ) -> float:
    """Images per second of the eval forward on random inputs (after one warm-up call)."""
    model.eval()
    x = torch.randn(batch, 3, img_size, img_size)
    model(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 2:
        model(x)
        n += 1
    return n * batch / (time.perf_counter() - t0)


def run_one(variant: str, seed: int, base: list[str], artifacts: Path, img_size: int,
            reuse: bool = True) -> dict[str, Any]:
    """Train one variant/seed through the harness (or reuse it); returns its metrics, time
    and throughput."""
    cfg = harness.resolve_config("seqfake", base + VARIANTS[variant] + [
        f"run.seed={seed}", f"run.name={variant}_s{seed}"])

    def measure(trainer: Any, method: Any) -> dict[str, Any]:
        model = trainer.model.cpu()
        return {"images_per_s_batch1": round(throughput(model, img_size, 1), 1),
                "images_per_s_batch32": round(throughput(model, img_size, 32), 1),
                "throughput_device": "cpu", "throughput_threads": torch.get_num_threads(),
                "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}

    run = harness.train_run("seqfake", cfg, artifacts / "seqfake_ablation", measure=measure,
                            reuse=reuse, extra={"throughput_img_size": img_size})
    summary = run.summary
    rec = {"variant": variant, "seed": seed, "steps": summary["steps"],
           "train_seconds": summary["train_seconds"], "wall_seconds": run.wall_seconds,
           "metrics": summary["metrics"], **run.result, "key": run.key, "reused": run.reused,
           "device": run.provenance.get("device"),
           "device_name": run.provenance.get("device_name"), "run_dir": str(run.run_dir)}
    print(f"[ablation] {variant} seed {seed}: " + ", ".join(
        f"{k}={rec['metrics'].get(k, float('nan')):.4f}" for k in METRICS[:3]) +
        f", train {rec['train_seconds']:.0f}s" + (" (reused)" if run.reused else ""), flush=True)
    return rec


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant and metric: mean and sample std over seeds (:func:`harness.seed_stats`),
    the per-seed values and their range (max - min, the noise bar of :func:`verdicts`;
    also under its old name ``spread``)."""
    out: dict[str, Any] = {}
    for v in VARIANTS:
        rs = [r for r in runs if r["variant"] == v]
        if not rs:
            continue
        entry: dict[str, Any] = {}
        for k in METRICS + ("train_seconds", "images_per_s_batch1", "images_per_s_batch32"):
            vals = [float(r["metrics"][k]) if k in r["metrics"] else float(r[k]) for r in rs]
            rng = float(np.max(vals) - np.min(vals))
            entry[k] = {**harness.seed_stats(vals), "values": vals, "range": rng,
                        "spread": rng}
        out[v] = entry
    return out


def verdicts(summary: dict[str, Any]) -> dict[str, Any]:
    """The two checks of the ablation (the rank loss orders; the random-order control fails),
    computed from the measured numbers.

    The checks are on the full model (d); the same checks are also given for the
    other sequence models present ((d') and (c), SeqFakeFormer for the order check).
    """
    res: dict[str, Any] = {}
    for name in ("full", "full_regmean", "bce_rank"):
        if name in summary and "bce_only" in summary:
            f, b = summary[name]["fixed_acc"], summary["bce_only"]["fixed_acc"]
            margin = f["mean"] - b["mean"]
            rng = max(f["range"], b["range"])
            key = "full_vs_bce_only_fixed_acc" if name == "full" else f"{name}_vs_bce_only_fixed_acc"
            res[key] = {"margin": margin, "max_seed_range": rng, "holds": bool(margin > rng)}
    for name in ("full", "full_regmean", "bce_rank", "seqfakeformer", "bce_only"):
        if name in summary:
            a = summary[name]["adaptive_acc"]["mean"]
            r = summary[name]["random_order_adaptive_acc"]["mean"]
            res[f"order_learnable_{name}"] = {"adaptive_acc": a, "random_order_adaptive_acc": r,
                                              "gain": a - r, "holds": bool(a - r > 0.05)}
    return res


def _fmt(e: dict[str, Any], pct: bool = True) -> str:
    if pct:
        return harness.fmt_mean_sd(e, digits=1, scale=100, label=False)
    return f"{e['mean']:.0f}"


def budget_text(cfg: dict[str, Any]) -> str:
    """The per-run budget, read from the resolved config."""
    t, o, d, m = cfg["train"], cfg["optim"], cfg["data"], cfg["model"]
    n = d.get("limit_train") or d["generate"]["n_train"]
    return (f"{t['epochs']} epochs x {n} images, batch {t['batch_size']}, {o['name']} lr "
            f"{o['lr']:g} (weight decay {o['weight_decay']:g}, {o['schedule']} schedule, "
            f"{o['warmup_steps']} warm-up steps), {m['backbone']} stages 1-"
            f"{max(m['out_indices'])} + FPN + {m['depth']}-layer transformer (d={m['dim']}, "
            f"{m['heads']} heads), {d['img_size']} px, {t.get('threads') or 'default'} torch "
            f"thread(s)")


def _header(report: dict[str, Any]) -> list[str]:
    if "provenance" in report:
        return [f"- {x.rstrip()}" for x in harness.provenance_lines(
            report["provenance"], report.get("devices_used"))]
    lines = harness.rerendered_header(report, report.get("rendered", {}).get("provenance", {}))
    return [f"- {x.rstrip()}" for x in lines[:-2]] + ["", lines[-1]]


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    s, v = report["summary"], report["verdicts"]
    lines = [
        "# Sequential deepfake detection (thesis Ch. 5): loss ablation and baseline",
        "",
        "**Measured on generated faces** (`training/data/faces_synth.py`), not on Seq-DeepFake: "
        "these numbers say nothing about real deepfakes. Thesis numbers (Seq-FaceComp, "
        "ResNet-50, 200 epochs) are quoted for orientation only, never as measurements here.",
        "",
        *_header(report),
        "",
        f"- Data: {report['data']}",
        f"- Budget per run{'' if 'provenance' in report else ' (as written by the original run)'}: "
        f"{report['budget']}",
        f"- Seeds: {report['seeds']}; total wall time {report['total_wall_seconds'] / 60:.1f} min",
        "",
        "Values in %. " + harness.legend([e["fixed_acc"]["n"] for e in s.values()]) + " "
        "Random order = expected accuracy when the model's detected components are kept but "
        "put in a uniformly random order (exact expectation).",
        "",
        "| model | Fixed-Acc | Adaptive-Acc | multi-label acc | exact set | random-order Fixed | "
        "random-order Adaptive | train s | img/s b=1 | img/s b=32 | thesis (Fixed-Acc) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in s.items():
        lines.append(
            f"| {LABELS[name]} | {_fmt(e['fixed_acc'])} | {_fmt(e['adaptive_acc'])} | "
            f"{_fmt(e['multilabel_acc'])} | {_fmt(e['exact_set_acc'])} | "
            f"{_fmt(e['random_order_fixed_acc'])} | {_fmt(e['random_order_adaptive_acc'])} | "
            f"{_fmt(e['train_seconds'], False)} | {_fmt(e['images_per_s_batch1'], False)} | "
            f"{_fmt(e['images_per_s_batch32'], False)} | {THESIS_TABLE_5_3.get(name, '-')} |")
    if "always_real_baseline" in report:
        b = report["always_real_baseline"]
        lines.append(f"| predict every face real (no model) | {100 * b['fixed_acc']:.1f} | "
                     f"{100 * b['adaptive_acc']:.1f} | {100 * b['multilabel_acc']:.1f} | - | - | - "
                     f"| - | - | - | - |")
    lines += ["", "## Checks", ""]
    for key, c in v.items():
        if key.endswith("_vs_bce_only_fixed_acc"):
            name = "full" if key.startswith("full_vs") else key[: -len("_vs_bce_only_fixed_acc")]
            rng = c.get("max_seed_range", c.get("max_seed_spread"))
            lines.append(f"- {LABELS[name]} vs BCE-only, Fixed-Acc: margin "
                         f"{100 * c['margin']:+.1f} points, largest range over seeds (max - "
                         f"min) {100 * rng:.1f} points -> "
                         f"**{'holds' if c['holds'] else 'does NOT hold'}** (margin > range).")
        elif key.startswith("order_learnable_"):
            name = key[len("order_learnable_"):]
            lines.append(f"- Order learnable, {LABELS[name]}: Adaptive-Acc "
                         f"{100 * c['adaptive_acc']:.1f}% vs {100 * c['random_order_adaptive_acc']:.1f}% "
                         f"for a random order of the same detected components (gain "
                         f"{100 * c['gain']:+.1f} points) -> "
                         f"**{'holds' if c['holds'] else 'does NOT hold'}** (gain > 5 points).")
    lines += ["", "Generated faces (lengths 0..5; order in the caption), as stored at 256 px:", "",
              "![samples](seqfake_samples.png)"]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    if "provenance" not in report:  # notes of a run without the harness's provenance
        lines.append("- (Added when re-rendered:) in the notes above, \"seed spread\" is the "
                     "range (max - min) over seeds, the noise bar of the checks, not the ± "
                     "of the table.")
    if "order_comparison" in report:  # written by training.experiments.seqfake_order
        from training.experiments.seqfake_order import markdown_section

        lines += ["", *markdown_section(report["order_comparison"])]
    lines += ["", "Per-run numbers: `reports/seqfake.json`."]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def write_samples(path: Path, n: int = 6) -> None:
    """A strip of generated faces (lengths 0..5) with their manipulation sequences."""
    import cv2

    from training.data.faces_synth import COMPONENTS, iter_preview

    tiles = []
    for img, seq in iter_preview(seed=0, n=n):
        tile = cv2.resize(img, (192, 192), interpolation=cv2.INTER_AREA)
        text = "-".join(COMPONENTS[c - 1] for c in seq) or "real"
        bar = np.full((22, 192, 3), 255, np.uint8)
        cv2.putText(bar, text, (3, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.concatenate([bar, tile], 0))
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.concatenate(tiles, 1), cv2.COLOR_RGB2BGR))
    if ok:
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.tobytes())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.experiments.seqfake_ablation",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--n-train", type=int, default=3000, help="training rows used (of 3000)")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="extra config overrides for every run")
    p.add_argument("--artifacts", default=None)
    p.add_argument("--out", default="reports")
    p.add_argument("--fresh", action="store_true", help="retrain runs that are cached")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="combine the runs of earlier reports (e.g. one per seed, run in "
                        "parallel) into one report; no training")
    p.add_argument("--note", action="append", default=[],
                   help="with --merge: a sentence of interpretation to add to the notes")
    p.add_argument("--render", metavar="JSON",
                   help="re-render the report from this seqfake.json (no training)")
    a = p.parse_args(argv)
    if a.render:
        return render(Path(a.render), Path(a.out), argv)
    if a.merge:
        return merge_reports([Path(m) for m in a.merge], Path(a.out), argv, a.note)
    torch.set_num_threads(1)
    artifacts = artifacts_dir(a.artifacts)
    base = [f"train.epochs={a.epochs}", f"train.eval_every={a.epochs}", f"data.limit_train={a.n_train}",
            f"data.img_size={a.img_size}", "train.threads=1", "train.ckpt_every=0",
            f"run.artifacts={artifacts}", *a.overrides]
    prov = harness.provenance(module=MODULE, args=argv)
    t0 = time.time()
    runs: list[dict[str, Any]] = []
    cfg = harness.resolve_config("seqfake", base)
    method = build_method("seqfake", cfg)
    train_desc = describe(method._load("train", "limit_train"))
    test_desc = describe(method.eval_split())
    out = Path(a.out)
    for seed in a.seeds:
        for variant in a.variants:
            runs.append(run_one(variant, seed, base, artifacts, a.img_size, reuse=not a.fresh))
            summary = summarise(runs)
            report = {
                "command": prov["command"], "provenance": prov,
                "devices_used": _devices(runs),
                "data": (f"generated faces (faces_synth, seed {cfg['data']['generate']['seed']}): "
                         f"train {train_desc['n']} rows (by length {train_desc['by_length']}), "
                         f"test {test_desc['n']} rows (by length {test_desc['by_length']}), "
                         f"256 px JPEGs resized to {cfg['data']['img_size']} px"),
                "budget": budget_text(cfg),
                "config": cfg,
                "seeds": a.seeds,
                "total_wall_seconds": round(time.time() - t0, 1),
                "runs": runs,
                "summary": summary,
                "verdicts": verdicts(summary),
                "thesis_fixed_acc_for_reference": THESIS_TABLE_5_3,
                "notes": NOTES,
            }
            write_json_atomic(out / "seqfake.json", report)  # after every run
    write_markdown(out / "seqfake.md", report)
    write_samples(out / "seqfake_samples.png")
    print(json.dumps(report["verdicts"], indent=2))
    return 0


def _devices(runs: list[dict[str, Any]]) -> dict[str, int]:
    return harness.devices_used({"device": r.get("device", ""), "device_name":
                                 r.get("device_name", "not recorded")} if r.get("device") else {}
                                for r in runs)


def render(path: Path, out: Path, argv: list[str] | None) -> int:
    """Re-render ``seqfake.md`` (summary and checks recomputed from the stored runs)."""
    report = json.loads(path.read_text())
    summary = summarise(report["runs"])
    report.update(summary=summary, verdicts=verdicts(summary))
    report["rendered"] = {"provenance": harness.provenance(module=MODULE, args=argv),
                          "note": "summary and checks recomputed from runs with the harness' "
                                  "seed_stats (mean, sample std ddof=1, n); runs not retrained"}
    write_json_atomic(out / "seqfake.json", report)
    write_markdown(out / "seqfake.md", report)
    print(f"[ablation] re-rendered {out / 'seqfake.md'} from {path}", flush=True)
    return 0


def trivial_baselines(targets: list[list[int]]) -> dict[str, float]:
    """Accuracies of predicting every face real (the empty sequence) on the test labels."""
    from training.metrics.seqfake import adaptive_accuracy, fixed_accuracy, multilabel_accuracy

    preds: list[list[int]] = [[] for _ in targets]
    return {"fixed_acc": fixed_accuracy(preds, targets),
            "adaptive_acc": adaptive_accuracy(preds, targets),
            "multilabel_acc": multilabel_accuracy(preds, targets)}


def _always_real() -> dict[str, float]:
    from training.metrics.seqfake import unpad

    cfg = harness.resolve_config("seqfake")
    split = build_method("seqfake", cfg).eval_split()
    return trivial_baselines([unpad(t) for t in split.labels.tolist()])


def merge_reports(paths: list[Path], out: Path, argv: list[str] | None,
                  extra_notes: list[str] | None = None) -> int:
    """One report from several partial ones (same data and budget, different seeds)."""
    parts = [json.loads(p.read_text()) for p in paths]
    runs = [r for part in parts for r in part["runs"]]
    summary = summarise(runs)
    report = dict(parts[0])
    prov = harness.provenance(module=MODULE, args=argv)
    prov["command"] = " & ".join(part["command"] for part in parts) + " ; then " + prov["command"]
    report.update(
        command=prov["command"], provenance=prov, devices_used=_devices(runs),
        parts_provenance=[part.get("provenance") for part in parts],
        seeds=sorted({r["seed"] for r in runs}),
        total_wall_seconds=max(part["total_wall_seconds"] for part in parts),
        runs=runs, summary=summary, verdicts=verdicts(summary),
        always_real_baseline=_always_real(),
        notes=parts[0]["notes"] + [f"The {len(parts)} partial runs were made in separate "
                                    "processes (one per seed, see the command); total wall "
                                    "time is the longest of them."] + list(extra_notes or []))
    write_json_atomic(out / "seqfake.json", report)
    write_markdown(out / "seqfake.md", report)
    write_samples(out / "seqfake_samples.png")
    print(json.dumps(report["verdicts"], indent=2))
    return 0


NOTES = [
    "Throughput: eval forward in torch eager on random inputs, on the CPU with the torch "
    "threads each run recorded (runs[].throughput_threads in the JSON); it varies with the "
    "machine's load; SeqFakeFormer's includes its 5 greedy decoding steps.",
    "Training time is wall-clock seconds of the engine's loop, on the device each run "
    "recorded (runs[].device_name in the JSON).",
    "Multi-label accuracy is the per-label (Hamming) accuracy over the 5 components; "
    "'exact set' is the fraction of images whose predicted set of components is exactly right.",
    "(a) and (b) decode from the patch stream f^U (the only trained head, as the thesis' "
    "models I/II); (c) and (d) from the fused head.",
]


if __name__ == "__main__":
    from runtime.cli import run_main

    raise SystemExit(run_main(main))
