"""Order heads compared: the thesis' probability ranking, the parallel slot head and the
SeqFakeFormer-style step-by-step decoder (docs/seqfake.md, "Parallel order head").

Trains, on the generated faces, for each seed and for the default budget and ``--factor``
times its epochs:

* ``thesis``: the default config ((d'): all thesis losses, l_Reg averaged), order read from
  the fused probabilities (``model.order_head=rank``);
* ``slots``: the same model and losses plus the parallel slot order head and its per-slot
  cross-entropy (``model.order_head=slots``), order read from the slots;
* ``seqfakeformer``: the SeqFakeFormer-style decoder on the same backbone.

Then, in this process and one after another, exports each model to ONNX and measures its
images/s through onnxruntime (1 thread, CPU) at batch 1 and 32 (the authors' SeqFakeFormer
at its published size too with ``--published``: random weights, not trained), and writes the
comparison into ``reports/seqfake.json`` (key ``order_comparison``) and ``reports/seqfake.md``
(its own section; the ablation table is kept).

    python -m training.experiments.seqfake_order --seeds 0 1 --jobs 2

Runs go through the experiment harness (cached by config hash; ``--fresh`` retrains).
``--redecode`` trains nothing: it reads the report's slot runs again with every
``eval.slot_decode`` on the validation and the test split and adds the rows of the hybrid
decoding (the fused detected set in the slot head's order) that validation prefers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.artifacts import artifacts_dir, write_json_atomic
from training.experiments import harness

MODULE = "training.experiments.seqfake_order"
MODELS: dict[str, list[str]] = {
    "thesis": ["model.order_head=rank"],
    "slots": ["model.order_head=slots"],
    "slots_raw": ["model.order_head=slots_raw"],
    "seqfakeformer": ["model.arch=seqfakeformer"],
}
LABELS = {"thesis": "thesis (d'), probability ranking",
          "slots": "thesis (d') + parallel slot head (not in the thesis)",
          "slots_raw": "thesis (d') + parallel slot head on encoded and raw tokens",
          "seqfakeformer": "SeqFakeFormer-style step-by-step decoder",
          "slots_hybrid": "slot head, hybrid decoding (fused detected set, slot order)",
          "slots_raw_hybrid": "slot head on encoded and raw tokens, hybrid decoding",
          "published": "authors' SeqFakeFormer (published size, random weights, not trained)"}
HYBRID = {"slots_hybrid": "slots", "slots_raw_hybrid": "slots_raw"}
"""Rows of the slot runs read with the hybrid decoding (``--redecode``), and their runs."""
METRICS = ("fixed_acc", "adaptive_acc", "random_order_fixed_acc", "random_order_adaptive_acc",
           "multilabel_acc", "exact_set_acc")


def base_overrides(epochs: int, n_train: int, img_size: int, artifacts: Path,
                   extra: list[str]) -> list[str]:
    """The overrides every run shares at a budget of ``epochs``."""
    return [f"train.epochs={epochs}", f"train.eval_every={epochs}",
            f"data.limit_train={n_train}", f"data.img_size={img_size}", "train.threads=1",
            "train.ckpt_every=0", f"run.artifacts={artifacts}", *extra]


def run_config(model: str, seed: int, epochs: int, base: list[str]) -> dict[str, Any]:
    """The resolved config of one model / seed / budget."""
    return harness.resolve_config("seqfake", base + MODELS[model] + [
        f"run.seed={seed}", f"run.name=order_{model}_e{epochs}_s{seed}"])


def run_one(model: str, seed: int, epochs: int, cfg: dict[str, Any], artifacts: str,
            reuse: bool = True) -> dict[str, Any]:
    """Train one model / seed / budget from its resolved config through the harness (or
    reuse it); its record. The configs are resolved before any training starts, so every
    run trains with the settings the command started with."""
    torch.set_num_threads(1)
    run = harness.train_run("seqfake", cfg, Path(artifacts) / "seqfake_order", reuse=reuse,
                            need_checkpoint=True, log=None)
    s = run.summary
    rec = {"model": model, "seed": seed, "epochs": epochs, "steps": s["steps"],
           "train_seconds": s["train_seconds"], "metrics": s["metrics"], "key": run.key,
           "reused": run.reused, "device_name": run.provenance.get("device_name"),
           "checkpoint": str(run.checkpoint), "run_dir": str(run.run_dir)}
    print(f"[order] {model} e{epochs} seed {seed}: fixed {rec['metrics']['fixed_acc']:.4f} "
          f"adaptive {rec['metrics']['adaptive_acc']:.4f}, train {rec['train_seconds']:.0f}s"
          + (" (reused)" if run.reused else ""), flush=True)
    return rec


def _ort_images_per_s(path: Path, image: np.ndarray, seconds: float) -> float:
    """Images/s of an ONNX file through onnxruntime on 1 CPU thread (one warm-up call)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: image}
    sess.run(None, feed)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 2:
        sess.run(None, feed)
        n += 1
    return n * image.shape[0] / (time.perf_counter() - t0)


def export_onnx(module: torch.nn.Module, io: Any, img_size: int, workdir: Path,
                name: str) -> tuple[Path, dict[str, Any]]:
    """Export ``module`` (an export view's module) to ``workdir/name.onnx`` (parity checked)."""
    from export.onnx_export import export_module

    path = workdir / f"{name}.onnx"
    x = torch.randn(2, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    info = export_module(module.eval(), (x,), path, io.inputs, io.outputs, io.dynamic_axes,
                         check_inputs=[(x[:1],)], atol=1e-3)
    return path, {"exporter": info["exporter"], "max_abs_diff": info["max_abs_diff"],
                  "onnx_mb": round(path.stat().st_size / 2**20, 1)}


def interleaved_throughput(paths: dict[str, Path], img_size: int, rounds: int = 5,
                           seconds: float = 1.5) -> dict[str, dict[str, Any]]:
    """Images/s of each ONNX file at batch 1 and 32, measured in ``rounds`` rounds that visit
    every file in turn (so that a change of the machine's load falls on all alike); the
    median over the rounds, and each round's value."""
    g = torch.Generator().manual_seed(1)
    imgs = {b: torch.randn(b, 3, img_size, img_size, generator=g).numpy() for b in (1, 32)}
    vals: dict[str, dict[int, list[float]]] = {n: {1: [], 32: []} for n in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            for b in (1, 32):
                vals[name][b].append(_ort_images_per_s(path, imgs[b], seconds))
    out = {}
    for name, v in vals.items():
        out[name] = {f"images_per_s_batch{b}": round(float(np.median(v[b])), 1) for b in v}
        out[name].update({f"rounds_batch{b}": [round(x, 1) for x in v[b]] for b in v})
        print(f"[order] ONNX {name}: b=1 {out[name]['images_per_s_batch1']} img/s, "
              f"b=32 {out[name]['images_per_s_batch32']} img/s (median of {rounds} rounds)",
              flush=True)
    return out


def onnx_throughput(module: torch.nn.Module, io: Any, img_size: int, workdir: Path,
                    name: str, seconds: float = 4.0) -> dict[str, Any]:
    """Export ``module`` to ONNX and measure it once at batch 1 and 32."""
    path, out = export_onnx(module, io, img_size, workdir, name)
    g = torch.Generator().manual_seed(1)
    for b in (1, 32):
        img = torch.randn(b, 3, img_size, img_size, generator=g).numpy()
        out[f"images_per_s_batch{b}"] = round(_ort_images_per_s(path, img, seconds), 1)
    print(f"[order] ONNX {name}: b=1 {out['images_per_s_batch1']} img/s, "
          f"b=32 {out['images_per_s_batch32']} img/s", flush=True)
    return out


def export_trained(rec: dict[str, Any], workdir: Path, img_size: int
                   ) -> tuple[Path, dict[str, Any]]:
    """A trained run exported to ONNX through its method's export view."""
    from export.pipeline import view_of
    from models.registry import create_model
    from training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(Path(rec["checkpoint"]))
    model = create_model(ckpt["model_spec"]["name"], **ckpt["model_spec"]["kwargs"])
    model.load_state_dict(ckpt["model"])
    variant, view = view_of(model.eval(), ckpt)
    path, info = export_onnx(view.module, variant.io, img_size, workdir, rec["model"])
    return path, {"variant": variant.name, **info}


def measure_published(workdir: Path) -> dict[str, Any]:
    """ONNX throughput of the authors' SeqFakeFormer at its published size (random init)."""
    from export.methods.seqfake.views import PublishedOnnx
    from methods.seqfake import PUBLISHED_IO
    from models.registry import create_model

    model = create_model("seqfakeformer_published").eval()
    size = int(getattr(model, "img_size", 256))
    return {"img_size": size, **onnx_throughput(PublishedOnnx(model, 5), PUBLISHED_IO, size,
                                                workdir, "published", seconds=4.0)}


def summarise(runs: list[dict[str, Any]], speed: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (model, epochs): mean / sd / range over seeds of each metric and of the
    training seconds, and the model's ONNX throughput."""
    rows = []
    for epochs in sorted({r["epochs"] for r in runs}):
        for model in [*MODELS, *HYBRID]:
            rs = [r for r in runs if r["model"] == model and r["epochs"] == epochs]
            if not rs:
                continue
            row: dict[str, Any] = {"model": model, "epochs": epochs,
                                   "seeds": [r["seed"] for r in rs]}
            for k in METRICS + ("train_seconds",):
                vals = [float(r["metrics"][k]) if k in r["metrics"] else float(r[k]) for r in rs]
                row[k] = {**harness.seed_stats(vals), "values": vals,
                          "range": float(np.max(vals) - np.min(vals))}
            row["onnx"] = speed.get(model)
            rows.append(row)
    return rows


SLOT_MODELS = ("slots", "slots_raw", *HYBRID)


def verdict(rows: list[dict[str, Any]], speed: dict[str, Any]) -> list[dict[str, Any]]:
    """Per slot model and budget: is its Adaptive-Acc at or above the decoder's within the
    seed range (mean difference >= -max range), is its ONNX batch-1 throughput >= 2x the
    decoder's, and how far is it above the thesis ranking?"""
    out = []
    for epochs in sorted({r["epochs"] for r in rows}):
        by = {r["model"]: r for r in rows if r["epochs"] == epochs}
        for name in [m for m in SLOT_MODELS if m in by and "seqfakeformer" in by]:
            a, b = by[name]["adaptive_acc"], by["seqfakeformer"]["adaptive_acc"]
            diff, rng = a["mean"] - b["mean"], max(a["range"], b["range"])
            s1 = (speed.get(name) or {}).get("images_per_s_batch1")
            d1 = (speed.get("seqfakeformer") or {}).get("images_per_s_batch1")
            ratio = s1 / d1 if s1 and d1 else None
            rank = by.get("thesis", {}).get("adaptive_acc")
            out.append({"model": name, "epochs": epochs, "adaptive_diff": diff,
                        "max_seed_range": rng, "accuracy_holds": bool(diff >= -rng),
                        "speed_ratio_batch1": ratio,
                        "speed_holds": bool(ratio is not None and ratio >= 2.0),
                        "adaptive_vs_rank": None if rank is None else a["mean"] - rank["mean"]})
    return out


def _pct(e: dict[str, Any]) -> str:
    return harness.fmt_mean_sd(e, digits=1, scale=100, label=False)


def markdown_section(comp: dict[str, Any]) -> list[str]:
    """The comparison's Markdown section of reports/seqfake.md."""
    prov = comp["provenance"]
    lines = ["## Order heads: ranking, parallel slots, step-by-step decoder", "",
             *[f"- {x.rstrip()}" for x in harness.provenance_lines(prov)],
             f"- Load average at the start (1, 5, 15 min): {comp['load_average_at_start']}"
             + (f" (at the start of the --add run: {comp['load_average_at_add']})"
                if "load_average_at_add" in comp else "")
             + (f" (at the start of the --remeasure run, which measured the throughput: "
                f"{comp['load_average_at_remeasure']})"
                if "load_average_at_remeasure" in comp else "") + "; "
             f"{comp['jobs']} training process(es) at once, 1 torch thread each; the machine "
             "was shared with other jobs",
             f"- Budgets: {comp['budget']}; seeds {comp['seeds']}; total wall time "
             f"{comp['total_wall_seconds'] / 60:.1f} min", "",
             "Values in %. " + harness.legend(len(comp["seeds"])) + " ONNX images/s: "
             "onnxruntime, CPU, 1 thread, measured in this run after all training, the median "
             "of rounds that visit every model in turn (the same network at both budgets, so "
             "one measurement per model; each round's value in the JSON).",
             "",
             "| model | epochs | Fixed-Acc | Adaptive-Acc | random-order Adaptive | "
             "multi-label | train s | ONNX img/s b=1 | ONNX img/s b=32 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in comp["rows"]:
        sp = r.get("onnx") or {}
        lines.append(
            f"| {LABELS[r['model']]} | {r['epochs']} | {_pct(r['fixed_acc'])} | "
            f"{_pct(r['adaptive_acc'])} | {_pct(r['random_order_adaptive_acc'])} | "
            f"{_pct(r['multilabel_acc'])} | {r['train_seconds']['mean']:.0f} | "
            f"{sp.get('images_per_s_batch1', '-')} | {sp.get('images_per_s_batch32', '-')} |")
    pub = comp["speed"].get("published")
    if pub:
        lines.append(f"| {LABELS['published']} ({pub['img_size']} px) | - | - | - | - | - | - | "
                     f"{pub['images_per_s_batch1']} | {pub['images_per_s_batch32']} |")
    lines += ["", "Checks (goal: the slot head's Adaptive-Acc at or above the decoder's within "
              "the seed range, and at least 2x its ONNX images/s at batch 1):", ""]
    for v in comp["verdict"]:
        ratio = v["speed_ratio_batch1"]
        vs_rank = v.get("adaptive_vs_rank")
        lines.append(
            f"- {LABELS[v.get('model', 'slots')]}, {v['epochs']} epochs: Adaptive-Acc minus the "
            f"decoder's {100 * v['adaptive_diff']:+.1f} points (largest range over seeds "
            f"{100 * v['max_seed_range']:.1f}) -> "
            f"**{'holds' if v['accuracy_holds'] else 'does NOT hold'}**; batch-1 speed "
            + (f"{ratio:.2f}x the decoder's -> "
               f"**{'holds' if v['speed_holds'] else 'does NOT hold'}**" if ratio is not None
               else "not measured (the same network as the slot head's row)")
            + ("." if vs_rank is None else
               f"; Adaptive-Acc minus the thesis ranking's {100 * vs_rank:+.1f} points."))
    lines += redecode_lines(comp.get("redecode"))
    lines += ["", *[f"- {n}" for n in comp.get("notes", [])]]
    return lines


def redecode_lines(red: dict[str, Any] | None) -> list[str]:
    """The ``--redecode`` paragraph: each slot decoding's Adaptive-Acc on the validation and
    the test split, mean over seeds, per slot model and budget."""
    if not red:
        return []
    from models.seqfake import SLOT_DECODES

    lines = ["", "Slot decodings (`eval.slot_decode`, `--redecode`: the same checkpoints read "
             "again, no training; load average at the start "
             f"{red['load_average_at_start']}): Adaptive-Acc / multi-label / exact-set, % , "
             "mean over seeds. The hybrid decoding in the rows above is the one with the "
             f"higher validation Adaptive-Acc at the longest budget: `{red['chosen']}`.", "",
             "| model | epochs | split | " + " | ".join(SLOT_DECODES) + " |",
             "|---|---|---|" + "---|" * len(SLOT_DECODES)]
    keys = sorted({(r["model"], r["epochs"]) for r in red["runs"]},
                  key=lambda k: (k[1], SLOT_MODELS.index(k[0])))
    for model, epochs in keys:
        rs = [r for r in red["runs"] if (r["model"], r["epochs"]) == (model, epochs)]
        for split in ("val", "test"):
            cells = []
            for how in SLOT_DECODES:
                m = [np.mean([r["scores"][split][how][k] for r in rs])
                     for k in ("adaptive_acc", "multilabel_acc", "exact_set_acc")]
                cells.append(" / ".join(f"{100 * x:.1f}" for x in m))
            lines.append(f"| {LABELS[model]} | {epochs} | {split} | " + " | ".join(cells) + " |")
    lines += ["", f"Where the sets agree (test, `{red['chosen']}` against the slot argmaxes, "
              "Adaptive-Acc %, per seed; n faces):", ""]
    for model, epochs in keys:
        for r in [r for r in red["runs"] if (r["model"], r["epochs"]) == (model, epochs)]:
            g = r["scores"].get("agreement", {}).get("test", {}).get(red["chosen"])
            if g:
                lines.append(
                    f"- {LABELS[model]}, {epochs} epochs, seed {r['seed']}: same set "
                    f"(n = {g['n_same']:.0f}) hybrid {100 * g['hybrid_same']:.1f} vs slots "
                    f"{100 * g['slots_same']:.1f}; different sets (n = {g['n_diff']:.0f}) hybrid "
                    f"{100 * g['hybrid_diff']:.1f} vs slots {100 * g['slots_diff']:.1f}")
    return lines


def _init_worker() -> None:
    torch.set_num_threads(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--epochs", type=int, default=3, help="the default budget's epochs")
    p.add_argument("--factor", type=int, default=3,
                   help="the longer budget is this many times --epochs (1: only the default)")
    p.add_argument("--n-train", type=int, default=2000, help="training rows used (of 3000)")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--jobs", type=int, default=2, help="training processes at once")
    p.add_argument("--published", action="store_true",
                   help="also measure the authors' SeqFakeFormer's ONNX throughput (not trained)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="extra config overrides for every run")
    p.add_argument("--artifacts", default=None)
    p.add_argument("--out", default="reports")
    p.add_argument("--fresh", action="store_true", help="retrain runs that are cached")
    p.add_argument("--remeasure", action="store_true",
                   help="train nothing: measure the ONNX throughput of the report's runs again")
    p.add_argument("--redecode", action="store_true",
                   help="train nothing: read the report's slot runs' sequences again with every "
                        "eval.slot_decode, on the validation and the test split")
    p.add_argument("--add", action="store_true",
                   help="keep the runs of the other models in the report's comparison (same "
                        "seeds and budgets) and add these; every throughput is measured again")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    load = [round(x, 2) for x in os.getloadavg()]
    artifacts = artifacts_dir(a.artifacts)
    prov = harness.provenance(module=MODULE, args=argv)
    t0 = time.time()
    budgets = sorted({a.epochs, a.epochs * a.factor}, reverse=True)  # longest first
    from training.methods import build_method
    build_method("seqfake", harness.resolve_config("seqfake", base_overrides(
        a.epochs, a.n_train, a.img_size, artifacts, a.overrides))).data_root()  # generate once
    out = Path(a.out)
    path = out / "seqfake.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    if a.remeasure:
        return remeasure(report, path, out, prov, load, a.img_size, a.published)
    if a.redecode:
        return redecode(report, path, out, prov, load)
    tasks = [(m, s, e, run_config(m, s, e, base_overrides(e, a.n_train, a.img_size, artifacts,
                                                       a.overrides)),
              str(artifacts), not a.fresh) for e in budgets for s in a.seeds for m in a.models]
    if a.jobs > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            runs = list(pool.map(run_one, *zip(*tasks)))
    else:
        runs = [run_one(*t) for t in tasks]
    earlier = report.get("order_comparison") if a.add else None
    if earlier:
        runs = [r for r in earlier["runs"] if r["model"] not in a.models] + runs
        prov["command"] = f"{earlier['command']} ; then {prov['command']}"
    speed = measure_all(runs, a.img_size, a.published)
    rows = summarise(runs + hybrid_runs({**(earlier or {}), "runs": runs}), speed)
    comp = {"command": prov["command"], "provenance": prov,
            "load_average_at_start": earlier["load_average_at_start"] if earlier else load,
            "jobs": a.jobs, "seeds": a.seeds,
            "budget": f"{' and '.join(str(e) for e in sorted(budgets))} epochs x {a.n_train} "
                      f"images, {a.img_size} px, batch 32, the rest as "
                      "training/configs/seqfake.yaml",
            "total_wall_seconds": round(time.time() - t0, 1), "runs": runs, "speed": speed,
            "rows": rows, "verdict": verdict(rows, speed), "notes": NOTES}
    if earlier and "redecode" in earlier:
        comp["redecode"] = earlier["redecode"]
    if earlier:
        comp["total_wall_seconds"] += earlier["total_wall_seconds"]
        comp["load_average_at_add"] = load
    return write_comparison(report, comp, path, out)


def measure_all(runs: list[dict[str, Any]], img_size: int, published: bool
                ) -> dict[str, Any]:
    """Every model's ONNX throughput (its first run's checkpoint), in interleaved rounds; the
    authors' SeqFakeFormer's after them with ``published``."""
    speed: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[str, Path] = {}
        for model in [m for m in MODELS if any(r["model"] == m for r in runs)]:
            rec = next(r for r in runs if r["model"] == model)
            files[model], speed[model] = export_trained(rec, Path(tmp), img_size)
        for model, res in interleaved_throughput(files, img_size).items():
            speed[model].update(res)
        if published:
            speed["published"] = measure_published(Path(tmp))
    return speed


def remeasure(report: dict[str, Any], path: Path, out: Path, prov: dict[str, Any],
              load: list[float], img_size: int, published: bool) -> int:
    """The report's comparison with every throughput measured again (no training)."""
    comp = report.get("order_comparison")
    if not comp:
        print(f"error: {path} has no order comparison to measure again; run "
              f"python -m {MODULE} without --remeasure first", file=sys.stderr)
        return 2
    speed = measure_all(comp["runs"], img_size, published)
    rows = summarise(comp["runs"] + hybrid_runs(comp), speed)
    command = f"{comp['command']} ; then {prov['command']}"
    comp.update(command=command, provenance={**comp["provenance"], "command": command},
                speed=speed, rows=rows,
                verdict=verdict(rows, speed), load_average_at_remeasure=load,
                remeasure_provenance=prov)
    return write_comparison(report, comp, path, out)


def decode_scores(run_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """One stored slot run's scores with every ``eval.slot_decode``, on the validation and
    the test split: ``{split: {decode: metrics}}`` (one forward pass per split)."""
    import yaml

    from models.registry import create_model
    from models.seqfake import SLOT_DECODES
    from training.checkpoint import load_checkpoint
    from training.methods import build_method
    from training.metrics.seqfake import unpad

    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    model = create_model(ckpt["model_spec"]["name"], **ckpt["model_spec"]["kwargs"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["eval"].setdefault("slot_decode", "slots")
    method = build_method("seqfake", cfg)
    out: dict[str, Any] = {"agreement": {}}
    for split_name in ("val", "test"):
        split = method._load(split_name, "limit_eval")
        res = method.predict(model, split, torch.device("cpu"))
        targets = [unpad(t) for t in split.labels.tolist()]
        seqs = {how: method.slot_sequences(res, how) for how in SLOT_DECODES}
        out[split_name] = {how: method._sequence_scores(s, targets) for how, s in seqs.items()}
        out[split_name]["n"] = {"rows": float(len(targets))}
        out["agreement"][split_name] = {how: set_agreement(seqs["slots"], seqs[how], targets)
                                        for how in SLOT_DECODES[1:]}
    return out


def set_agreement(slots: np.ndarray, hybrid: np.ndarray, targets: list[list[int]]
                  ) -> dict[str, float]:
    """Adaptive-Acc of the slot argmaxes and of a hybrid decoding on the faces where both
    give the same set of components (``same``) and where they do not (``diff``)."""
    from training.metrics.seqfake import adaptive_accuracy, unpad

    a = [unpad(s) for s in slots.astype(int).tolist()]
    h = [unpad(s) for s in hybrid.astype(int).tolist()]
    out: dict[str, float] = {}
    for name, keep in (("same", True), ("diff", False)):
        idx = [i for i in range(len(a)) if (set(a[i]) == set(h[i])) == keep]
        out[f"n_{name}"] = float(len(idx))
        for label, seqs in (("slots", a), ("hybrid", h)):
            out[f"{label}_{name}"] = (adaptive_accuracy([seqs[i] for i in idx],
                                                        [targets[i] for i in idx])
                                      if idx else float("nan"))
    return out


def redecode(report: dict[str, Any], path: Path, out: Path, prov: dict[str, Any],
             load: list[float]) -> int:
    """The report's slot runs read again with every slot decoding (no training): the scores
    go to ``order_comparison.redecode``; the decoding that scores best on the validation
    split (mean Adaptive-Acc over the slot runs at the longest budget) adds its test rows
    and checks to the table."""
    comp = report.get("order_comparison")
    if not comp:
        print(f"error: {path} has no order comparison to decode again; run "
              f"python -m {MODULE} without --redecode first", file=sys.stderr)
        return 2
    t0 = time.time()
    scores = []
    for r in [r for r in comp["runs"] if r["model"] in SLOT_MODELS]:
        s = decode_scores(Path(r["run_dir"]))
        scores.append({k: r[k] for k in ("model", "seed", "epochs", "run_dir")} | {"scores": s})
        print(f"[order] redecode {r['model']} e{r['epochs']} s{r['seed']}: " + ", ".join(
            f"{sp} {how} {v['adaptive_acc']:.3f}" for sp in ("val", "test")
            for how, v in s[sp].items() if how != "n"), flush=True)
    comp["redecode"] = {"runs": scores, "load_average_at_start": load,
                        "wall_seconds": round(time.time() - t0, 1), "provenance": prov,
                        "chosen": choose_decode(scores)}
    comp["rows"] = summarise(comp["runs"] + hybrid_runs(comp), comp["speed"])
    comp["verdict"] = verdict(comp["rows"], comp["speed"])
    comp["notes"] = [n.replace(", a permutation-aware slot loss, and the combination of the "
                               "ranking's detections with the slot head's order",
                               " and a permutation-aware slot loss")
                     for n in comp.get("notes", []) if n != HYBRID_NOTE] + [HYBRID_NOTE]
    return write_comparison(report, comp, path, out)


def hybrid_runs(comp: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``--redecode`` test scores of the chosen hybrid decoding as runs of the
    :data:`HYBRID` models (training seconds of the slot run); only for slot runs still in
    the comparison."""
    red = comp.get("redecode")
    if not red:
        return []
    live = {r["run_dir"]: r for r in comp["runs"]}
    back = {v: k for k, v in HYBRID.items()}
    return [{"model": back[s["model"]], "seed": s["seed"], "epochs": s["epochs"],
             "train_seconds": live[s["run_dir"]]["train_seconds"],
             "metrics": s["scores"]["test"][red["chosen"]]}
            for s in red["runs"] if s["run_dir"] in live and s["model"] in back]


def choose_decode(scores: list[dict[str, Any]]) -> str:
    """The hybrid decoding with the higher mean validation Adaptive-Acc over the ``slots``
    runs at their longest budget."""
    longest = max(s["epochs"] for s in scores)
    use = [s for s in scores if s["model"] == "slots" and s["epochs"] == longest]
    mean = {how: float(np.mean([s["scores"]["val"][how]["adaptive_acc"] for s in use]))
            for how in ("hybrid_position", "hybrid_assign")}
    return max(mean, key=mean.get)


def write_comparison(report: dict[str, Any], comp: dict[str, Any], path: Path,
                     out: Path) -> int:
    """Store the comparison in the report's JSON and re-render its Markdown."""
    report["order_comparison"] = comp
    write_json_atomic(path, report)
    if "summary" in report:
        from training.experiments.seqfake_ablation import render
        render(path, out, ["--render", str(path)])
    print(json.dumps(comp["verdict"], indent=2))
    return 0


NOTES = [
    "The slot head's Fixed-Acc and Adaptive-Acc are those of its slot sequences; the same "
    "model's sequences read from its fused probabilities are in the JSON "
    "(runs[].metrics.rank_*).",
    "Random-order Adaptive: the expected Adaptive-Acc of the model's own detected components "
    "in a uniformly random order: a model that orders gains over it.",
    "The authors' SeqFakeFormer is too large to train on this CPU: only its ONNX throughput "
    "at its published input size (random weights) is measured.",
]

HYBRID_NOTE = (
    "Hybrid decoding (`eval.slot_decode: hybrid_position | hybrid_assign`): the fused "
    "probabilities' detected set (as the ranking reads it) put in the slot head's order, by "
    "each component's expected slot or by the best assignment of the detected components to "
    "distinct slots (max sum log p_s(c)). It detects as the ranking does (multi-label and "
    "exact-set accuracy up, to the ranking's) yet its Adaptive-Acc ends slightly below the "
    "slot head's own sequences on validation and on test, so `eval.slot_decode` stays "
    "`slots`. Split by whether the hybrid and the slot argmaxes give the same set of "
    "components (the lines above the notes): at 9 epochs, on the faces with the same set the "
    "hybrid's order is the better one in all four runs (+1.6 to +3.6 points; it gives each "
    "component one slot, the argmaxes may repeat one), on the others it loses in every run "
    "(-0.9 to -2.1 points), and more faces have different sets than the same.")


if __name__ == "__main__":
    from runtime.cli import run_main

    raise SystemExit(run_main(main))
