"""The thesis' Chapter 4 claim at small scale: ABC-Norm vs CE / PC / MaxEnt / LA / LDAM-DRW on
long-tailed Fashion-MNIST (thesis Chapter 4; docs/abcnorm.md).

Every run uses the same backbone, epochs, optimiser and data split (``training/configs/
abcnorm.yaml`` + the overrides below); only the loss and the training seed change. Two class
orders: label order (the tail classes sandal..ankle boot are easy ones) and a seeded
permutation (so that hard classes such as shirt can be in the tail).

    python -m training.experiments.abcnorm_report            # writes reports/abcnorm.*

Runs go through the experiment harness (:mod:`training.experiments.harness`), cached under
``<artifacts>/abcnorm_report/`` by the hash of the whole resolved config, so an interrupted
report resumes and a changed config retrains; ``--fresh`` ignores the cache.
``--render reports/abcnorm.json`` re-renders the Markdown from the stored results.
"""
from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from runtime.artifacts import artifacts_dir, write_json_atomic
from training.experiments import harness

MODULE = "training.experiments.abcnorm_report"

METHODS: dict[str, list[str]] = {
    "CE": ["loss.name=ce"],
    "PC": ["loss.name=pc"],
    "MaxEnt": ["loss.name=maxent"],
    "LA": ["loss.name=la"],
    "LDAM-DRW": ["loss.name=ldam"],
    "ABC-Norm (lambda=0.1)": ["loss.name=abcnorm", "loss.lam=0.1"],
    "ABC-Norm (lambda=0.3)": ["loss.name=abcnorm", "loss.lam=0.3"],
    "ABC-Norm (lambda=0.5)": ["loss.name=abcnorm", "loss.lam=0.5"],
}
ABC_KEYS = [m for m in METHODS if m.startswith("ABC")]
# A slim ResNet-18 (timm resnet18 with one block per stage and 1/8 of the stage widths) keeps
# 32 runs inside the half-hour budget on 2 CPU cores shared with other jobs.
BACKBONE = "model.backbone_kwargs={output_stride: 16, layers: [1, 1, 1, 1], channels: [8, 16, 32, 64]}"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


def _measure(trainer: Any, method: Any) -> dict[str, Any]:
    from training.metrics.longtail import per_class_accuracy

    cm = method.last_eval["confusion"]
    return {"per_class_accuracy": [float(a) for a in per_class_accuracy(cm)],
            "confusion": cm.tolist(), "class_counts": method.class_counts,
            "groups": method.groups, "labels": list(method.class_names),
            "order_ranks": method.split_info.get("order")}


def _result(job: dict[str, Any], run: harness.Run) -> dict[str, Any]:
    """The per-run record the report uses, from a trained or cached harness run."""
    return {**{k: job[k] for k in ("method", "order", "seed", "overrides")},
            "metrics": run.summary["metrics"], "steps": run.summary["steps"],
            "wall_seconds": run.wall_seconds, **run.result,
            "checkpoint": str(run.checkpoint), "key": run.key, "reused": run.reused,
            "device": run.provenance.get("device"),
            "device_name": run.provenance.get("device_name")}


def _run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one configuration through the harness (in a worker process)."""
    import torch

    torch.set_num_threads(int(job["threads"]))
    cfg = harness.resolve_config("abcnorm", job["overrides"])
    run = harness.train_run("abcnorm", cfg, job["root"], measure=_measure, reuse=job["reuse"],
                            need_checkpoint=True)
    return _result(job, run)


def _stats(values: list[float]) -> dict[str, Any]:
    """Mean, sample std (harness.seed_stats), min and max in %, two decimals."""
    a = [100 * float(v) for v in values]
    st = harness.seed_stats(a)
    return {"mean": round(st["mean"], 2), "sd": None if st["sd"] is None else round(st["sd"], 2),
            "n": st["n"], "min": round(min(a), 2), "max": round(max(a), 2)}


def summarise(results: list[dict[str, Any]], orders: list[str]) -> dict[str, Any]:
    """Mean / spread over seeds per (order, method), and ABC-Norm vs CE verdicts."""
    table: dict[str, dict[str, Any]] = {}
    for order in orders:
        table[order] = {}
        for m in METHODS:
            rs = sorted((r for r in results if r["order"] == order and r["method"] == m),
                        key=lambda r: r["seed"])
            if not rs:
                continue
            table[order][m] = {k: _stats([r["metrics"][k] for r in rs])
                               for k in ("top1", "many", "medium", "few")}
            table[order][m]["seeds"] = [r["seed"] for r in rs]
            table[order][m]["per_seed_top1"] = [round(100 * r["metrics"]["top1"], 2) for r in rs]
            table[order][m]["per_seed_few"] = [round(100 * r["metrics"]["few"], 2) for r in rs]
    verdicts = {}
    for order in orders:
        ce = table[order].get("CE")
        if not ce:
            continue
        for m in ABC_KEYS:
            abc = table[order].get(m)
            if not abc:
                continue
            out = {}
            for k in ("top1", "few"):
                d_seed = [a - c for a, c in zip(abc[f"per_seed_{k}"], ce[f"per_seed_{k}"])]
                d = abc[k]["mean"] - ce[k]["mean"]
                noise = max(abc[k]["sd"] or 0.0, ce[k]["sd"] or 0.0)
                if all(x > 0 for x in d_seed) and d > noise:
                    word = "better"
                elif all(x < 0 for x in d_seed) and -d > noise:
                    word = "worse"
                else:
                    word = "no clear difference"
                out[k] = {"diff_mean_points": round(d, 2), "diff_per_seed": [round(x, 2) for x in
                                                                             d_seed],
                          "verdict": word}
            verdicts[f"{order} / {m}"] = out
    return {"table": table, "abcnorm_vs_ce": verdicts}


def gradcam_figure(ce_ckpt: str, abc_ckpt: str, abc_name: str, path: Path,
                   n_images: int = 6) -> list[dict[str, Any]]:
    """Test images (tail classes first) with Grad-CAM overlays: CE beside ABC-Norm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from runtime.preprocess import PreprocessSpec
    from training.data.fashion_mnist import load_fashion_mnist
    from training.gradcam import explain, load_classifier

    ce, ck = load_classifier(ce_ckpt)
    abc, _ = load_classifier(abc_ckpt)
    extra = ck["extra"]
    spec = PreprocessSpec.from_dict(extra["preprocess"])
    labels, counts = extra["labels"], extra["class_counts"]
    test = load_fashion_mnist("test")
    order = np.argsort(counts)  # rarest classes first
    picks = [int(np.flatnonzero(test.labels == c)[0]) for c in order[:n_images]]
    fig, axes = plt.subplots(len(picks), 3, figsize=(6.6, 2.3 * len(picks)))
    rows = []
    torch.set_grad_enabled(True)
    for r, idx in enumerate(picks):
        img, y = test.images[idx], int(test.labels[idx])
        e_ce, e_abc = explain(ce, img, spec), explain(abc, img, spec)
        axes[r, 0].imshow(img, cmap="gray")
        axes[r, 0].set_title(f"{labels[y]} (N={counts[y]})", fontsize=8)
        for c, (e, name) in enumerate(((e_ce, "CE"), (e_abc, abc_name)), start=1):
            axes[r, c].imshow(e.overlay)
            mark = "ok" if e.predicted == y else "wrong"
            axes[r, c].set_title(f"{name}: {labels[e.predicted]} ({mark})", fontsize=7)
        rows.append({"test_index": idx, "true": labels[y], "ce_pred": labels[e_ce.predicted],
                     "abc_pred": labels[e_abc.predicted]})
        for a in axes[r]:
            a.axis("off")
    fig.suptitle("Grad-CAM on the last stage (predicted class)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return rows


def _fmt(s: dict[str, Any]) -> str:
    return harness.fmt_mean_sd(s, digits=1, label=False)


def write_markdown(report: dict[str, Any], path: Path) -> None:
    if "provenance" in report:
        head = harness.provenance_lines(report["provenance"], report.get("devices_used")) + [
            f"Wall time: {report['wall_minutes']} min ({report['n_runs']} runs, "
            f"{report.get('n_trained', report['n_runs'])} trained by this invocation, the rest "
            f"reused from the harness cache; {report['workers']} at a time, "
            f"{report.get('threads_per_run', '?')} torch thread(s) each).  "]
    else:
        head = harness.rerendered_header(
            report, report.get("rendered", {}).get("provenance", {}),
            source="the stored per-seed statistics (mean and sample std, ddof=1, as computed "
                   "then)") + [
            "", f"Wall time (original run): {report['wall_minutes']} min ({report['n_runs']} "
            f"runs, {report['workers']} at a time).  "]
    seeds = report["setup"]["seeds"]
    lines = ["# ABC-Norm on long-tailed Fashion-MNIST (thesis Chapter 4, small scale)", "",
             *head, "", "## Setup", ""]
    s = report["setup"]
    lines += [f"- Data: {s['data']}", f"- Class counts (by class id): {s['class_counts_label_order']}",
              f"- Groups: {s['groups_rule']}", f"- Backbone: {s['backbone']}",
              f"- Training: {s['training']}", f"- Seeds: {s['seeds']} ({s['seed_meaning']})",
              f"- Losses: {s['losses']}", f"- Evaluation: {s['evaluation']}", ""]
    for order, rows in report["results"]["table"].items():
        lines += [f"## Class order: {order}", "",
                  f"Tail ranks (head first): {report['orders'][order]}", "",
                  "| method | top-1 | many | medium | few | top-1 per seed |",
                  "|---|---|---|---|---|---|"]
        for m, st in rows.items():
            lines.append(f"| {m} | {_fmt(st['top1'])} | {_fmt(st['many'])} | "
                         f"{_fmt(st['medium'])} | {_fmt(st['few'])} | {st['per_seed_top1']} |")
        lines.append("")
    lines += ["Values: test accuracy in %. " + harness.legend(len(seeds)), "",
              "## Does ABC-Norm beat CE?", "", report["conclusion"], "",
              "| order / ABC-Norm | top-1 diff (points) | per seed | verdict | few diff | per seed | verdict |",
              "|---|---|---|---|---|---|---|"]
    for k, v in report["results"]["abcnorm_vs_ce"].items():
        t, f = v["top1"], v["few"]
        lines.append(f"| {k} | {t['diff_mean_points']:+.2f} | {t['diff_per_seed']} | {t['verdict']} "
                     f"| {f['diff_mean_points']:+.2f} | {f['diff_per_seed']} | {f['verdict']} |")
    lines += ["", "A difference counts as \"better\"/\"worse\" only when it has the same sign for "
              "every seed and exceeds the larger of the two sample stds over seeds.", "",
              "## Figures", "",
              "- `abcnorm_per_class_label.png`, `abcnorm_per_class_permutation.png`: per-class "
              "test accuracy (mean over seeds) against training images per class.",
              "- `abcnorm_confusion_ce.png`, `abcnorm_confusion_abcnorm.png`: confusion matrices "
              "(permuted order, seed 0).",
              f"- `abcnorm_gradcam.png`: Grad-CAM overlays, CE beside {report['gradcam']['abc']} "
              "(permuted order, seed 0), rarest classes first: "
              + "; ".join(f"{r['true']}: CE {r['ce_pred']}, ABC {r['abc_pred']}"
                          for r in report["gradcam"]["images"]), "",
              "## Limits", ""] + [f"- {x}" for x in report["limits"]] + [""]
    path.write_text("\n".join(lines))


def _stored_table_stats(table: dict[str, Any]) -> dict[str, Any]:
    """Stored tables without the harness's fields: ``std`` (already sample std, ddof=1) ->
    ``sd``, plus ``n``."""
    for rows in table.values():
        for st in rows.values():
            n = len(st.get("seeds", []))
            for k in ("top1", "many", "medium", "few"):
                if k in st and "std" in st[k]:
                    e = st[k]
                    e["sd"] = e.pop("std") if n > 1 else None
                    e["n"] = n
    return table


def render(path: Path, out: Path, argv: list[str] | None) -> int:
    """Re-render ``abcnorm.md`` from a stored ``abcnorm.json`` (no training)."""
    report = json.loads(path.read_text())
    _stored_table_stats(report["results"]["table"])
    report["rendered"] = {"provenance": harness.provenance(module=MODULE, args=argv),
                          "note": "tables re-rendered from the stored statistics (their std "
                                  "was already the sample std, ddof=1); runs not retrained"}
    write_json_atomic(out / "abcnorm.json", report)
    write_markdown(report, out / "abcnorm.md")
    print(f"[report] re-rendered {out / 'abcnorm.md'} from {path}", flush=True)
    return 0


def setup_text(cfg: dict[str, Any], results: list[dict[str, Any]], seeds: list[int],
               order_seed: int) -> dict[str, Any]:
    """The report's setup section, read from the resolved config of the runs."""
    d, m, t, o, lo = cfg["data"], cfg["model"], cfg["train"], cfg["optim"], cfg["loss"]
    counts = next((r["class_counts"] for r in results if r["order"] == "label"),
                  results[0]["class_counts"] if results else None)
    n_cls = len(counts) if counts else None
    many = sum(c > d["many_above"] for c in counts) if counts else "?"
    few = sum(c < d["few_below"] for c in counts) if counts else "?"
    med = (n_cls - many - few) if counts else "?"
    lams = [ov.split("=", 1)[1] for k in ABC_KEYS for ov in METHODS[k] if ov.startswith("loss.lam=")]
    aug = d["augment"]
    return {
        "data": f"Fashion-MNIST train made long-tailed: imbalance ratio {d['imbalance_ratio']}, "
                + (f"exponential profile n_r = {max(counts)} * {d['imbalance_ratio']}^(-r/"
                   f"{n_cls - 1}), " if counts else "exponential profile, ")
                + f"split seed {d['split_seed']} (the same images for every run); test: "
                + (f"the first {d['eval_limit']} test images" if d.get("eval_limit")
                   else "the full balanced test set"),
        "class_counts_label_order": counts,
        "groups_rule": f"many: > {d['many_above']} training images ({many} classes), medium: "
                       f"{d['few_below']}-{d['many_above']} ({med}), few: < {d['few_below']} "
                       f"({few})",
        "backbone": f"timm {m['backbone']} (pretrained=False), backbone_kwargs "
                    f"{m['backbone_kwargs']}, stem {m['stem']} (stride {m['stem_stride']}), "
                    f"GAP + linear head",
        "training": f"{t['epochs']} epochs"
                    + (f" (at most {t['max_steps']} steps)" if t.get("max_steps") else "")
                    + f", batch {t['batch_size']}, {o['name']}"
                    + (f" momentum {o['momentum']}" if o["name"] == "sgd" else "")
                    + f", lr {o['lr']}, weight decay {o['weight_decay']}, {o['schedule']} "
                      f"schedule with {o['warmup_steps']} warm-up steps, random crop (pad "
                      f"{aug['crop_pad']})" + (" + horizontal flip" if aug["hflip"] else "")
                    + f"; LDAM-DRW re-weights from epoch {lo['drw_start_epoch']} (0-based) "
                      f"with beta {lo['drw_beta']}",
        "seeds": seeds,
        "seed_meaning": "run.seed: weight init and batch order; the long-tailed split and "
                        f"the class permutation (order seed {order_seed}) are fixed",
        "losses": f"CE; PC ({1 - lo['pc_lam']:g} CE + {lo['pc_lam']:g} L_PC, {lo['pc_pairs']} "
                  f"pairs); MaxEnt (CE - {lo['maxent_gamma']:g} H); LA (tau {lo['la_tau']:g}); "
                  f"LDAM (max margin {lo['ldam_max_m']:g}, s {lo['ldam_s']:g}) + DRW; ABC-Norm "
                  f"tau {lo['tau']:g}, lambda {' / '.join(lams)}",
        "evaluation": "top-1 on the test set after the last epoch; group "
                      "accuracy = accuracy over the test images of the group's classes; "
                      "no model selection on the test set",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.experiments.abcnorm_report",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--orders", nargs="+", default=["label", "permutation"])
    p.add_argument("--order-seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="reports")
    p.add_argument("--artifacts", default=None)
    p.add_argument("--fresh", action="store_true", help="ignore cached per-run results")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                   metavar="METHOD", help="subset of: " + ", ".join(METHODS))
    p.add_argument("--max-steps", type=int, default=None, help="smoke tests only")
    p.add_argument("--eval-limit", type=int, default=None, help="smoke tests only")
    p.add_argument("--render", metavar="JSON",
                   help="re-render the report from this abcnorm.json (no training)")
    args = p.parse_args(argv)
    if args.render:
        return render(Path(args.render), Path(args.out), argv)
    prov = harness.provenance(module=MODULE, args=argv)

    t_start = time.time()
    work = artifacts_dir(args.artifacts) / "abcnorm_report"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    drw = max(0, args.epochs - max(1, args.epochs // 4))  # last quarter, as LDAM-DRW's 160/200
    common = [BACKBONE, f"train.epochs={args.epochs}", f"train.eval_every={args.epochs}",
              f"loss.drw_start_epoch={drw}", f"data.order_seed={args.order_seed}",
              "data.split_seed=0"]
    if args.max_steps:
        common.append(f"train.max_steps={args.max_steps}")
    if args.eval_limit:
        common.append(f"data.eval_limit={args.eval_limit}")
    jobs = []
    for order in args.orders:
        for seed in args.seeds:
            for m in args.methods:
                ov = METHODS[m]
                name = f"{order}_s{seed}_{_slug(m)}"
                jobs.append({"method": m, "order": order, "seed": seed, "threads": args.threads,
                             "root": str(work), "reuse": not args.fresh,
                             "overrides": common + ov + [f"data.class_order={order}",
                                                         f"run.seed={seed}", f"run.name={name}"]})
    results, todo = [], []
    for j in jobs:
        cached = None if args.fresh else harness.cached_run(
            "abcnorm", harness.resolve_config("abcnorm", j["overrides"]), work,
            need_checkpoint=True)
        if cached is not None:
            results.append(_result(j, cached))
        else:
            todo.append(j)
    print(f"[report] {len(jobs)} runs, {len(results)} cached, {len(todo)} to train", flush=True)
    if todo:
        with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as ex:
            futs = {ex.submit(_run_one, j): j for j in todo}
            for f in as_completed(futs):
                r = f.result()
                results.append(r)
                print(f"[report] {len(results)}/{len(jobs)} {r['order']} seed {r['seed']} "
                      f"{r['method']}: top1 {100 * r['metrics']['top1']:.1f} few "
                      f"{100 * r['metrics']['few']:.1f} ({r['wall_seconds']:.0f}s, "
                      f"{(time.time() - t_start) / 60:.1f} min total)", flush=True)

    from training.metrics.longtail import plot_confusion_matrix, plot_per_class_accuracy

    summary = summarise(results, args.orders)
    run_cfg = harness.resolve_config("abcnorm", jobs[0]["overrides"])  # settings as run
    orders_info = {}
    for order in args.orders:
        rs = [r for r in results if r["order"] == order]
        labels, counts = rs[0]["labels"], rs[0]["class_counts"]
        orders_info[order] = [labels[c] for c in rs[0]["order_ranks"]]
        curves = {}
        for m in ("CE", "LA", "LDAM-DRW", "ABC-Norm (lambda=0.3)"):
            acc = [r["per_class_accuracy"] for r in rs if r["method"] == m]
            if acc:
                curves[m] = np.mean(acc, axis=0).tolist()
        plot_per_class_accuracy(counts, curves, labels, out / f"abcnorm_per_class_{order}.png",
                                f"Fashion-MNIST-LT, ratio {run_cfg['data']['imbalance_ratio']}, "
                                f"{order} order "
                                f"(mean of {len(args.seeds)} seeds)")
    ref_order = "permutation" if "permutation" in args.orders else args.orders[0]
    pick = {r["method"]: r for r in results if r["order"] == ref_order
            and r["seed"] == args.seeds[0]}
    abc_name = "ABC-Norm (lambda=0.3)"
    labels = pick["CE"]["labels"]
    plot_confusion_matrix(np.asarray(pick["CE"]["confusion"]), labels,
                          out / "abcnorm_confusion_ce.png", f"CE, {ref_order} order, seed "
                          f"{args.seeds[0]}")
    plot_confusion_matrix(np.asarray(pick[abc_name]["confusion"]), labels,
                          out / "abcnorm_confusion_abcnorm.png",
                          f"{abc_name}, {ref_order} order, seed {args.seeds[0]}")
    cam_rows = gradcam_figure(pick["CE"]["checkpoint"], pick[abc_name]["checkpoint"],
                              "ABC-Norm", out / "abcnorm_gradcam.png")

    verdict_lines = []
    for k, v in summary["abcnorm_vs_ce"].items():
        verdict_lines.append(f"{k}: top-1 {v['top1']['diff_mean_points']:+.2f} points "
                             f"({v['top1']['verdict']}), few {v['few']['diff_mean_points']:+.2f} "
                             f"points ({v['few']['verdict']})")
    n_better = sum(v["top1"]["verdict"] == "better" for v in summary["abcnorm_vs_ce"].values())
    n_worse = sum(v["top1"]["verdict"] == "worse" for v in summary["abcnorm_vs_ce"].values())
    conclusion = (f"Overall top-1: ABC-Norm is better than CE in {n_better} of "
                  f"{len(summary['abcnorm_vs_ce'])} (order, lambda) settings, worse in {n_worse}, "
                  f"and not clearly different in the rest. " + " ".join(
                      f"[{x}]" for x in verdict_lines))
    if n_better == 0:
        conclusion = ("ABC-Norm does NOT clearly beat CE here. " + conclusion)
    elif n_better == len(summary["abcnorm_vs_ce"]):
        conclusion = ("ABC-Norm beats CE in every setting here. " + conclusion)
    else:
        conclusion = ("ABC-Norm beats CE only in some settings here. " + conclusion)
    report = {
        "command": prov["command"], "provenance": prov,
        "devices_used": harness.devices_used(
            {"device": r.get("device") or "", "device_name": r.get("device_name")}
            if r.get("device") else {} for r in results),
        "wall_minutes": round((time.time() - t_start) / 60, 1),
        "n_runs": len(jobs), "n_trained": len(todo), "workers": args.workers,
        "threads_per_run": args.threads,
        "config": run_cfg,
        "setup": setup_text(run_cfg, results, args.seeds, args.order_seed),
        "orders": orders_info,
        "results": summary,
        "conclusion": conclusion,
        "gradcam": {"ce": "CE", "abc": abc_name, "images": cam_rows},
        "limits": [
            f"Small scale: {len(results[0]['class_counts'])} classes, 28 px grayscale, a slim "
            f"{run_cfg['model']['backbone']} and {run_cfg['train']['epochs']} epochs; the thesis "
            f"trains ResNet-50 on iNaturalist 2018 for 90 epochs (CE 61.7 -> ABC-Norm 68.4). "
            f"These numbers do not test that claim directly.",
            "Fashion-MNIST is not fine-grained in the thesis' sense; ABC-Norm is meant to "
            "help when classes are both similar and long-tailed.",
            f"{len(args.seeds)} seed(s) give a rough spread only; hyper-parameters (lr, lambda, "
            f"gamma, LA tau, LDAM margin) were not tuned for this data set.",
            "cRT (classifier re-training) is implemented (stage: crt) but not part of this "
            "table to keep the report inside its time budget.",
        ],
    }
    write_json_atomic(out / "abcnorm.json", report)
    write_markdown(report, out / "abcnorm.md")
    print(f"[report] wrote {out / 'abcnorm.json'} and {out / 'abcnorm.md'} "
          f"in {report['wall_minutes']} min", flush=True)
    return 0


if __name__ == "__main__":
    from runtime.cli import run_main

    raise SystemExit(run_main(main))
