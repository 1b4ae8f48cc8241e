"""Calibration of the served models, from their manifest entries: ECE before / after the
temperature fitted at export, and reliability diagrams.

    python -m export.calibration_report --artifacts DIR [--out reports/calibration]

Writes ``<out>.md`` and one ``<out>_<model>.png`` per calibrated model (confidence against
accuracy per bin on the test images, before and after). Every number is read from the
manifest, which the export measured (:mod:`export.calibration`).
"""
from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from pathlib import Path

from runtime.artifacts import artifacts_dir, atomic_path
from runtime.manifest import read_manifest


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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m export.calibration_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    p.add_argument("--out", default="reports/calibration")
    args = p.parse_args(argv)
    models = read_manifest(artifacts_dir(args.artifacts))["models"]
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
                     if e.get("calibration")] + [""]
    text = "\n".join(lines)
    with atomic_path(args.out + ".md") as tmp:
        Path(tmp).write_text(text + "\n")
    print(f"[calibration] wrote {args.out}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
