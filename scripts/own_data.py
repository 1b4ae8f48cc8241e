"""Folders that are not the test fixture, to measure the "your own images" defaults.

    python -m scripts.own_data make OUT [--per-class 150] [--test-per-class 50] [--seed 0]
    python -m scripts.own_data run OUT --out reports/own_data.json [--only KIND/METHOD ...]
    python -m scripts.own_data table reports/own_data.json     # the Markdown table

``make`` writes four kinds of 96 px colour ImageFolders, each ``OUT/<kind>/{train,test}/
<class>/*.png`` (``--per-class`` training and ``--test-per-class`` test images per class) and
a long-tailed copy ``OUT/<kind>_lt`` (the same test split; training counts falling
geometrically from ``--per-class`` to a tenth of it over the classes):

- ``shapes``: six shapes (circle, square, triangle, star, cross, ring), each in a random
  colour and size, on a textured background (stripes + noise) with two small distractor
  shapes of other kinds;
- ``fashion``: six Fashion-MNIST classes (Debian's dataset-fashion-mnist), each garment
  tinted in a random colour, scaled and placed at random on a textured background;
- ``digits``: scikit-learn's 8x8 digits 0-5, upscaled, coloured and placed the same way;
- ``textures``: random rotated, scaled crops of six scikit-image pictures (brick, grass,
  gravel, moon, page, coins), tinted.

``run`` trains each method on each folder with its defaults for a user's folder (ABC-Norm
on ``<kind>_lt``, qMIL and DCL on ``<kind>``) and writes every command, its summary's
held-out metric, training time and starting weights, with the machine, to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from runtime.machine import cpu_name

SIZE = 96
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
FASHION = {0: "t-shirt", 1: "trouser", 2: "pullover", 5: "sandal", 8: "bag", 9: "ankle boot"}
TEXTURES = ("brick", "grass", "gravel", "moon", "page", "coins")


def _background(rng: np.random.Generator) -> Image.Image:
    """A textured colour background: oriented stripes of a random period plus noise."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    theta, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
    stripes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)
    base = rng.uniform(60, 190, 3)
    img = base[None, None] + 35 * stripes[..., None] + rng.normal(0, 18, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _shape(d: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
           colour: tuple[int, int, int]) -> None:
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=max(2, int(r / 3)))
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "star":
        d.polygon([(cx + (r if k % 2 == 0 else r / 2.5) * np.cos(np.pi * k / 5 - np.pi / 2),
                    cy + (r if k % 2 == 0 else r / 2.5) * np.sin(np.pi * k / 5 - np.pi / 2))
                   for k in range(10)], fill=colour)
    else:
        w = r / 3
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))  # type: ignore[return-value]


def shapes_image(cls: int, rng: np.random.Generator) -> np.ndarray:
    """Class ``cls``'s shape, random colour and size, with two small distractors."""
    img = _background(rng)
    d = ImageDraw.Draw(img)
    for _ in range(2):
        other = SHAPES[int(rng.choice([k for k in range(len(SHAPES)) if k != cls]))]
        r = rng.uniform(0.06, 0.1) * SIZE
        _shape(d, other, *rng.uniform(r, SIZE - r, 2), r, _colour(rng))
    r = rng.uniform(0.18, 0.32) * SIZE
    _shape(d, SHAPES[cls], *rng.uniform(r, SIZE - r, 2), r, _colour(rng))
    return np.asarray(img)


def _paste(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A gray object (uint8, dark background) tinted, scaled and pasted on a background."""
    side = int(rng.uniform(0.55, 0.85) * SIZE)
    obj = Image.fromarray(gray).resize((side, side), Image.BILINEAR)
    alpha = np.asarray(obj, dtype=np.float32)[..., None] / 255.0
    tint = rng.uniform(0.3, 1.0, 3) * 255
    bg = _background(rng)
    x, y = rng.integers(0, SIZE - side + 1, 2)
    arr = np.asarray(bg, dtype=np.float32)
    patch = arr[y:y + side, x:x + side]
    arr[y:y + side, x:x + side] = patch * (1 - alpha) + tint * alpha
    return np.clip(arr, 0, 255).astype(np.uint8)


def texture_image(source: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random rotated, scaled crop of ``source`` (gray), tinted."""
    h, w = source.shape
    side = int(rng.uniform(0.25, 0.6) * min(h, w))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = Image.fromarray(source[y:y + side, x:x + side]).rotate(float(rng.uniform(0, 360)))
    g = np.asarray(crop.resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32)[..., None]
    tint = rng.uniform(0.5, 1.0, 3)
    return np.clip(g * tint + rng.normal(0, 6, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


def _sources(kind: str) -> tuple[list[str], list]:
    """Class names and, per class, what to draw each image from."""
    if kind == "shapes":
        return list(SHAPES), list(range(len(SHAPES)))
    if kind == "fashion":
        from training.data.fashion_mnist import load_fashion_mnist

        data = load_fashion_mnist("train", None)
        return list(FASHION.values()), [data.images[data.labels == k] for k in FASHION]
    if kind == "digits":
        from sklearn.datasets import load_digits

        dg = load_digits()
        imgs = (dg.images / 16.0 * 255).astype(np.uint8)
        return [str(k) for k in range(6)], [imgs[dg.target == k] for k in range(6)]
    import skimage.data as skd
    from skimage.color import rgb2gray

    out = []
    for name in TEXTURES:
        a = getattr(skd, name)()
        a = (rgb2gray(a) * 255).astype(np.uint8) if a.ndim == 3 else a
        out.append(a)
    return list(TEXTURES), out


def make_image(kind: str, cls: int, source, rng: np.random.Generator) -> np.ndarray:
    if kind == "shapes":
        return shapes_image(cls, rng)
    if kind == "textures":
        return texture_image(source, rng)
    return _paste(source[int(rng.integers(len(source)))], rng)


def make(out: Path, per_class: int, test_per_class: int, seed: int) -> None:
    """Write the four kinds and their long-tailed copies under ``out``."""
    for k, kind in enumerate(("shapes", "fashion", "digits", "textures")):
        names, sources = _sources(kind)
        rng = np.random.default_rng(seed * 100 + k)
        n_cls = len(names)
        lt = [max(1, round(per_class * 0.1 ** (c / (n_cls - 1)))) for c in range(n_cls)]
        for split, n in (("test", test_per_class), ("train", per_class)):
            for c, name in enumerate(names):
                for i in range(n):
                    img = Image.fromarray(make_image(kind, c, sources[c], rng))
                    for root, keep in ((out / kind, True), (out / f"{kind}_lt",
                                                             split == "test" or i < lt[c])):
                        if keep:
                            p = root / split / name.replace(" ", "_") / f"{i:04d}.png"
                            p.parent.mkdir(parents=True, exist_ok=True)
                            img.save(p)
        print(f"[own_data] {kind}: {n_cls} classes, {per_class} + {test_per_class} per class; "
              f"long-tailed train counts {lt}", flush=True)


RUNS = {"abcnorm": "{kind}_lt", "qmil": "{kind}", "dcl": "{kind}"}
HEADLINE = {"abcnorm": "top1", "qmil": "bag_acc", "dcl": "knn_top1"}


def run(root: Path, out: Path, only: list[str], sets: list[str], seed: int = 0) -> None:
    """Train each KIND/METHOD of ``only`` with its user-folder defaults (``run.seed``
    ``seed``); record results, each with the load average before and after it."""
    results = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    results["machine"] = {"cpu": cpu_name(),
                          "cores": os.cpu_count(), "platform": platform.platform(),
                          "load_at_start": os.getloadavg()}
    for item in only:
        kind, method = item.split("/")
        data = root / RUNS[method].format(kind=kind)
        art = root / "art"
        name = f"{kind}_{method}" + (f"_seed{seed}" if seed else "")
        cmd = [sys.executable, "-m", "training", method, "--data", str(data), "--artifacts",
               str(art), "--no-progress", "--set", f"run.name={name}",
               *(["--set", f"run.seed={seed}"] if seed else []),
               *[x for s in sets for x in ("--set", s)]]
        load_before = os.getloadavg()
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        summary_file = art / "runs" / name / "summary.json"
        summary = json.loads(summary_file.read_text()) if proc.returncode == 0 else {}
        plan = [ln for ln in proc.stdout.splitlines() if ln.startswith("[plan]")]
        rec = {"kind": kind, "method": method, "data": str(data.relative_to(root)),
               "command": "python -m training " + " ".join(cmd[3:]).replace(str(root), "OUT"),
               "rc": proc.returncode, "wall_s": round(wall, 1),
               "metric": HEADLINE[method],
               "value": summary.get("metrics", {}).get(HEADLINE[method]),
               "train_seconds": summary.get("train_seconds"), "steps": summary.get("steps"),
               "pretrained": summary.get("pretrained"), "learned": summary.get("learned"),
               "seed": summary.get("seed", seed), "plan": plan,
               "commit": summary.get("git_commit"), "precision": summary.get("precision"),
               "summary_plan": summary.get("plan"),
               "metrics": summary.get("metrics"),
               "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
               "load_before": load_before,
               "error": proc.stderr.strip().splitlines()[-1:] if proc.returncode else None,
               "load_after": os.getloadavg()}
        results["runs"] = [r for r in results["runs"] if (r["kind"], r["method"],
                                                          r.get("seed", 0)) !=
                           (kind, method, rec["seed"])] + [rec]
        out.write_text(json.dumps(results, indent=1))
        print(f"[own_data] {item}: {rec['metric']} {rec['value']} in {rec['wall_s']} s "
              f"(rc {proc.returncode})", flush=True)


GOALS = {"abcnorm": 0.90, "qmil": 0.90, "dcl": 0.80}


def _detail(r: dict) -> str:
    """The second numbers of a run: Many/Medium/Few (ABC-Norm), attention accuracy and its
    chance (qMIL), the untrained encoder's kNN (DCL)."""
    m = r.get("metrics") or {}
    if r["method"] == "abcnorm" and "many" in m:
        return f"many {m['many']:.2f} / medium {m['medium']:.2f} / few {m['few']:.2f}"
    if r["method"] == "qmil" and "att_acc" in m:
        return f"att_acc {m['att_acc']:.2f} (chance {m['att_chance']:.2f})"
    if r["method"] == "dcl" and "knn_top1_random_init" in m:
        return f"untrained encoder {m['knn_top1_random_init']:.2f}"
    return "-"


def _commit(r: dict) -> str:
    """The code a run trained with: a commit's short hash (or the range recorded by hand)."""
    c = str(r.get("commit") or "-")
    return c[:7] if len(c) == 40 else c


def table(results: dict) -> str:
    """The Markdown table of the recorded runs."""
    rows = ["| folder | method | seed | held-out metric | goal | also | chance bound | learned | "
            "steps | train s | wall s | load at start | commit |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {m: i for i, m in enumerate(RUNS)}
    for r in sorted(results["runs"], key=lambda r: (order.get(r["method"], 9), r["kind"],
                                                     r.get("seed") or 0)):
        lr = r.get("learned") or {}
        value = f"{r['metric']} {r['value']:.3f}" if r.get("value") is not None else \
            f"failed: {r.get('error')}"
        load = r.get("load_before")
        rows.append(f"| {r['data']} | {r['method']} | {r.get('seed')} | {value} | "
                    f">= {GOALS[r['method']]:.2f} | {_detail(r)} | {lr.get('bound', '-')} | "
                    f"{'no (at_chance)' if lr.get('at_chance') else 'yes'} | {r.get('steps')} | "
                    f"{r.get('train_seconds')} | {r['wall_s']} | "
                    f"{f'{load[0]:.1f}' if load else '-'} | {_commit(r)} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.own_data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("out", type=Path)
    m.add_argument("--per-class", type=int, default=150)
    m.add_argument("--test-per-class", type=int, default=50)
    m.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run")
    r.add_argument("out_dir", type=Path)
    r.add_argument("--out", type=Path, default=Path("reports/own_data.json"))
    r.add_argument("--only", nargs="+", default=[f"{k}/{m}" for k in
                                                 ("shapes", "fashion", "digits", "textures")
                                                 for m in RUNS])
    r.add_argument("--set", dest="sets", action="append", default=[])
    r.add_argument("--seed", type=int, default=0, help="run.seed of the runs")
    t = sub.add_parser("table")
    t.add_argument("json", type=Path)
    a = p.parse_args(argv)
    if a.cmd == "make":
        make(a.out, a.per_class, a.test_per_class, a.seed)
    elif a.cmd == "table":
        print(table(json.loads(a.json.read_text())))
    else:
        run(a.out_dir, a.out, a.only, a.sets, a.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
