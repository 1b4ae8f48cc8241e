"""What a trained qMIL model answers for words it was never trained on: synonyms and controls.

Users type their own words ("pants", "purse"), not the class names the model was trained
with. For each class, this script asks the model the class name and a few other words on
the same balanced test bags of that class (seen classes: the "seen" bags; held-out
classes: bags of all ten classes), and reports bag accuracy, attention accuracy, and the
cosine similarity of each word to the class name in the word-vector space. Unrelated
control words ("car", "banana", ...) asked on the same bags show what a confident answer
to a nonsense query looks like.

    python -m training.experiments.qmil_synonyms [--run artifacts/runs/qmil] [--out reports]

Writes ``reports/qmil_synonyms.json`` and ``reports/qmil_synonyms.md`` (provenance from the
experiment harness, :mod:`training.experiments.harness`); ``--render JSON`` re-renders the
Markdown from a stored JSON without evaluating.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.artifacts import artifacts_dir, write_json_atomic
from runtime.words import UnknownWordError, get_word_vectors
from training.checkpoint import CheckpointError, load_checkpoint
from training.engine import CHECKPOINT_NAME, select_device
from training.experiments import harness
from training.methods.qmil import QMILMethod
from training.metrics.qmil import attention_accuracy, bag_accuracy
from training.zeroshot import predict_bags

SYNONYMS: dict[str, list[str]] = {
    "t-shirt": ["tee", "top", "jersey"],
    "trouser": ["trousers", "pants", "jeans", "slacks"],
    "pullover": ["sweater", "jumper", "sweatshirt"],
    "dress": ["gown", "frock", "skirt"],
    "coat": ["jacket", "overcoat", "parka"],
    "sandal": ["sandals", "slipper", "flip-flops"],
    "shirt": ["blouse", "shirts"],
    "sneaker": ["sneakers", "trainers", "shoe"],
    "bag": ["handbag", "purse", "backpack"],
    "ankle boot": ["boot", "boots"],
}
"""Words a user might type for each Fashion-MNIST class (checked against GloVe at run time)."""
MODULE = "training.experiments.qmil_synonyms"
CONTROLS: list[str] = ["car", "banana", "democracy", "piano"]
"""Unrelated words, asked on every class's bags."""


def _ask(method: QMILMethod, model: torch.nn.Module, bags, cls: int, vector: np.ndarray,
         device: torch.device) -> dict[str, float]:
    """Bag and attention accuracy when ``vector`` is asked in place of class ``cls``."""
    qv = method.query_vectors.clone()
    qv[cls] = torch.from_numpy(vector)
    pred = predict_bags(model, bags, method.split("test").images, qv, device,
                        batch_size=int(method.eval_cfg.get("batch_size", 64)))
    return {"bag_acc": bag_accuracy(pred["prob"], bags.label),
            "att_acc": attention_accuracy(pred["beta"], bags.instance_labels, bags.query,
                                          bags.label),
            "yes_rate": float((pred["prob"] > 0.5).mean())}


def run(run_dir: Path) -> dict[str, Any]:
    """Evaluate every class name, synonym and control word; returns the report dict."""
    ckpt = load_checkpoint(run_dir / CHECKPOINT_NAME)
    cfg = ckpt["config"]
    method = QMILMethod(cfg)
    model = method.build_model()
    model.load_state_dict(ckpt["model"])
    device = select_device("auto")
    model.to(device).eval()
    wv = get_word_vectors()
    rows: list[dict[str, Any]] = []
    for cls, name in enumerate(method.class_names):
        unseen = cls in method.unseen
        pool = method.eval_bags("zs_all" if unseen else "seen")
        bags = pool.subset(np.flatnonzero(pool.query == cls))
        base = wv.lookup(name)
        for word, kind in ([(name, "class name")] + [(w, "synonym") for w in SYNONYMS.get(name, [])]
                           + [(w, "control") for w in CONTROLS]):
            try:
                vec = wv.lookup(word)
            except UnknownWordError as exc:
                rows.append({"class": name, "word": word, "kind": kind, "unseen_class": unseen,
                             "error": str(exc)})
                continue
            rows.append({"class": name, "word": word, "kind": kind, "unseen_class": unseen,
                         "cosine_to_class": float(vec @ base), "n_bags": len(bags),
                         **_ask(method, model, bags, cls, vec, device)})
    return {"rows": rows, "config": cfg, "run": str(run_dir), "device": str(device),
            "checkpoint_git_commit": ckpt.get("git_commit"),
            "seen_classes": [method.class_names[c] for c in method.seen],
            "unseen_classes": [method.class_names[c] for c in method.unseen]}


def _mean(rows: list[dict[str, Any]], kind: str, unseen: bool, key: str) -> float:
    vals = [r[key] for r in rows if r["kind"] == kind and r["unseen_class"] == unseen and key in r]
    return float(np.mean(vals)) if vals else float("nan")


def markdown(res: dict[str, Any]) -> str:
    rows = res["rows"]
    if "provenance" in res:
        head = harness.provenance_lines(res["provenance"]) + [
            f"Model: `{res['run']}` (seed {res['config']['run']['seed']}, trained at commit "
            f"`{res.get('checkpoint_git_commit')}`); evaluated in {res['seconds']:.0f} s.  "]
    else:
        head = harness.rerendered_header(res, res.get("rendered", {}).get("provenance", {}),
                                     source="the stored per-word results") + [
            "", f"Model: `{res['run']}` (the default qMIL run; seed "
            f"{res['config']['run']['seed']}); {res['seconds']:.0f} s.  "]
    data = res["config"]["data"]
    lines = [
        "# qMIL: answers for words outside the training queries",
        "",
        *head,
        f"Bags: for each class, its {data['eval_bags_per_query']} balanced test bags (seen "
        f"classes: bags of the {len(res['seen_classes'])} seen "
        f"classes, eval_seed {data['eval_seed']}; held-out classes "
        f"{', '.join(res['unseen_classes'])}: bags of all "
        f"{len(res['seen_classes']) + len(res['unseen_classes'])} classes). Each word is asked in "
        f"place of the class name on exactly those bags; chance = 0.5.",
        "",
        "## Means",
        "",
        "| words | seen classes: bag acc | seen: yes-rate | held-out classes: bag acc | held-out: yes-rate |",
        "|---|---|---|---|---|",
    ]
    for kind in ("class name", "synonym", "control"):
        lines.append(f"| {kind} | {_mean(rows, kind, False, 'bag_acc'):.3f} | "
                     f"{_mean(rows, kind, False, 'yes_rate'):.3f} | "
                     f"{_mean(rows, kind, True, 'bag_acc'):.3f} | "
                     f"{_mean(rows, kind, True, 'yes_rate'):.3f} |")
    lines += ["", "Yes-rate = fraction of bags answered yes (half the bags are positive).", "",
              "## Every word", "",
              "| class | word | kind | cosine to class name | bag acc | att acc | yes-rate |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        cls = r["class"] + (" (held out)" if r["unseen_class"] else "")
        if "error" in r:
            lines.append(f"| {cls} | {r['word']} | {r['kind']} | not in GloVe | - | - | - |")
            continue
        lines.append(f"| {cls} | {r['word']} | {r['kind']} | {r['cosine_to_class']:.2f} | "
                     f"{r['bag_acc']:.3f} | {r['att_acc']:.3f} | {r['yes_rate']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.experiments.qmil_synonyms",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="run folder (default: <artifacts>/runs/qmil)")
    p.add_argument("--artifacts", default=None)
    p.add_argument("--out", default="reports")
    p.add_argument("--render", metavar="JSON",
                   help="re-render the Markdown from this qmil_synonyms.json (no evaluation)")
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.render:
        res = json.loads(Path(a.render).read_text())
        res["rendered"] = {"provenance": harness.provenance(module=MODULE, args=argv)}
        write_json_atomic(out / "qmil_synonyms.json", res)
        (out / "qmil_synonyms.md").write_text(markdown(res))
        print(f"[synonyms] re-rendered {out / 'qmil_synonyms.md'} from {a.render}")
        return 0
    torch.set_num_threads(1)
    t0 = time.time()
    run_dir = Path(a.run) if a.run else artifacts_dir(a.artifacts) / "runs" / "qmil"
    try:
        res = run(run_dir)
    except CheckpointError as exc:
        print(f"error: {exc} (train one: python -m training qmil)", file=sys.stderr)
        return 2
    prov = harness.provenance(res["device"], module=MODULE, args=argv)
    res.update(command=prov["command"], provenance=prov, seconds=time.time() - t0)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "qmil_synonyms.json", res)
    (out / "qmil_synonyms.md").write_text(markdown(res))
    print(f"[synonyms] wrote {out / 'qmil_synonyms.md'} in {res['seconds']:.0f} s")
    print(json.dumps({k: {"seen": _mean(res["rows"], k, False, "bag_acc"),
                          "held_out": _mean(res["rows"], k, True, "bag_acc")}
                      for k in ("class name", "synonym", "control")}, indent=1))
    return 0


if __name__ == "__main__":
    from runtime.cli import run_main

    raise SystemExit(run_main(main))
