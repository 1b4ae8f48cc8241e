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
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.artifacts import artifacts_dir, write_json_atomic
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
    acc = per_query({"prob": prob, "label": bags.label}, bags.query, bag_accuracy, classes)
    return {"bag_acc": bag_accuracy(prob, bags.label), "auc": auc(prob, bags.label),
            "per_query": {names[c]: acc[c] for c in classes}, "n_bags": int(len(bags))}


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
    load = [round(x, 2) for x in __import__("os").getloadavg()]
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
                times[name] = time.time() - t0
                val_ids = [method.class_names.index(c) for c in args.val_classes]
                validation[kind][f"{w:g}"] = validate(method, model, device, val_ids)
                print(f"[zeroshot] {name}: val {validation[kind][f'{w:g}']['score']:.3f}",
                      flush=True)
        chosen = {k: float(max(v, key=lambda w: v[w]["score"])) for k, v in validation.items()}
        # the weight chosen for the kind validated with most weights serves every kind
        weight = chosen[max(chosen, key=lambda k: len(validation[k]))]
    best = {k: validation[k][f"{chosen[k]:g}"]["score"] for k in validation}
    print(f"[zeroshot] chosen weights {chosen}; tested {weight:g}", flush=True)
    grid = _grid(args.test_runs or [f"{k}:0,{weight:g}" for k in KINDS], weight)

    test: list[dict[str, Any]] = []
    if args.stage == "all":
        for kind, weights in grid.items():
            for w in weights:
                for seed in args.seeds:
                    name = f"{kind}_w{_tag(w)}_s{seed}"
                    t0 = time.time()
                    method, model = _train(cfg_for(
                        f"run.seed={seed}", f"data.seed={seed}", f"run.name={name}",
                        f"model.word_vectors={kind}", f"loss.sc_weight={w}"),
                        root, reuse, runs)
                    times[name] = time.time() - t0
                    test.append({"kind": kind, "sc_weight": w, "seed": seed,
                                 **evaluate(method, model, device)})
                    print(f"[zeroshot] {name}: unseen plain "
                          f"{test[-1]['zs_all']['bag_acc']:.3f} iqp "
                          f"{test[-1]['zs_all_iqp']['bag_acc']:.3f}", flush=True)
    seen_names = [c for c in load_names(base) if c not in unseen]
    prov = harness.provenance(module=MODULE, args=argv)
    record = {
        "command": prov["command"], "provenance": prov,
        "devices_used": harness.devices_used(r.provenance for r in runs),
        "load_average_at_start": load, "seeds": args.seeds, "epochs": args.epochs,
        "dataset": dataset, "unseen_classes": unseen, "val_classes": list(args.val_classes),
        "val_runs": args.val_runs, "select_from": args.select_from,
        "validation": validation, "validation_best": best, "chosen": chosen,
        "tested_weight": weight, "packages": dict(KINDS),
        "nearest_seen": {k: nearest_seen(k, unseen, seen_names) for k in KINDS},
        "test": test, "times": times,
        "runs": [{"name": r.name, "key": r.key, "reused": r.reused} for r in runs],
        "wall_seconds": time.time() - t_start,
    }
    out = Path(args.out)
    path = out / "qmil.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    res["query_vectors"] = record
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, res)
    if "summary" in res:
        from training.experiments.qmil_report import _markdown

        (out / "qmil.md").write_text(_markdown(res))
    print(f"[zeroshot] wrote {path} in {record['wall_seconds'] / 60:.1f} min", flush=True)
    return 0


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
        out[kind] = sorted(set(out.get(kind, []) + vals))
    return out


def load_names(cfg: dict[str, Any]) -> list[str]:
    """The class names (query words) of the config's built-in dataset."""
    from training.methods.qmil import load_class_names

    return list(load_class_names(str(cfg["data"]["dataset"])))


if __name__ == "__main__":
    from runtime.cli import run_main

    raise SystemExit(run_main(main))
