"""qMIL experiment report on Fashion-MNIST (or digit) bags (class names as queries).

    python -m training.experiments.qmil_report [--seeds 0 1] [--epochs N] [--quick]

For each seed: trains qMIL (``training/configs/qmil.yaml``: 7 seen classes as queries, 3
held out) and the gated-attention MIL baseline (one binary model per seen class, trained on
exactly qMIL's bags for that class, for the same number of epochs, so the same number of
bag passes in total); evaluates both on the same balanced test-split bags (bag accuracy and
attention accuracy per query); evaluates qMIL zero-shot on the unseen queries, plainly and
with the iterative query process, on bags of all ten classes and on bags of unseen classes
only. For the first seed it also trains qMIL with other positive/negative bag ratios and,
unless ``--skip-ablation``, two variants: the thesis architecture with PyTorch's default
init (no LayerNorm on psi, phi) and the thesis-literal classifier that sees z only.
``--set data.dataset=digits`` runs it on digit bags (class words "zero".."nine").
Runs go through the experiment harness (:mod:`training.experiments.harness`): a run whose
finished checkpoint has the same config hash is loaded and evaluated, not retrained
(``--fresh`` retrains everything; ``--reuse``, the default, is kept for old commands).
Writes ``reports/qmil.json``, ``reports/qmil.md`` and ``reports/qmil_attention.png``;
checkpoints go to ``<artifacts>/qmil_report/``. ``--render reports/qmil.json`` re-renders
the Markdown (and the JSON's summary) from the stored per-seed numbers, without training.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.words import PACKAGE as WORD_VECTORS_PACKAGE
from runtime.artifacts import artifacts_dir, write_json_atomic
from training.engine import select_device
from training.experiments import harness
from training.methods.qmil import QMILMethod, _key
from training.metrics.qmil import (attention_accuracy, attention_chance, bag_accuracy,
                                   per_query)


ABLATIONS = (
    ("torchinit", "thesis architecture with PyTorch's default init and no LayerNorm on psi, phi",
     ["model.attn_init=torch", "model.embed_norm=false"]),
    ("zonly", "thesis-literal classifier on z only, no query input",
     ["model.classifier_query=none"]),
)


MODULE = "training.experiments.qmil_report"


def _train(cfg: dict[str, Any], root: Path, reuse: bool, reused: list[str],
           runs: list[harness.Run]) -> tuple[QMILMethod, torch.nn.Module, float]:
    """Train a run through the harness, or load the finished run with the same config hash
    (its name is then appended to ``reused``); returns the method, the model (eval mode) and
    the training seconds (NaN when reused)."""
    t0 = time.time()
    run = harness.train_run("qmil", cfg, root, reuse=reuse, need_checkpoint=True,
                            build=QMILMethod)
    runs.append(run)
    method = run.method_obj or QMILMethod(run.config)
    model = run.load_model()
    if run.reused:
        reused.append(run.name)
        return method, model, float("nan")
    return method, model, time.time() - t0


def _scores(method: QMILMethod, bags, pred: dict[str, np.ndarray], classes: list[int]
            ) -> dict[str, Any]:
    vals = {"beta": pred["beta"], "instance_labels": bags.instance_labels,
            "query": bags.query, "label": bags.label}
    acc = per_query({"prob": pred["prob"], "label": bags.label}, bags.query, bag_accuracy,
                    classes)
    att = per_query(vals, bags.query, attention_accuracy, classes)
    return {"bag_acc": bag_accuracy(pred["prob"], bags.label),
            "att_acc": attention_accuracy(**vals),
            "att_acc_predicted": attention_accuracy(**vals, prob=pred["prob"], over="predicted"),
            "per_query": {method.class_names[c]: {"bag_acc": acc[c], "att_acc": att[c]}
                          for c in classes}}


def _zero_shot(method: QMILMethod, model: torch.nn.Module, device: torch.device
               ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, label in (("zs_all", "seen_and_unseen"), ("zs_unseen", "unseen_only")):
        bags = method.eval_bags(kind)
        for iq in ((False, True) if kind == "zs_all" else (False,)):
            pred = method.predict(model, bags, device, iterative=iq)
            key = label + ("_iqp" if iq else "")
            acc = per_query({"prob": pred["prob"], "label": bags.label}, bags.query,
                            bag_accuracy, method.unseen)
            out[key] = {"bag_acc": bag_accuracy(pred["prob"], bags.label),
                        "per_query": {method.class_names[c]: acc[c] for c in method.unseen},
                        "n_bags": int(len(bags))}
            if iq:
                removed = bags.mask & ~pred["keep"]
                out[key]["removed_per_bag"] = float(removed.sum(1).mean())
                unseen_inst = np.isin(bags.instance_labels, method.unseen) & bags.mask
                out[key]["unseen_instances_removed_frac"] = float(
                    (removed & unseen_inst).sum() / max(1, unseen_inst.sum()))
    return out


def _attention_figure(method: QMILMethod, model: torch.nn.Module, device: torch.device,
                      path: Path, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.data.bags import sample_bags

    test = method.split("test")
    queries = method.seen + method.unseen
    bags = sample_bags(test.labels, queries, 1, instance_classes=None, pos_fraction=1.0,
                       seed=seed + 999, size_mean=8.0, size_std=1.0, min_size=6, max_size=10,)
    pred = method.predict(model, bags, device)
    kmax = int(bags.sizes.max())
    fig, axes = plt.subplots(len(queries), kmax, figsize=(kmax * 1.0, len(queries) * 1.25))
    for r, c in enumerate(queries):
        for k in range(kmax):
            ax = axes[r, k]
            ax.set_xticks([]), ax.set_yticks([])
            if not bags.mask[r, k]:
                ax.axis("off")
                continue
            b = float(pred["beta"][r, k])
            ax.imshow(test.images[bags.indices[r, k]], cmap="gray_r", vmin=0, vmax=255)
            hit = bags.instance_labels[r, k] == c
            for s in ax.spines.values():
                s.set_color("tab:red" if hit else "0.8")
                s.set_linewidth(0.5 + 4 * b)
            ax.set_title(f"{b:.2f}", fontsize=7, color="tab:red" if hit else "black")
        tag = "" if c in method.seen else " (unseen)"
        axes[r, 0].set_ylabel(f"{method.class_names[c]}{tag}\np={pred['prob'][r]:.2f}",
                              fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("qMIL attention beta per instance for one positive test bag per query "
                 "(red: instance of the queried class; plain query, no IQP)", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarise(per_seed: list[dict[str, Any]], seen_names: list[str], unseen_names: list[str]
              ) -> dict[str, Any]:
    """Mean and sample std over seeds (:func:`harness.seed_stats`) of every per-seed number."""

    def agg(path: list[str]) -> dict[str, Any]:
        vals = []
        for r in per_seed:
            v: Any = r
            for k in path:
                v = v[k]
            vals.append(float(v))
        return harness.seed_stats(vals)

    summary: dict[str, Any] = {"att_chance": agg(["att_chance"])["mean"]}
    for m in ("qmil", "gated"):
        summary[m] = {k: agg([m, k]) for k in ("bag_acc", "att_acc", "att_acc_predicted")}
        summary[m]["per_query"] = {n: {k: agg([m, "per_query", n, k]) for k in
                                       ("bag_acc", "att_acc")} for n in seen_names}
    summary["zero_shot"] = {}
    for key in ("seen_and_unseen", "seen_and_unseen_iqp", "unseen_only"):
        z = {"bag_acc": agg(["zero_shot", key, "bag_acc"]),
             "per_query": {u: agg(["zero_shot", key, "per_query", u]) for u in unseen_names}}
        if key.endswith("iqp"):
            z["removed_per_bag"] = agg(["zero_shot", key, "removed_per_bag"])
            z["unseen_instances_removed_frac"] = agg(["zero_shot", key,
                                                      "unseen_instances_removed_frac"])
        summary["zero_shot"][key] = z
    return summary


def _ms(e: dict[str, Any]) -> str:
    return harness.fmt_mean_sd(e, digits=3, label=False)


def _header(res: dict[str, Any]) -> list[str]:
    if "provenance" in res:
        return harness.provenance_lines(res["provenance"], res.get("devices_used")) + [
            f"Wall time {res['wall_seconds'] / 60:.1f} min (whole report).  "]
    return harness.rerendered_header(res, res.get("rendered", {}).get("provenance", {})) + [
        "", f"Torch (original run) {res.get('torch')}; wall time "
        f"{res['wall_seconds'] / 60:.1f} min (whole report).  "]


def _markdown(res: dict[str, Any]) -> str:
    s = res["summary"]
    names = res["seen_classes"]
    digits = res["config"]["data"].get("dataset") == "digits"
    title, source = (("digit", "scikit-learn's bundled 8x8 handwritten digits (1797 images, "
                      "resized to 28x28; fixed stratified 2/3 train, 1/3 test split)")
                     if digits else
                     ("Fashion-MNIST", "Fashion-MNIST (Debian dataset-fashion-mnist IDX files)"))
    c = res["config"]
    d, t, o, mo = c["data"], c["train"], c["optim"], c["model"]
    lines = [f"# qMIL on {title} bags", "", *_header(res),
        f"Data: {source}; training bags from the "
        f"train split, test bags from the test split. Seeds: {res['seeds']} (run seed = "
        f"training-bag seed; test bags fixed: eval_seed {d['eval_seed']}).  ",
        f"Queries: seen {', '.join(names)}; unseen (held out of training queries and bags): "
        f"{', '.join(res['unseen_classes'])}. Word vectors: GloVe 6B 50-d "
        f"({res.get('word_vectors', WORD_VECTORS_PACKAGE)}).  ",
        f"Bags: size ~ Normal({d['size_mean']:g}, {d['size_std']:g}) clipped to "
        f"[{d['min_size']}, {d['max_size']}]; {d['bags_per_query']} training bags per query, "
        f"positive fraction {d['pos_fraction']:g}; {d['eval_bags_per_query']} balanced test "
        f"bags per query. Training: {t['epochs']} epochs, batch {t['batch_size']} bags, "
        f"{o['name']} lr {o['lr']:g}, wd {o['weight_decay']:g}, lambda {c['loss']['lam']:g}, "
        f"tau {mo['temperature']:g}. The gated-attention baseline (Ilse et al. 2018, "
        f"M={mo['feat_dim']}, L={mo['attn_dim']}, same {mo['encoder']} encoder) is one "
        f"model per seen class, trained on exactly qMIL's bags of that class for the same epochs "
        f"(the same bag passes in total).",
        "",
        harness.legend(len(res["seeds"])),
        "",
        "## Seen queries (mean ± sample std over seeds)",
        "",
        "| query | qMIL bag acc | gated bag acc | qMIL att acc | gated att acc |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        q, g = s["qmil"]["per_query"][n], s["gated"]["per_query"][n]
        lines.append(f"| {n} | {_ms(q['bag_acc'])} | {_ms(g['bag_acc'])} | "
                     f"{_ms(q['att_acc'])} | {_ms(g['att_acc'])} |")
    q, g = s["qmil"], s["gated"]
    lines += [
        f"| **mean** | **{_ms(q['bag_acc'])}** | **{_ms(g['bag_acc'])}** | "
        f"**{_ms(q['att_acc'])}** | **{_ms(g['att_acc'])}** |",
        "",
        f"Attention accuracy = on positive test bags, the argmax-beta instance is of the queried "
        f"class. Chance (a uniformly random instance, same bags): {s['att_chance']:.3f} "
        f"(1 / mean bag size = {1 / d['size_mean']:.2f}). Over the bags *predicted* positive (the thesis' "
        f"wording): qMIL {q['att_acc_predicted']['mean']:.3f}, gated "
        f"{g['att_acc_predicted']['mean']:.3f}.",
        "",
        f"qMIL mean bag accuracy {'>=' if q['bag_acc']['mean'] >= g['bag_acc']['mean'] else '<'} "
        f"the baseline's ({q['bag_acc']['mean']:.3f} vs {g['bag_acc']['mean']:.3f}). Thesis "
        f"(MNIST-bags, single query, 10 runs): qMIL 92-98% vs gated attention 89-97%.",
        "",
        "## Zero-shot (unseen queries; balanced, chance = 0.5)",
        "",
        "Per-query columns: mean over seeds; total: mean ± sample std.",
        "",
        "| test bags | IQP | " + " | ".join(res["unseen_classes"]) + " | total |",
        "|---|---|" + "---|" * (len(res["unseen_classes"]) + 1),
    ]
    for key, bags_desc, iqp in (("seen_and_unseen", "all 10 classes", "no"),
                                ("seen_and_unseen_iqp", "all 10 classes", "yes"),
                                ("unseen_only", "unseen classes only", "no")):
        z = s["zero_shot"][key]
        lines.append(f"| {bags_desc} | {iqp} | " + " | ".join(
            f"{z['per_query'][u]['mean']:.3f}" for u in res["unseen_classes"]) +
            f" | {_ms(z['bag_acc'])} |")
    zi = s["zero_shot"]["seen_and_unseen_iqp"]
    lines += [
        "",
        f"IQP removed {zi['removed_per_bag']['mean']:.2f} instances per bag on average, "
        f"{100 * zi['unseen_instances_removed_frac']['mean']:.1f}% of the unseen-class instances "
        f"among them (those are lost to the final query). Thesis (CIFAR-10, 7 seen / 3 unseen): "
        f"60.2 plain, 61.7 with IQP, 68.3 on unseen-only bags.",
        "",
        "## Positive/negative training-bag ratio (seed "
        f"{res['seeds'][0]}, same test bags)",
        "",
        "| positive fraction | bag acc | att acc | zero-shot (all, plain) | zero-shot (all, IQP) |",
        "|---|---|---|---|---|",
    ]
    for r in res["ratio"]:
        lines.append(f"| {r['pos_fraction']:.2f} | {r['bag_acc']:.3f} | {r['att_acc']:.3f} | "
                     f"{r['zs_plain']:.3f} | {r['zs_iqp']:.3f} |")
    if res.get("ablation"):
        lines += ["", f"## Variants (seed {res['seeds'][0]}, same bags and epochs)", "",
                  "| variant | bag acc | att acc | zero-shot all (plain / IQP) | zero-shot unseen only |",
                  "|---|---|---|---|---|"]
        for a in res["ablation"]:
            lines.append(f"| {a['description']} (`{' '.join(a['overrides'])}`) | "
                         f"{a['bag_acc']:.3f} | {a['att_acc']:.3f} | {a['zs_plain']:.3f} / "
                         f"{a['zs_iqp']:.3f} | {a['zs_unseen_only']:.3f} |")
    lines += ["", "## Attention", "", "![attention](qmil_attention.png)", "",
              "Training times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in res["times"].items()),
              ""]
    if res.get("reused") and "provenance" not in res:  # a record without the harness's provenance
        lines += [f"Reused with `--reuse` (finished checkpoints of an earlier run of this script "
                  f"with exactly the same config, loaded and evaluated, not retrained; their "
                  f"time above is the evaluation only): {', '.join(res['reused'])}.", ""]
    elif res.get("reused"):
        lines += [f"Reused with `--reuse` (the default; `--fresh` retrains): finished runs of an "
                  f"earlier run of this script with the same config hash "
                  f"(training/experiments/harness.py), loaded and evaluated, not retrained; "
                  f"their time above is NaN (qMIL) or the evaluation only (gated): "
                  f"{', '.join(res['reused'])}.", ""]
    if res.get("appendix"):
        lines += [res["appendix"].rstrip(), ""]
    if res.get("query_vectors"):
        from training.experiments.qmil_zeroshot import markdown as query_vectors_section

        lines += query_vectors_section(res["query_vectors"])
    return "\n".join(lines)


def render(path: Path, out: Path, args: list[str] | None) -> int:
    """Re-render ``qmil.md`` (and the JSON's summary) from the per-seed numbers in ``path``."""
    text = path.read_text()
    res = json.loads(text)
    res["summary"] = summarise(res["per_seed"], res["seen_classes"], res["unseen_classes"])
    res["rendered"] = {"provenance": harness.provenance(module=MODULE, args=args),
                       "note": "summary recomputed from per_seed with the harness' seed_stats "
                               "(mean, sample std ddof=1, n); runs not retrained"}
    out.mkdir(parents=True, exist_ok=True)
    harness.write_json(out / "qmil.json", res, indent=harness.json_indent(text))
    (out / "qmil.md").write_text(_markdown(res))
    print(f"[report] re-rendered {out / 'qmil.md'} from {path}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None,
                   help="YAML over training/configs/qmil.yaml (default: that file alone)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--ratios", type=float, nargs="*", default=[0.25, 0.75],
                   help="extra positive fractions trained for the first seed")
    p.add_argument("--skip-ablation", action="store_true")
    p.add_argument("--reuse", action="store_true",
                   help="(the default) load finished runs with the same config hash")
    p.add_argument("--fresh", action="store_true", help="retrain every run")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (not a result)")
    p.add_argument("--out", default="reports")
    p.add_argument("--artifacts", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--render", metavar="JSON",
                   help="re-render the report from this qmil.json (no training)")
    args = p.parse_args(argv)
    if args.render:
        return render(Path(args.render), Path(args.out), argv)
    torch.set_num_threads(1)
    t_start = time.time()
    over = list(args.overrides)
    if args.epochs:
        over.append(f"train.epochs={args.epochs}")
    if args.quick:
        over += ["data.bags_per_query=40", "data.eval_bags_per_query=20", "train.epochs=1"]
    over += [f"train.eval_every={10**6}"]  # evaluate once, at the end

    def cfg_for(*extra: str) -> dict[str, Any]:
        return harness.resolve_config("qmil", [*over, *extra], config=args.config)

    base = cfg_for()
    prov = harness.provenance(module=MODULE, args=argv)
    dataset = str(base.get("data", {}).get("dataset", "fashion_mnist"))
    root = artifacts_dir(args.artifacts) / ("qmil_report" if dataset == "fashion_mnist"
                                            else f"qmil_report_{dataset}")
    device = select_device(str(base["run"].get("device", "auto")))
    reuse = not args.fresh
    reused: list[str] = []  # runs loaded, not trained
    runs: list[harness.Run] = []
    per_seed: list[dict[str, Any]] = []
    times: dict[str, float] = {}
    first_method = first_model = None
    for seed in args.seeds:
        seed_over = [f"run.seed={seed}", f"data.seed={seed}"]
        cfg = cfg_for(*seed_over, f"run.name=qmil_s{seed}")
        method, model, dt = _train(cfg, root, reuse, reused, runs)
        times[f"qmil_s{seed}"] = dt
        print(f"[report] qMIL seed {seed} trained in {dt:.0f}s", flush=True)
        bags = method.eval_bags("seen")
        q_scores = _scores(method, bags, method.predict(model, bags, device), method.seen)
        zs = _zero_shot(method, model, device)
        if first_method is None:
            first_method, first_model = method, model
        # gated-attention baseline, one model per seen class, on qMIL's bags of that class
        prob = np.zeros(len(bags), np.float32)
        beta = np.zeros(bags.mask.shape, np.float32)
        t0 = time.time()
        for c in method.seen:
            name = _key(method.class_names[c])
            gcfg = cfg_for(*seed_over, "model.name=gated_mil_lenet",
                           "model.classifier_query=none",
                           f"data.train_queries={json.dumps([method.class_names[c]])}",
                           f"run.name=gated_{name}_s{seed}")
            gm, gmodel, _ = _train(gcfg, root, reuse, reused, runs)
            rows = np.flatnonzero(bags.query == c)
            pred = gm.predict(gmodel, bags.subset(rows), device)
            prob[rows], beta[rows] = pred["prob"], pred["beta"]
        times[f"gated_s{seed}"] = time.time() - t0
        print(f"[report] gated baselines seed {seed} trained in {times[f'gated_s{seed}']:.0f}s",
              flush=True)
        g_scores = _scores(method, bags, {"prob": prob, "beta": beta}, method.seen)
        per_seed.append({"seed": seed, "qmil": q_scores, "gated": g_scores, "zero_shot": zs,
                         "att_chance": attention_chance(bags.instance_labels, bags.mask,
                                                        bags.query, bags.label)})
    assert first_method is not None and first_model is not None
    seed0 = args.seeds[0]
    seed0_over = [f"run.seed={seed0}", f"data.seed={seed0}"]
    ratio = []
    for frac in sorted(set(args.ratios) | {0.5}):
        if frac == 0.5:
            method, model = first_method, first_model
        else:
            cfg = cfg_for(*seed0_over, f"data.pos_fraction={frac}",
                          f"run.name=qmil_pos{frac}_s{seed0}")
            method, model, dt = _train(cfg, root, reuse, reused, runs)
            times[f"qmil_pos{frac}"] = dt
        bags = method.eval_bags("seen")
        sc = _scores(method, bags, method.predict(model, bags, device), method.seen)
        zs = _zero_shot(method, model, device)
        ratio.append({"pos_fraction": frac, "bag_acc": sc["bag_acc"], "att_acc": sc["att_acc"],
                      "zs_plain": zs["seen_and_unseen"]["bag_acc"],
                      "zs_iqp": zs["seen_and_unseen_iqp"]["bag_acc"]})
    ablation = []
    if not args.skip_ablation:
        for tag, desc, extra in ABLATIONS:
            cfg = cfg_for(*seed0_over, f"run.name=qmil_{tag}_s{seed0}", *extra)
            method, model, dt = _train(cfg, root, reuse, reused, runs)
            times[f"qmil_{tag}"] = dt
            bags = method.eval_bags("seen")
            sc = _scores(method, bags, method.predict(model, bags, device), method.seen)
            zs = _zero_shot(method, model, device)
            ablation.append({"variant": tag, "description": desc, "overrides": extra,
                             "seed": seed0, "bag_acc": sc["bag_acc"], "att_acc": sc["att_acc"],
                             "zs_plain": zs["seen_and_unseen"]["bag_acc"],
                             "zs_iqp": zs["seen_and_unseen_iqp"]["bag_acc"],
                             "zs_unseen_only": zs["unseen_only"]["bag_acc"]})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _attention_figure(first_method, first_model, device, out / "qmil_attention.png", seed0)

    seen_names = [first_method.class_names[c] for c in first_method.seen]
    unseen_names = [first_method.class_names[c] for c in first_method.unseen]
    res = {
        "command": prov["command"], "provenance": prov,
        "devices_used": harness.devices_used(r.provenance for r in runs),
        "runs": [{"name": r.name, "key": r.key, "reused": r.reused,
                  "device": r.provenance.get("device")} for r in runs],
        "seeds": args.seeds, "quick": bool(args.quick), "word_vectors": WORD_VECTORS_PACKAGE,
        "seen_classes": seen_names, "unseen_classes": unseen_names,
        "config": base, "summary": summarise(per_seed, seen_names, unseen_names),
        "per_seed": per_seed, "ratio": ratio, "ablation": ablation, "times": times,
        "reused": reused, "wall_seconds": time.time() - t_start,
    }
    write_json_atomic(out / "qmil.json", res)
    (out / "qmil.md").write_text(_markdown(res))
    print(f"[report] wrote {out / 'qmil.json'}, {out / 'qmil.md'} in "
          f"{res['wall_seconds'] / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    from runtime.cli import run_main

    raise SystemExit(run_main(main))
