"""Zero-shot qMIL by query vectors: GloVe vs MiniLM, with and without the semantic-consistency
term (``loss.sc_weight``), with and without iterative queries (IQP).

    python -m training.experiments.qmil_zeroshot [--seeds 0 1] [--epochs 3] [--val-weights 0 1 10]
    python -m training.experiments.qmil_zeroshot --set data.dataset=digits --epochs 6 \\
        --set data.bags_per_query=500 --set "data.unseen_classes=[seven, eight, nine]" \\
        --out reports/qmil_digits --select-from reports/qmil.json

1. Validation (Fashion-MNIST, seed of the first ``--seeds``; skipped with ``--select-from``):
   ``--val-classes`` (default pullover, sandal) are held out as well, the model trains on the
   other seen classes, and answers the held-out words on bags of training-split images that
   no training bag holds (instances of the training and held-out classes; never a test image,
   never an image of the reported unseen classes). Each word-vector kind's ``sc_weight`` is
   the one of ``--val-weights`` with the best mean of plain and IQP bag accuracy there.
2. Test: for each kind, weight 0 and the chosen weight, every seed: bag accuracy and AUC of
   the seen queries and of the unseen queries (``data.unseen_classes``: no image of theirs in
   any training bag, their words never a training query), on bags of all classes (plain and
   IQP) and of unseen classes only; per unseen word the accuracy and its closest seen words.

Results go to ``<out>/qmil.json`` (key ``query_vectors``; the rest of the file is kept) and
the Markdown is re-rendered (training/experiments/qmil_report.py). Runs go through the
experiment harness: a finished run with the same config hash is loaded, not retrained.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.artifacts import artifacts_dir
from runtime.words import KINDS, vectors
from training.data.bags import PAD, sample_bags
from training.engine import select_device
from training.experiments import harness
from training.methods.qmil import QMILMethod
from training.metrics.qmil import bag_accuracy, per_query
from training.zeroshot import predict_bags

MODULE = "training.experiments.qmil_zeroshot"
VAL_CLASSES = ("pullover", "sandal")


def auc(prob: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count one half); NaN with one class."""
    prob, label = np.asarray(prob, np.float64), np.asarray(label).astype(bool)
    pos, neg = prob[label], prob[~label]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    allv = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(allv))
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(allv))
    r[order] = ranks
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _score(prob: np.ndarray, bags, classes: list[int], names: list[str]) -> dict[str, Any]:
    """Bag accuracy and AUC overall; per query its accuracy, AUC and how often it answers
    yes on its positive and on its negative bags."""
    acc = per_query({"prob": prob, "label": bags.label}, bags.query, bag_accuracy, classes)
    label = np.asarray(bags.label).astype(bool)
    detail = {}
    for c in classes:
        rows = np.asarray(bags.query) == c
        yes = prob[rows] > 0.5
        detail[names[c]] = {"auc": auc(prob[rows], label[rows]),
                            "yes_on_positive": float(yes[label[rows]].mean()),
                            "yes_on_negative": float(yes[~label[rows]].mean())}
    return {"bag_acc": bag_accuracy(prob, bags.label), "auc": auc(prob, bags.label),
            "per_query": {names[c]: acc[c] for c in classes}, "detail": detail,
            "n_bags": int(len(bags))}


def evaluate(method: QMILMethod, model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
    """Seen and unseen (plain / IQP; all-class and unseen-only bags) accuracy and AUC."""
    names = list(method.class_names)
    bags = method.eval_bags("seen")
    out = {"seen": _score(method.predict(model, bags, device)["prob"], bags,
                          method.train_queries, names)}
    for kind in ("zs_all", "zs_unseen"):
        bags = method.eval_bags(kind)
        for iq in (False, True):
            pred = method.predict(model, bags, device, iterative=iq)
            out[kind + ("_iqp" if iq else "")] = _score(pred["prob"], bags, method.unseen, names)
            if iq:
                inst = np.isin(bags.instance_labels, method.unseen) & bags.mask
                out[kind + "_iqp"]["unseen_removed"] = float(
                    (inst & ~pred["keep"]).sum() / max(1, inst.sum()))
    return out


def validation_bags(method: QMILMethod, val_ids: list[int]):
    """Bags of training-split images no training bag holds, asking the held-out words
    ``val_ids``; instances of the training classes and of the held-out ones only."""
    train = method.split("train")
    labels = np.asarray(train.labels).copy()
    used = np.unique(method.train_bags().indices)
    labels[used[used != PAD]] = -1
    d = method.data_cfg
    return sample_bags(labels, val_ids, int(d["eval_bags_per_query"]),
                       instance_classes=sorted(method.seen + val_ids),
                       seed=int(d["eval_seed"]) + 11, **method._bag_kwargs())


def validate(method: QMILMethod, model: torch.nn.Module, device: torch.device,
             val_ids: list[int]) -> dict[str, Any]:
    """Plain and IQP bag accuracy and AUC on :func:`validation_bags`."""
    bags = validation_bags(method, val_ids)
    images = method.split("train").images
    out: dict[str, Any] = {}
    for iq in (False, True):
        pred = predict_bags(model, bags, images, method.query_vectors, device,
                            batch_size=int(method.eval_cfg["batch_size"]),
                            seen=method.seen if iq else None,
                            strong_rel=float(method.eval_cfg["strong_rel"]), spec=method.spec)
        out["iqp" if iq else "plain"] = _score(pred["prob"], bags, val_ids,
                                               list(method.class_names))
    out["score"] = (out["plain"]["bag_acc"] + out["iqp"]["bag_acc"]) / 2
    return out


def nearest_seen(kind: str, unseen: list[str], seen: list[str], k: int = 3
                 ) -> dict[str, list[list[Any]]]:
    """Per unseen word its ``k`` closest seen words by cosine of the word vectors."""
    wv = vectors(kind)
    s, u = wv.lookup_many(seen), wv.lookup_many(unseen)
    sims = u @ s.T
    return {w: [[seen[j], round(float(sims[i, j]), 3)] for j in np.argsort(-sims[i])[:k]]
            for i, w in enumerate(unseen)}


def confusers(method: QMILMethod, near: dict[str, list[list[Any]]]) -> dict[str, float]:
    """Per unseen word, the share of its negative all-class test bags that hold an image of
    its closest seen word's class (a query answered like that seen word says yes there)."""
    bags = method.eval_bags("zs_all")
    out = {}
    for u, top in near.items():
        c, q = method.class_names.index(top[0][0]), method.class_names.index(u)
        rows = (np.asarray(bags.query) == q) & ~np.asarray(bags.label).astype(bool)
        out[u] = float((bags.instance_labels[rows] == c).any(1).mean())
    return out


def _train(cfg: dict[str, Any], root: Path, reuse: bool, runs: list[harness.Run]
           ) -> tuple[QMILMethod, torch.nn.Module]:
    run = harness.train_run("qmil", cfg, root, reuse=reuse, need_checkpoint=True,
                            build=QMILMethod)
    runs.append(run)
    print(f"[zeroshot] {run.name}: {'reused' if run.reused else 'trained'}", flush=True)
    return run.method_obj or QMILMethod(run.config), run.load_model()


def _tag(w: float) -> str:
    return f"{w:g}".replace(".", "p")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=3, help="train.epochs")
    p.add_argument("--val-runs", nargs="+", default=["minilm:0,1,10", "glove:0"],
                   help="validation runs, KIND:W1,W2,...")
    p.add_argument("--test-runs", nargs="+", default=None,
                   help="test runs, KIND:W1,... (W may be 'chosen'); default: every kind "
                        "with weight 0 and the weight chosen on validation")
    p.add_argument("--val-classes", nargs="+", default=list(VAL_CLASSES))
    p.add_argument("--select-from", default=None,
                   help="a qmil.json whose validation chose the weights (no validation runs)")
    p.add_argument("--stage", choices=("all", "val"), default="all")
    p.add_argument("--fresh", action="store_true", help="retrain every run")
    p.add_argument("--out", default="reports")
    p.add_argument("--artifacts", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.time()
    load = [round(x, 2) for x in os.getloadavg()]
    prov = harness.provenance(module=MODULE, args=argv)  # its started_utc: now
    over = [*args.overrides, f"train.epochs={args.epochs}", "train.threads=1",
            f"train.eval_every={10**6}"]

    def cfg_for(*extra: str) -> dict[str, Any]:
        return harness.resolve_config("qmil", [*over, *extra])

    base = cfg_for()
    dataset = str(base["data"]["dataset"])
    root = artifacts_dir(args.artifacts) / f"qmil_zeroshot_{dataset}"
    device = select_device(str(base["run"].get("device", "auto")))
    reuse, runs = not args.fresh, []
    times: dict[str, float] = {}
    unseen = list(base["data"]["unseen_classes"])
    seed0 = args.seeds[0]

    validation: dict[str, Any] = {}
    if args.select_from:
        picked = json.loads(Path(args.select_from).read_text())["query_vectors"]
        chosen, weight = picked["chosen"], float(picked["tested_weight"])
    else:
        held = unseen + list(args.val_classes)
        for kind, weights in _grid(args.val_runs).items():
            validation[kind] = {}
            for w in weights:
                name = f"val_{kind}_w{_tag(w)}_s{seed0}"
                t0 = time.time()
                method, model = _train(cfg_for(
                    f"run.seed={seed0}", f"data.seed={seed0}", f"run.name={name}",
                    f"model.word_vectors={kind}", f"loss.sc_weight={w}",
                    f"data.unseen_classes={json.dumps(held)}"), root, reuse, runs)
                times[name] = runs[-1].wall_seconds
                val_ids = [method.class_names.index(c) for c in args.val_classes]
                validation[kind][f"{w:g}"] = validate(method, model, device, val_ids)
                print(f"[zeroshot] {name}: val {validation[kind][f'{w:g}']['score']:.3f}",
                      flush=True)
        chosen = {k: float(max(v, key=lambda w: v[w]["score"])) for k, v in validation.items()}
        # the weight chosen for the kind validated with most weights serves every kind
        weight = chosen[max(chosen, key=lambda k: len(validation[k]))]
    best = {k: validation[k][f"{chosen[k]:g}"]["score"] for k in validation}
    print(f"[zeroshot] chosen weights {chosen}; tested {weight:g}", flush=True)
    if args.test_runs:
        order = [(k, w) for k, ws in _grid(args.test_runs, weight).items() for w in ws]
    else:  # MiniLM with the chosen weight and the GloVe baseline first
        order = list(dict.fromkeys([("minilm", weight), ("glove", 0.0), ("minilm", 0.0),
                                    ("glove", weight)]))

    test: list[dict[str, Any]] = []
    if args.stage == "all":
        for seed in args.seeds:
            for kind, w in order:
                name = f"{kind}_w{_tag(w)}_s{seed}"
                t0 = time.time()
                method, model = _train(cfg_for(
                    f"run.seed={seed}", f"data.seed={seed}", f"run.name={name}",
                    f"model.word_vectors={kind}", f"loss.sc_weight={w}"), root, reuse, runs)
                times[name] = runs[-1].wall_seconds
                test.append({"kind": kind, "sc_weight": w, "seed": seed,
                             **evaluate(method, model, device)})
                print(f"[zeroshot] {name}: unseen plain {test[-1]['zs_all']['bag_acc']:.3f} "
                      f"iqp {test[-1]['zs_all_iqp']['bag_acc']:.3f}", flush=True)
    seen_names = [c for c in load_names(base) if c not in unseen]
    near = {k: nearest_seen(k, unseen, seen_names) for k in KINDS}
    last = method if test else None
    record = {
        "command": prov["command"], "provenance": prov,
        "devices_used": harness.devices_used(r.provenance for r in runs),
        "load_average_at_start": load, "seeds": args.seeds, "epochs": args.epochs,
        "dataset": dataset, "unseen_classes": unseen, "val_classes": list(args.val_classes),
        "val_runs": args.val_runs, "select_from": args.select_from,
        "validation": validation, "validation_best": best, "chosen": chosen,
        "tested_weight": weight, "packages": dict(KINDS),
        "nearest_seen": near,
        "negatives_with_nearest": ({k: confusers(last, near[k]) for k in KINDS}
                                   if last is not None else {}),
        "test": test, "times": times,
        "runs": [{"name": r.name, "key": r.key, "reused": r.reused} for r in runs],
        "wall_seconds": time.time() - t_start,
    }
    out = Path(args.out)
    path = out / "qmil.json"
    text = path.read_text() if path.is_file() else "{}"
    res = json.loads(text)
    trained = [r.name for r in runs if not r.reused]
    this = {"command": prov["command"], "started_utc": prov.get("started_utc"),
            "load_average_at_start": load, "wall_seconds": record["wall_seconds"],
            "trained": trained}
    old = res.get("query_vectors", {})
    if old and "invocations" not in old:  # a record of one invocation
        old["invocations"] = [{
            "command": old["command"], "started_utc": old["provenance"].get("started_utc"),
            "load_average_at_start": old["load_average_at_start"],
            "wall_seconds": old["wall_seconds"],
            "trained": [r["name"] for r in old["runs"] if not r["reused"]]}]
    # the invocations that trained the runs of this record (a rerun that reuses every run
    # keeps the record of the one that trained them)
    record["invocations"] = [h for h in old.get("invocations", [])
                             if set(h["trained"]) & {r.name for r in runs}
                             and old.get("dataset") == dataset] + ([this] if trained else [])
    res["query_vectors"] = record
    out.mkdir(parents=True, exist_ok=True)
    harness.write_json(path, res, indent=harness.json_indent(text) if res else 2)
    if "summary" in res:
        from training.experiments.qmil_report import _markdown

        (out / "qmil.md").write_text(_markdown(res))
    print(f"[zeroshot] wrote {path} in {record['wall_seconds'] / 60:.1f} min", flush=True)
    return 0


COLUMNS = (("seen", "seen"), ("zs_all", "unseen, all-class bags"),
           ("zs_all_iqp", "unseen, all-class bags, IQP"), ("zs_unseen", "unseen, unseen-only bags"),
           ("zs_unseen_iqp", "unseen, unseen-only bags, IQP"))
GOAL = 0.65  # unseen-word bag accuracy aimed at on Fashion-MNIST (all-class bags)


def _stats(rows: list[dict[str, Any]], *path: str) -> dict[str, Any]:
    vals = []
    for r in rows:
        v: Any = r
        for k in path:
            v = v[k]
        vals.append(float(v))
    return harness.seed_stats(vals)


def markdown(rec: dict[str, Any]) -> list[str]:
    """The report section of a ``query_vectors`` record."""
    ms = lambda st: harness.fmt_mean_sd(st, digits=3, label=False)  # noqa: E731
    prov = rec["provenance"]
    unseen = rec["unseen_classes"]
    lines = ["", "## Zero-shot by query vectors: GloVe vs MiniLM, semantic-consistency term, IQP",
             "", *harness.provenance_lines(prov, rec.get("devices_used")),
             f"Load average at the start (1, 5, 15 min; the 2 cores were shared with other "
             f"jobs): {', '.join(str(x) for x in rec['load_average_at_start'])}; wall time "
             f"{rec['wall_seconds'] / 60:.1f} min (cached runs loaded, not retrained: "
             f"{sum(r['reused'] for r in rec['runs'])} of {len(rec['runs'])}).  "]
    for h in rec.get("invocations", []):
        if h["trained"]:
            lines.append(f"Runs trained by `{h['command']}` started {h['started_utc']} UTC, "
                         f"load average {', '.join(str(x) for x in h['load_average_at_start'])}"
                         f", {h['wall_seconds'] / 60:.1f} min: {', '.join(h['trained'])}.  ")
    lines += [
             f"Training seconds per run (1 torch thread, when trained): " + ", ".join(
                 f"{k} {v:.0f}" for k, v in rec["times"].items()) + ".  ",
             f"Seeds {rec['seeds']}, {rec['epochs']} epochs, the data and model settings above. "
             f"Word vectors: glove = GloVe 6B 50-d ({rec['packages']['glove']}), minilm = "
             f"all-MiniLM-L6-v2 384-d sentence vectors ({rec['packages']['minilm']}). The term "
             f"(`loss.sc_weight`, docs/qmil.md; not in the thesis) keeps the cosine structure of "
             f"the projected queries phi(q) that of the word vectors, over the training queries "
             f"and 128 of 1000 frequent anchor words per step (no anchor names or contains an "
             f"unseen class). Unseen words: {', '.join(unseen)}: no image of theirs in any "
             f"training bag, never a training query (tests/test_qmil_query_vectors.py).", ""]
    if rec.get("validation"):
        lines += [f"### Validation (seed {rec['seeds'][0]}; chooses `loss.sc_weight`)", "",
                  f"{' and '.join(rec['val_classes'])} held out as well (never a training query "
                  f"or in a training bag); the model answers them on bags of training-split "
                  f"images no training bag holds (training classes and the held-out ones; no "
                  f"test image, no image of {', '.join(unseen)}). Score = mean of plain and IQP "
                  f"bag accuracy; chance 0.5.", "",
                  "| word vectors | sc_weight | bag acc | bag acc IQP | AUC | AUC IQP | score |",
                  "|---|---|---|---|---|---|---|"]
        for kind, by_w in rec["validation"].items():
            for w, v in by_w.items():
                lines.append(f"| {kind} | {w} | {v['plain']['bag_acc']:.3f} | "
                             f"{v['iqp']['bag_acc']:.3f} | {v['plain']['auc']:.3f} | "
                             f"{v['iqp']['auc']:.3f} | {v['score']:.3f} |")
        lines += ["", f"Chosen weight (best score): {rec['tested_weight']:g}.", ""]
    elif rec.get("select_from"):
        lines += [f"`loss.sc_weight` {rec['tested_weight']:g}: chosen on the Fashion-MNIST "
                  f"validation split ({rec['select_from']}), not on these bags.", ""]
    test = rec["test"]
    if not test:
        return lines
    lines += ["### Test bags (balanced; chance: bag accuracy 0.5, AUC 0.5)", "",
              "Bag accuracy / AUC, mean ± sample std over the seeds.", "",
              "| word vectors | sc_weight | " + " | ".join(t for _, t in COLUMNS) + " |",
              "|---|---|" + "---|" * len(COLUMNS)]
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in test:
        groups.setdefault((r["kind"], float(r["sc_weight"])), []).append(r)
    for (kind, w), rows in groups.items():
        lines.append(f"| {kind} | {w:g} | " + " | ".join(
            f"{ms(_stats(rows, c, 'bag_acc'))} / {ms(_stats(rows, c, 'auc'))}"
            for c, _ in COLUMNS) + " |")
    lines += ["", "Per unseen word on all-class bags, plain / IQP (mean over seeds): bag "
              "accuracy, AUC, and the share of its positive and of its negative bags answered "
              "yes; then its closest seen words by cosine of the word vectors:", "",
              "| word vectors | sc_weight | " + " | ".join(unseen) + " |",
              "|---|---|" + "---|" * len(unseen)]

    def cell(rows: list[dict[str, Any]], u: str) -> str:
        parts = []
        for c in ("zs_all", "zs_all_iqp"):
            txt = f"{_stats(rows, c, 'per_query', u)['mean']:.2f}"
            if all("detail" in r[c] for r in rows):
                d = {k: _stats(rows, c, "detail", u, k)["mean"]
                     for k in ("auc", "yes_on_positive", "yes_on_negative")}
                txt += (f" (AUC {d['auc']:.2f}; yes {d['yes_on_positive']:.2f} / "
                        f"{d['yes_on_negative']:.2f})")
            parts.append(txt)
        return " / ".join(parts)

    for (kind, w), rows in groups.items():
        lines.append(f"| {kind} | {w:g} | " + " | ".join(cell(rows, u) for u in unseen) + " |")
    for kind, near in rec["nearest_seen"].items():
        lines.append(f"| {kind}: closest seen | | " + " | ".join(
            ", ".join(f"{n} {c:.2f}" for n, c in near[u]) for u in unseen) + " |")
    for kind, share in rec.get("negatives_with_nearest", {}).items():
        lines.append(f"| {kind}: negatives holding the closest seen class | | " + " | ".join(
            f"{share[u]:.2f}" for u in unseen) + " |")
    if rec.get("negatives_with_nearest"):
        lines += ["", "A word answered like its closest seen word says yes on every negative bag "
                  "that holds that class: even with every positive bag right, its bag accuracy "
                  "is then at most 0.5 + 0.5 x (1 - that share) (the row above). Without an "
                  "image of the unseen class in training, nothing tells the model how its "
                  "images differ from those of its closest seen class (a sneaker from a sandal); "
                  "IQP removes the seen-looking images first, and with them a share of the "
                  "unseen-class ones."]
        rem = [r["zs_all_iqp"].get("unseen_removed") for r in test]
        if all(v is not None for v in rem):
            lines[-1] += f" IQP removed {np.mean(rem):.2f} of the unseen-class images."
    best = max(groups, key=lambda g: max(_stats(groups[g], c, "bag_acc")["mean"]
                                         for c in ("zs_all", "zs_all_iqp")))
    top = max(_stats(groups[best], c, "bag_acc")["mean"] for c in ("zs_all", "zs_all_iqp"))
    goal = (f"; the aim was >= {GOAL:.2f} on Fashion-MNIST: "
            f"{'reached' if top >= GOAL else 'not reached'}") \
        if rec["dataset"] == "fashion_mnist" else ""
    lines += ["", f"Best unseen-word bag accuracy on all-class bags: {top:.3f} "
              f"({best[0]}, sc_weight {best[1]:g}){goal}.", ""]
    return lines


def _grid(specs: list[str], chosen: float | None = None) -> dict[str, list[float]]:
    """``["minilm:0,1", "glove:0"]`` -> {"minilm": [0, 1], "glove": [0]} (a weight
    "chosen" reads ``chosen``)."""
    out: dict[str, list[float]] = {}
    for spec in specs:
        kind, _, ws = spec.partition(":")
        if kind not in KINDS or not ws:
            raise ValueError(f"a run is KIND:W1,W2 with KIND one of {', '.join(KINDS)}, "
                             f"got {spec!r}")
        vals = [float(chosen if w == "chosen" else w) for w in ws.split(",")]
        out[kind] = list(dict.fromkeys(out.get(kind, []) + vals))  # in the order given
    return out


def load_names(cfg: dict[str, Any]) -> list[str]:
    """The class names (query words) of the config's built-in dataset."""
    from training.methods.qmil import load_class_names

    return list(load_class_names(str(cfg["data"]["dataset"])))


if __name__ == "__main__":
    from runtime.cli import run_main

    raise SystemExit(run_main(main))
