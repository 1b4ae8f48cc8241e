"""How well the domain check separates the models' own data from everything else.

    python -m export.domain_report --artifacts DIR [--n 500] [--out reports/domain]

For every exported model with a domain check (:mod:`runtime.domain`): the fraction flagged
"out of domain" among in-distribution test images (its run's test split, ``--n`` of them,
seeded; target at most 2 %), and among images from elsewhere: the other methods' test data,
photographs that ship with scikit-image, uniform noise, constant images; the AUROC of the
score for in-distribution test images against each of those sets. Images go through the
served model's own preprocessing (``OnnxModel.prepare``), as the classifier and retrieval
tabs and the face tab's "already a crop" path send them. Writes ``<out>.json`` and
``<out>.md``, with the command, the machine and the models' versions.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from export.domain import is_bag_model, model_features
from runtime.artifacts import artifacts_dir, atomic_path
from runtime.manifest import read_manifest

PHOTOS = ("astronaut", "coffee", "chelsea", "camera", "rocket", "coins", "moon", "page",
          "hubble_deep_field", "immunohistochemistry", "retina", "cat")


def photographs() -> list[np.ndarray]:
    """scikit-image's sample photographs that exist in this installation (offline)."""
    from skimage import data

    out = []
    for name in PHOTOS:
        try:
            out.append(np.asarray(getattr(data, name)()))
        except Exception:  # noqa: BLE001 - a sample needing a download (pooch) is skipped
            continue
    return out


def synthetic(n: int, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Uniform RGB noise (64 px) and constant images (black, white, grey, colours)."""
    rng = np.random.default_rng(seed)
    noise = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(n)]
    colours = [(0, 0, 0), (255, 255, 255), (128, 128, 128), (255, 0, 0), (0, 128, 255),
               (30, 160, 60), (250, 220, 180), (90, 60, 40)]
    const = [np.full((64, 64, 3), c, dtype=np.uint8) for c in colours]
    return {"uniform noise": noise, "constant images": const}


def test_images(artifacts: Path, entry: dict[str, Any], n: int, seed: int = 0
                ) -> list[Any]:
    """``n`` images of the run's test split (seeded), from its training plug-in."""
    from training.methods import plugin_for_run

    plugin = plugin_for_run(entry["method"], entry["training"]["config"], artifacts)
    images, _ = plugin.domain_images("test")
    idx = np.sort(np.random.default_rng(seed).permutation(len(images))[:n])
    return [images[i] for i in idx]


def _digest(images: list[Any]) -> str:
    """A fingerprint of an image set (its first images), to tell identical data sets."""
    import hashlib

    h = hashlib.sha256()
    for im in images[:20]:
        h.update(np.asarray(im).tobytes() if isinstance(im, np.ndarray) else str(im).encode())
    return h.hexdigest()


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """AUROC of the score (higher = more out of domain) for outside vs inside."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    return float(roc_auc_score(y, np.r_[inside, outside]))


def measure(artifacts: Path, n: int, only: list[str] | None = None) -> dict[str, Any]:
    from runtime import domain
    from runtime.engine import Engine

    engine = Engine(artifacts)
    manifest = read_manifest(artifacts)["models"]
    checked = [name for name, e in manifest.items() if e.get("domain")]
    tests: dict[str, list[Any]] = {}      # each model's own test split (shared when equal)
    by_data: dict[str, list[Any]] = {}
    for name in checked:
        key = json.dumps([manifest[name]["method"], manifest[name]["training"]["data"]],
                         sort_keys=True, default=str)
        if key not in by_data:
            by_data[key] = test_images(artifacts, manifest[name], n)
        tests[name] = by_data[key]
    extra = {"photographs (scikit-image)": photographs(), **synthetic(50)}
    results: dict[str, Any] = {}
    for name in checked:
        if only and name not in only:
            continue
        e = manifest[name]
        model = engine.get(name)
        side = e["sidecars"][domain.SUFFIX]
        dm = domain.load(artifacts / side["file"], side["sha256"])
        names, bs = e["domain"]["features"], 64

        def features(images: list[Any]) -> np.ndarray:
            return model_features(model, images, names, bs)

        def scores(images: list[Any]) -> np.ndarray:
            return dm.score(features(images))

        inside = scores(tests[name])
        seen = {_digest(tests[name])}  # a model trained on the same data is not "elsewhere"
        sets: dict[str, list[Any]] = {}
        for other, imgs in tests.items():
            if _digest(imgs) not in seen:
                seen.add(_digest(imgs))
                sets[f"{other}'s test data"] = imgs
        sets.update(extra)
        row: dict[str, Any] = {
            "version": e["version"], "trained_on": e["domain"].get("trained_on"),
            "threshold": dm.threshold, "features": names, "dim": e["domain"]["dim"],
            "in_distribution": {"n": len(inside),
                                "flagged": float(np.mean(inside > dm.threshold))},
            "elsewhere": {}}
        for label, imgs in sets.items():
            out = scores(imgs)
            row["elsewhere"][label] = {"n": len(out), "flagged": float(np.mean(out > dm.threshold)),
                                       "auroc": auroc(inside, out)}
        if is_bag_model(model):
            row["bags"] = bag_rows(artifacts, e, dm, features, sets, n)
        results[name] = row
        print(f"[domain] {name}: in-distribution flagged {row['in_distribution']['flagged']:.1%}"
              + "".join(f"; {k}: {v['flagged']:.0%} (AUROC {v['auroc']:.3f})"
                        for k, v in row["elsewhere"].items()), flush=True)
    return results


def bag_rows(artifacts: Path, entry: dict[str, Any], dm: Any, features: Any,
             sets: dict[str, list[Any]], n: int) -> dict[str, Any]:
    """A bag model: the fraction of bags flagged by the bag rule (runtime.domain.bag_check)
    among its test bags (at most ``n // 10``), and among bags of the same sizes whose
    images all come from each other set, or half of them. ``features(images)`` gives the
    (K, D) features of a bag's K images; each bag is judged as the app judges it
    (runtime.domain.check per image, then bag_check)."""
    from runtime import domain
    from training.methods import plugin_for_run

    plugin = plugin_for_run(entry["method"], entry["training"]["config"], artifacts)
    items, _ = plugin.calibration_items("test")
    idx = np.sort(np.random.default_rng(0).permutation(len(items))[: max(1, n // 10)])
    bags = [list(items[i]["images"]) for i in idx]
    frac = float(entry["domain"]["bag_min_in_domain"])

    def flagged(bag_list: list[list[Any]]) -> float:
        out = []
        for bag in bag_list:
            checks = domain.check(dm, features(bag))
            out.append(not domain.bag_check(checks, frac)["in_domain"])
        return float(np.mean(out))

    rows: dict[str, Any] = {"rule": f"a bag is in domain when at least {frac:g} of its images "
                                    f"are", "n_bags": len(bags),
                            "test bags": flagged(bags)}
    for label, imgs in sets.items():
        k = 0
        full, half = [], []
        for bag in bags:
            other = [imgs[(k + j) % len(imgs)] for j in range(len(bag))]
            k += len(bag)
            full.append(other)
            m = (len(bag) - 1) // 2                      # in-domain images kept: < half
            half.append(other[:len(bag) - m] + bag[:m])  # more than half from elsewhere
        rows[f"all from {label}"] = flagged(full)
        rows[f"most from {label}"] = flagged(half)
    return rows


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = ["# Domain check: in-distribution vs elsewhere", "",
             f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}; {meta['date']}.  ",
             f"In-distribution: each run's test split, {meta['n']} images (seed 0); a model "
             "flags an input when its score exceeds the threshold (the 99th percentile, each class "
             "weighted equally, of "
             "held-out training scores, `export/domain.yaml`). Target: at most 2 % of "
             "in-distribution test images flagged. Every number below is read from the run.",
             ""]
    sets = sorted({k for r in results.values() for k in r["elsewhere"]})
    lines += ["| model | version | in-distribution flagged | " + " | ".join(
        f"{s}: flagged / AUROC" for s in sets) + " |",
        "|---" * (3 + len(sets)) + "|"]
    for name, r in results.items():
        cells = []
        for s in sets:
            v = r["elsewhere"].get(s)
            cells.append(f"{v['flagged']:.0%} / {v['auroc']:.3f} (n={v['n']})" if v else "-")
        lines.append(f"| `{name}` | `{r['version']}` | {r['in_distribution']['flagged']:.1%} "
                     f"(n={r['in_distribution']['n']}) | " + " | ".join(cells) + " |")
    for name, r in results.items():
        if "bags" in r:
            b = r["bags"]
            lines += ["", f"**Bags** (`{name}`; {b['rule']}; {b['n_bags']} test bags, and bags "
                      "of the same sizes with all / more than half of their images replaced "
                      "from each other set): fraction of bags flagged", "",
                      "| bags | flagged |", "|---|---|"]
            lines += [f"| {k} | {v:.0%} |" for k, v in b.items() if k not in ("rule", "n_bags")]
    lines += ["", "Features: " + "; ".join(f"`{n}`: {', '.join(r['features'])} ({r['dim']}-d)"
                                             for n, r in results.items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m export.domain_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    p.add_argument("--n", type=int, default=500, help="in-distribution test images per method")
    p.add_argument("--out", default="reports/domain", help="writes OUT.json and OUT.md")
    p.add_argument("--only", nargs="+", metavar="MODEL",
                   help="measure these models only (the others' test data still serve as "
                        "data from elsewhere)")
    args = p.parse_args(argv)
    results = measure(artifacts_dir(args.artifacts), args.n, args.only)
    meta = {"command": shlex.join(["python", "-m", "export.domain_report", *argv]),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "n": args.n}
    for suffix, text in ((".json", json.dumps({"meta": meta, "models": results}, indent=2)),
                         (".md", markdown(results, meta))):
        with atomic_path(args.out + suffix) as tmp:
            Path(tmp).write_text(text + "\n")
    print(f"[domain] wrote {args.out}.md and {args.out}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
