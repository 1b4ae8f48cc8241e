"""Calibration of the served models, from their manifest entries: ECE before / after the
temperature fitted at export, and reliability diagrams.

    python -m export.calibration_report --artifacts DIR [--out reports/calibration]
        [--real-photos data/real_photos] [--n 200]

Writes ``<out>.md`` and one ``<out>_<model>.png`` per calibrated model (confidence against
accuracy per bin on the test images, before and after). Those numbers are read from the
manifest, which the export measured (:mod:`export.calibration`). With the real-photograph
set (``scripts/real_photos.py``, its held-out half) it also measures how the served,
temperature-scaled probabilities behave off-domain: on ``--n`` of the run's test images, on
real face crops and on whole photographs, the mean top probability, the fraction of answers
at 0.9 or more, for face models the fraction called "manipulated", and the fraction the
domain check flags.
"""
from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from pathlib import Path

from typing import Any

import numpy as np

from runtime.artifacts import artifacts_dir, atomic_path
from runtime.manifest import read_manifest

OFF_DOMAIN_BATCH = 64


def diagram(name: str, rel: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=100)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect")
    for key, colour in (("before", "#c0392b"), ("after", "#2471a3")):
        pts = rel[key]
        ax.plot([p["confidence"] for p in pts], [p["accuracy"] for p in pts], "o-", ms=3,
                color=colour, label=f"{key} temperature scaling")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
           title=f"{name}: reliability (test)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def served_answers(model: Any, images: list[Any]) -> dict[str, float]:
    """What the served model answers on ``images`` (single-image models with ``logits``):
    probabilities after the export's temperature, and the domain check's verdicts."""
    from export.calibration import probabilities
    from export.domain import _load_image

    cal = model.entry["calibration"]
    probs, flagged = [], []
    for i in range(0, len(images), OFF_DOMAIN_BATCH):
        x = model.prepare([_load_image(a) for a in images[i:i + OFF_DOMAIN_BATCH]])
        out = model.run({"image": x})
        probs.append(probabilities(out["logits"], cal["temperature"], cal["kind"]))
        dom = model.domain_check(out, x)
        flagged += [not d["in_domain"] for d in dom] if dom else []
    p = np.concatenate(probs)
    top = p.max(axis=1)
    row = {"n": len(p), "mean_top": float(top.mean()),
           "top_at_least_0.9": float(np.mean(top >= 0.9)),
           "flagged": float(np.mean(flagged)) if flagged else float("nan")}
    if cal["kind"] == "sigmoid":  # face components: any above the model's threshold
        thr = float(model.entry.get("extra", {}).get("threshold", 0.5))
        row["manipulated"] = float(np.mean(top > thr))
    return row


def off_domain(artifacts: Path, models: dict[str, Any], real: Path, n: int) -> list[str]:
    """Markdown rows: each calibrated single-image model on its test images and on the
    real-photograph set's held-out half."""
    from export.domain_report import real_photos, test_images
    from runtime.engine import Engine

    sets, _ = real_photos(real, "held_out")
    engine = Engine(artifacts)
    lines = ["", "## Off-domain: real photographs (held-out half of `scripts/real_photos.py`)",
             "", f"Served probabilities (temperature applied) on {n} of each run's test images "
             "and on the real-photograph set; `manipulated`: any face component above the "
             "model's threshold; `flagged`: the domain check's verdict (reports/domain.md). A "
             "confident answer on an image the check flags is not evidence.", "",
             "| model | images | n | mean top probability | top >= 0.9 | manipulated | flagged |",
             "|---|---|---|---|---|---|---|"]
    for name, e in models.items():
        if not e.get("calibration") or "image" not in [i["name"] for i in e.get("inputs", [])]:
            continue
        model = engine.get(name)
        groups = {"own test images": test_images(artifacts, e, n), **sets}
        for label, imgs in groups.items():
            r = served_answers(model, imgs)
            man = f"{r['manipulated']:.0%}" if "manipulated" in r else "-"
            lines.append(f"| `{name}` | {label} | {r['n']} | {r['mean_top']:.3f} | "
                         f"{r['top_at_least_0.9']:.0%} | {man} | {r['flagged']:.0%} |")
        print(f"[calibration] {name}: off-domain answers measured", flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m export.calibration_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    p.add_argument("--out", default="reports/calibration")
    p.add_argument("--real-photos", default="data/real_photos",
                   help="the real-photograph set (scripts/real_photos.py); 'none': leave out")
    p.add_argument("--n", type=int, default=200, help="test images per model, off-domain table")
    p.add_argument("--off-domain-only", action="store_true",
                   help="write only the off-domain table (no manifest table, no diagrams)")
    args = p.parse_args(argv)
    art = artifacts_dir(args.artifacts)
    models = read_manifest(art)["models"]
    real = None if args.real_photos == "none" else Path(args.real_photos)
    if real is not None and not (real / "sources.json").is_file():
        p.error(f"--real-photos {real}: no sources.json; build the set with "
                f"`python -m scripts.real_photos --mirrors DIR --out {real}` or pass none")
    if args.off_domain_only:
        if real is None:
            p.error("--off-domain-only needs --real-photos")
        lines = ["# Calibration off-domain: served probabilities on real photographs", "",
                 f"Command: `{shlex.join(['python', '-m', 'export.calibration_report', *argv])}`"
                 f" ({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}); models: "
                 + ", ".join(f"`{e['version']}`" for e in models.values()
                             if e.get("calibration")) + "."]
        lines += off_domain(art, models, real, args.n) + [""]
        with atomic_path(args.out + ".md") as tmp:
            Path(tmp).write_text("\n".join(lines) + "\n")
        print(f"[calibration] wrote {args.out}.md")
        return 0
    lines = ["# Calibration: temperature scaling fitted at export", "",
             f"Command: `{shlex.join(['python', '-m', 'export.calibration_report', *argv])}` "
             f"({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}); numbers read from each "
             "model's manifest entry (`calibration`), measured by its export: the temperature is "
             "fitted on validation images, ECE (15 bins) measured on validation and test images. "
             "Face models: one temperature shared by the components (export/calibration.py "
             "says why); ECE over every (image, component) decision.", "",
             "| model | version | kind | T | validation ECE before -> after | test ECE before -> after | n val / test |",
             "|---|---|---|---|---|---|---|"]
    for name, e in models.items():
        c = e.get("calibration")
        if not c:
            continue
        lines.append(f"| `{name}` | `{e['version']}` | {c['kind']} | {c['temperature']:.3f} | "
                     f"{c['ece_val_before']:.4f} -> {c['ece_val_after']:.4f} | "
                     f"{c['ece_test_before']:.4f} -> {c['ece_test_after']:.4f} | "
                     f"{c['n_val']} / {c['n_test']} |")
        png = Path(f"{args.out}_{name}.png")
        diagram(name, c["reliability_test"], png)
    lines += [""] + [f"![{n}]({Path(args.out).name}_{n}.png)" for n, e in models.items()
                     if e.get("calibration")]
    if real is not None:
        lines += off_domain(art, models, real, args.n)
    lines += [""]
    text = "\n".join(lines)
    with atomic_path(args.out + ".md") as tmp:
        Path(tmp).write_text(text + "\n")
    print(f"[calibration] wrote {args.out}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
