"""Model cards of the shipped models, generated from their run summaries (never typed).

    python -m export.model_cards [--artifacts DIR] [--out docs/model_cards.md]

For every default run of every registered method (what ``python -m app`` builds and
serves), reads ``<artifacts>/runs/<run>/summary.json`` and ``config.yaml`` and writes one
card: what was trained on what, with which budget, the measured test metrics, training
time and device as the run recorded them, and the method's limits. The file names the
command, commit and machine that generated it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from methods import get_method, served_runs
from runtime.manifest import read_manifest, trained_on
from runtime.artifacts import artifacts_dir, atomic_path
from training.data.sources import USER_FORMATS, with_user_defaults
from training.verdict import describe

ORDER_HEADS = {
    "rank": "rank - the thesis: the edited components by decreasing fused probability",
    "slots": "slots - parallel slot order head (not in the thesis): S slot queries name each "
             "step's edit in one pass (the method's documentation, \"Parallel order head\")",
    "slots_raw": "slots_raw - parallel slot order head (not in the thesis) that also attends "
                 "to the tokens before their l2 normalisation",
    "autoregressive": "autoregressive - a decoder that predicts the edits step by step"}
"""What the card says of a sequence model's ``extra.order_head``."""
SHOWN_CONFIG = ("train.epochs", "train.batch_size", "optim.name", "optim.lr", "run.seed")


def _get(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def trust_lines(entry: dict[str, Any] | None) -> list[str]:
    """The domain check and the calibration of the exported model (its manifest entry)."""
    if not entry:
        return ["", "Not exported: no domain check or calibration recorded."]
    out = [""]
    d = entry.get("domain")
    out.append(f"Domain check: {d['dim']}-d features ({', '.join(d['features'])}), "
               f"{d['classes']} class mean(s), threshold {d['threshold']:.4g} = the "
               f"{d['percentile']:g}th percentile (classes weighted equally) of "
               f"{d['n_held_out']} {d.get('threshold_from', 'held-out training images')}; "
               f"fitted on {d['n_fit']} "
               f"(docs/domain.md)." if d else "Domain check: none for this model.")
    if d and d.get("unit") == "instance":
        out[-1] += (f" It judges every image of a bag; a bag is in domain when at least "
                    f"{d['bag_min_in_domain']:g} of its images are.")
    c = entry.get("calibration")
    unit = "bags" if c and "bags" in str(c.get("fitted_on")) else "images"
    out.append(f"Calibration: temperature {c['temperature']:.3f} ({c['kind']}), fitted on "
               f"{c['fitted_on']}; ECE (15 bins) on {c['n_test']} test {unit} "
               f"{c['ece_test_before']:.4f} before, {c['ece_test_after']:.4f} after; on the "
               f"validation {unit} {c['ece_val_before']:.4f} -> {c['ece_val_after']:.4f} "
               f"(reports/calibration.md)." if c else "Calibration: not calibrated "
               "(probabilities as the model gives them; docs/domain.md says which models "
               "are not, and why).")
    return out


# the limits of a run imported from published weights (export.published)
PUBLISHED_LIMITS = ("the authors' weights, imported as published: their accuracy is what they "
                    "report on their own test split (above); nothing about them was measured "
                    "here, and how they do on other photographs is unknown. Faces are cropped "
                    "with the alignment of the authors' training images (docs/published.md).")


def card(run: str, desc: Any, summary: dict[str, Any], cfg: dict[str, Any],
         entry: dict[str, Any] | None = None) -> list[str]:
    """The Markdown lines of one run's card."""
    lines = [f"## `{run}` - {desc.title} (thesis chapter {desc.chapter})", ""]
    data, model = cfg.get("data", {}), cfg.get("model", {})
    source = ((entry or {}).get("extra", {}).get("data_source") or {}).get("format")
    replaced: dict[str, tuple[Any, Any]] = {}
    if source in USER_FORMATS:  # a user's data: the values its run used (``user_data``)
        if isinstance(data, dict) and isinstance(data.get("user_data"), dict):
            data = with_user_defaults(desc.name, data)
        if isinstance(model, dict) and isinstance(model.get("user_data"), dict):
            used = with_user_defaults(desc.name, model, section="model")
            replaced = {k: (model.get(k), used[k]) for k in model["user_data"]
                        if used.get(k) != model.get(k)}
    pub = summary.get("published")  # weights imported by python -m export.published
    if not pub:
        lines.append(f"- **Config**: `training/configs/{desc.config_file}`"
                     + "".join(f", {k} {_get(cfg, k)}" for k in SHOWN_CONFIG
                               if _get(cfg, k) is not None))
    if isinstance(data, dict):
        shown = {k: v for k, v in data.items() if not isinstance(v, dict) and v is not None}
        lines.append("- **Data**: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    if replaced:
        lines.append("- **Model on a user's data** (`model.user_data`): " + ", ".join(
            f"{k} {v} (the default data's: {d})" for k, (d, v) in replaced.items()))
    if pub:
        theirs = pub.get("reported_by_authors", {})
        lines.append(f"- **Published weights**: `{pub['file']}` (sha256 {pub['sha256'][:12]}), "
                     f"trained by the authors on {pub['trained_on']}; not trained here")
        lines.append("- **Reported by the authors** (their numbers, not measured here): "
                     + ", ".join(f"{k} {v}" for k, v in theirs.items()
                                 if isinstance(v, (int, float))) + f" ({theirs.get('source', '')})")
    else:
        lines.append(f"- **Trained**: {summary.get('steps')} steps in "
                     f"{summary.get('train_seconds')} s on {summary.get('device')} "
                     f"({summary.get('world_size', 1)} process(es), "
                     f"{summary.get('precision', 'float32')} forward), "
                     f"commit `{str(summary.get('git_commit', '?'))[:8]}`")
    extra = (entry or {}).get("extra", {})
    if extra.get("order_head"):
        lines.append(f"- **Order head**: {ORDER_HEADS.get(extra['order_head'], extra['order_head'])}")
    if extra.get("group_thresholds"):
        g = extra["group_thresholds"]
        lines.append(f"- **Class groups**: many > {g['many_above']}, few < {g['few_below']} "
                     f"training images, medium otherwise ("
                     f"{extra.get('group_rule', 'set in the config')})")
    if summary.get("pretrained"):
        lines.append(f"- **Starting weights**: {summary['pretrained']}")
    learned = summary.get("learned")
    if learned:
        said = ("NO - at_chance: this model did not learn, its answers are not meaningful"
                if learned["at_chance"] else "yes, clearly above chance")
        lines.append(f"- **Learned**: {said}; held-out {describe(learned)}")
    metrics = summary.get("metrics", {})
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
              for k, v in metrics.items()]
    if pub and not metrics:
        lines.append("| (none measured here) | - |")
    lines += trust_lines(entry)
    limits = (PUBLISHED_LIMITS if pub else
              desc.limits_for(data if isinstance(data, dict) else None, trained_on(entry)))
    lines += ["", f"Limits: {limits} Method documentation: `{desc.docs}`.", ""]
    return lines


def build_cards(artifacts: Path, argv: list[str]) -> str:
    """The whole file's text; a missing run is named, not skipped silently."""
    out = ["# Model cards of the default models", "",
           f"Generated by `{shlex.join(['python', '-m', 'export.model_cards', *argv])}` at "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()} "
           f"({os.cpu_count()} cores, {platform.platform()}), from each run's `summary.json`.",
           "Every number below is read from the run; none is typed by hand.", ""]
    try:
        models = read_manifest(artifacts)["models"]
    except Exception:  # noqa: BLE001 - no manifest yet: cards without export facts
        models = {}
    for desc, r in served_runs():
        rdir = artifacts / "runs" / r.run
        if not (rdir / "summary.json").is_file():
            why = (f"An optional run, not in the default build: `python -m app --build-only "
                   f"--only {r.run}` builds it." if r.optional else f"No {rdir / 'summary.json'}.")
            out += [f"## `{r.run}` - not built", "", why, ""]
            continue
        summary = json.loads((rdir / "summary.json").read_text())
        cfg = yaml.safe_load((rdir / "config.yaml").read_text()) if (rdir / "config.yaml").is_file() else {}
        out += card(r.run, desc, summary, cfg or {}, models.get(r.run))
    for rdir in sorted((artifacts / "runs").glob("*/published.json")):  # imported runs
        summary = json.loads((rdir.parent / "summary.json").read_text())
        cfg = yaml.safe_load((rdir.parent / "config.yaml").read_text()) or {}
        out += card(rdir.parent.name, get_method(summary["method"]), summary, cfg,
                    models.get(rdir.parent.name))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m export.model_cards", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    p.add_argument("--out", default="docs/model_cards.md")
    args = p.parse_args(argv)
    art = artifacts_dir(args.artifacts)
    if not (art / "runs").is_dir():
        raise FileNotFoundError(f"no runs under {art}: build the default models first "
                                f"(python -m app --build-only)")
    text = build_cards(art, argv)
    with atomic_path(args.out) as tmp:
        tmp.write_text(text)
    print(f"[model cards] wrote {args.out}")
    return 0


if __name__ == "__main__":
    from runtime.cli import run_main

    raise SystemExit(run_main(main))
