"""How well the domain check separates the models' own data from everything else.

    python -m export.domain_report --artifacts DIR [--n 500] [--out reports/domain]
        [--real-photos data/real_photos] [--half held_out]

For every exported model with a domain check (:mod:`runtime.domain`): the fraction flagged
"out of domain" among in-distribution test images (its run's test split, ``--n`` of them,
seeded; target at most 2 %), and among images from elsewhere: the other methods' test data,
the real-photograph set (``scripts/real_photos.py``; its ``--half``, by default the half
nothing was chosen or tuned on: real face crops as the face tab sends them, and whole
photographs), uniform noise, constant images; the AUROC of the score (the larger of each
part's score over its threshold, :func:`runtime.domain.scores`) for in-distribution test
images against each of those sets, and the real photographs' flagged fraction by kind.
Images go through the served model's own preprocessing (``OnnxModel.prepare``), as the
classifier and retrieval tabs and the face tab's "already a crop" path send them. Writes
``<out>.json`` and ``<out>.md``, with the command, the machine and the models' versions.
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


REAL_FACES, REAL_PHOTOS = "real faces", "real photographs"


def real_photos(root: Path, half: str) -> tuple[dict[str, list[np.ndarray]],
                                                 dict[str, dict[str, list[int]]]]:
    """The real-photograph set's ``half`` (``scripts/real_photos.py`` built it under
    ``root``): {"real faces": crops, "real photographs": images}, and for each the indices
    of every kind of source (portrait, group, small face, ...)."""
    from PIL import Image

    index = json.loads((root / "sources.json").read_text())
    sets: dict[str, list[np.ndarray]] = {REAL_FACES: [], REAL_PHOTOS: []}
    kinds: dict[str, dict[str, list[int]]] = {REAL_FACES: {}, REAL_PHOTOS: {}}
    for row in index["sources"]:
        if row["half"] != half:
            continue
        for label, files in ((REAL_PHOTOS, [row["photo"]]),
                             (REAL_FACES, [c["file"] for c in row["faces"]])):
            for f in files:
                with Image.open(root / f) as im:
                    sets[label].append(np.asarray(im.convert("RGB")))
                kinds[label].setdefault(row["kind"], []).append(len(sets[label]) - 1)
    return sets, kinds


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


def measure(artifacts: Path, n: int, only: list[str] | None = None,
            real: Path | None = None, half: str = "held_out") -> dict[str, Any]:
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
    kinds: dict[str, dict[str, list[int]]] = {}
    if real is not None:
        photos, kinds = real_photos(real, half)
        extra = {f"{k} ({half})": v for k, v in photos.items()}
    else:
        extra = {"photographs (scikit-image)": photographs()}
    extra.update(synthetic(50))
    results: dict[str, Any] = {}
    for name in checked:
        if only and name not in only:
            continue
        e = manifest[name]
        model = engine.get(name)
        side = e["sidecars"][domain.SUFFIX]
        dm = domain.load(artifacts / side["file"], side["sha256"])
        names, bs = e["domain"]["features"], 64
        generic = None
        if dm.generic is not None:
            kind = e["domain"]["generic"]["kind"]
            net = e["sidecars"].get(domain.GENERIC_SUFFIX)
            generic = (kind, domain.network(artifacts / net["file"], net["sha256"])
                       if net else None)

        def both(images: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
            got = model_features(model, images, names, bs, generic)
            return got if generic is not None else (got, None)

        def features(images: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
            return both(images)

        own: dict[str, float] = {}

        def scores(images: list[Any], label: str = "") -> np.ndarray:
            x, g = both(images)
            own[label] = float(np.mean(dm.score(x) > dm.threshold))
            return domain.scores(dm, x, g)

        inside = scores(tests[name], "in")
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
            "generic": e["domain"].get("generic"),
            "threshold_from": {"source": e["domain"].get("threshold_from",
                                                     "held-out training images"),
                               "n": e["domain"].get("n_held_out"),
                               "n_fit": e["domain"].get("n_fit"),
                               "components": e["domain"].get("components")},
            "in_distribution": {"n": len(inside), "flagged": float(np.mean(inside > 1.0)),
                                "flagged_own_features": own["in"]},
            "elsewhere": {}}
        for label, imgs in sets.items():
            out = scores(imgs, label)
            row["elsewhere"][label] = {"n": len(out), "flagged": float(np.mean(out > 1.0)),
                                       "flagged_own_features": own[label],
                                       "auroc": auroc(inside, out)}
            base = label.rsplit(" (", 1)[0]
            if base in kinds:
                row["elsewhere"][label]["by_kind"] = {
                    k: {"n": len(ix), "flagged": float(np.mean(out[ix] > 1.0))}
                    for k, ix in sorted(kinds[base].items())}
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
            x, g = features(bag)
            checks = domain.check(dm, x, generic=g)
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
             "weighted equally, of the scores of images the Gaussian was not fitted on: the "
             "run's validation split, which the network did not train on either, where it has "
             "at least `min_val` images, else held-out training images; column *threshold "
             "from*; `export/domain.yaml`). Target: at most 2 % of "
             "in-distribution test images flagged. Every number below is read from the run.",
             ""] + ([meta["note"], ""] if meta.get("note") else [])
    if meta.get("real_photos"):
        lines += goals(results, meta["real_photos"]["half"])
    sets = sorted({k for r in results.values() for k in r["elsewhere"]})
    lines += ["| model | version | threshold from | in-distribution flagged | " + " | ".join(
        f"{s}: flagged / AUROC" for s in sets) + " |",
        "|---" * (4 + len(sets)) + "|"]
    for name, r in results.items():
        cells = []
        for s in sets:
            v = r["elsewhere"].get(s)
            cells.append(f"{v['flagged']:.0%} / {v['auroc']:.3f} (n={v['n']})" if v else "-")
        src = r.get("threshold_from") or {}
        lines.append(f"| `{name}` | `{r['version']}` | {src.get('source', '-')} "
                     f"(n={src.get('n', '-')}) | {r['in_distribution']['flagged']:.1%} "
                     f"(n={r['in_distribution']['n']}) | " + " | ".join(cells) + " |")
    for name, r in results.items():
        if "bags" in r:
            b = r["bags"]
            lines += ["", f"**Bags** (`{name}`; {b['rule']}; {b['n_bags']} test bags, and bags "
                      "of the same sizes with all / more than half of their images replaced "
                      "from each other set): fraction of bags flagged", "",
                      "| bags | flagged |", "|---|---|"]
            lines += [f"| {k} | {v:.0%} |" for k, v in b.items() if k not in ("rule", "n_bags")]
    lines += ["", "Features (fitted on n images; *k directions*: a probabilistic-PCA fit, "
              "fewer than `min_per_dim` images per dimension): " + "; ".join(
        f"`{n}`: {', '.join(r['features'])} ({r['dim']}-d{_k(r.get('threshold_from'))}, "
        f"n={(r.get('threshold_from') or {}).get('n_fit', '-')})"
        + (f" + generic {r['generic']['kind']} ({r['generic']['dim']}-d"
           f"{_k(r['generic'])})" if r.get("generic") else "")
        for n, r in results.items()), ""]
    lines += real_sections(results, meta)
    return "\n".join(lines)


def _k(record: dict[str, Any] | None) -> str:
    """", k directions" for a probabilistic-PCA fit (``components`` in its record)."""
    k = (record or {}).get("components")
    return f", {k} directions" if k else ""


def goals(results: dict[str, Any], half: str) -> list[str]:
    """Each model's goals (see the module docstring) against the measurement:
    at most 2 % of its own test images flagged; at least 95 % of real faces flagged for a
    model trained on generated faces, of real photographs for one trained on Fashion-MNIST."""
    lines = ["## Goals", "", "| model | goal | measured | met |", "|---|---|---|---|"]
    for name, r in results.items():
        i = r["in_distribution"]
        rows = [("own test images flagged <= 2 %", i["flagged"], i["flagged"] <= 0.02)]
        trained_on = str(r.get("trained_on") or "")
        target = (REAL_FACES if "generated faces" in trained_on
                  else REAL_PHOTOS if "Fashion-MNIST" in trained_on else None)
        v = r["elsewhere"].get(f"{target} ({half})") if target else None
        if v:
            rows.append((f"{target} flagged >= 95 %", v["flagged"], v["flagged"] >= 0.95))
        lines += [f"| `{name}` | {g} | {m:.1%} | {'yes' if ok else '**no**'} |"
                  for g, m, ok in rows]
    return lines + [""]


def real_sections(results: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """The real-photograph tables: flagged by the whole check and by the model's own
    features alone, by kind of photograph, and the set's sources."""
    real = meta.get("real_photos")
    if not real:
        return []
    half = real["half"]
    labels = [f"{REAL_FACES} ({half})", f"{REAL_PHOTOS} ({half})"]
    lines = ["## Real photographs", "",
             f"The `{half}` half of the set `scripts/real_photos.py` builds (nothing was chosen "
             "or tuned on it). Flagged by the served check, and by the model's own features "
             "alone (the check without its generic part).", "",
             "| model | in-distribution flagged | " + " | ".join(
                 f"{lb}: flagged (own features alone) / AUROC" for lb in labels) + " |",
             "|---" * (2 + len(labels)) + "|"]
    for name, r in results.items():
        cells = []
        for lb in labels:
            v = r["elsewhere"].get(lb)
            cells.append(f"{v['flagged']:.0%} ({v['flagged_own_features']:.0%}) / "
                         f"{v['auroc']:.3f} (n={v['n']})" if v else "-")
        i = r["in_distribution"]
        lines.append(f"| `{name}` | {i['flagged']:.1%} ({i['flagged_own_features']:.1%}) "
                     f"(n={i['n']}) | " + " | ".join(cells) + " |")
    kinds = sorted({k for r in results.values() for lb in labels
                    for k in r["elsewhere"].get(lb, {}).get("by_kind", {})})
    lines += ["", "Flagged by kind of source (faces: crops of that kind of photograph):", "",
              "| model | set | " + " | ".join(kinds) + " |", "|---" * (2 + len(kinds)) + "|"]
    for name, r in results.items():
        for lb in labels:
            bk = r["elsewhere"].get(lb, {}).get("by_kind", {})
            if bk:
                lines.append(f"| `{name}` | {lb} | " + " | ".join(
                    f"{bk[k]['flagged']:.0%} (n={bk[k]['n']})" if k in bk else "-"
                    for k in kinds) + " |")
    srcs = real["sources"]
    lines += ["", f"Sources ({len(srcs)} photographs, "
                  f"{sum(len(x['faces']) for x in srcs)} face crops; rebuilt by "
                  "`python -m scripts.real_photos --mirrors DIR`):", "",
              "| source | kind | half | faces | licence |", "|---|---|---|---|---|"]
    lines += [f"| `{x['source']}` | {x['kind']} | {x['half']} | {len(x['faces'])} | "
              f"{x['licence']} |" for x in srcs]
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m export.domain_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    p.add_argument("--n", type=int, default=500, help="in-distribution test images per method")
    p.add_argument("--out", default="reports/domain", help="writes OUT.json and OUT.md")
    p.add_argument("--real-photos", default="data/real_photos",
                   help="the real-photograph set (scripts/real_photos.py); 'none': "
                        "scikit-image's photographs instead")
    p.add_argument("--half", default="held_out", choices=("held_out", "tune"),
                   help="which half of the real-photograph set to measure")
    p.add_argument("--note", default="", help="a paragraph written under the header (what "
                   "the artifacts are)")
    p.add_argument("--only", nargs="+", metavar="MODEL",
                   help="measure these models only (the others' test data still serve as "
                        "data from elsewhere)")
    args = p.parse_args(argv)
    real = None if args.real_photos == "none" else Path(args.real_photos)
    if real is not None and not (real / "sources.json").is_file():
        p.error(f"--real-photos {real}: no sources.json; build the set with "
                f"`python -m scripts.real_photos --mirrors DIR --out {real}` or pass none")
    results = measure(artifacts_dir(args.artifacts), args.n, args.only, real, args.half)
    meta = {"command": shlex.join(["python", "-m", "export.domain_report", *argv]),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "n": args.n,
            "note": args.note,
            "real_photos": None if real is None else {
                "half": args.half, "sources": json.loads((real / "sources.json").read_text())[
                    "sources"]}}
    for suffix, text in ((".json", json.dumps({"meta": meta, "models": results}, indent=2)),
                         (".md", markdown(results, meta))):
        with atomic_path(args.out + suffix) as tmp:
            Path(tmp).write_text(text + "\n")
    print(f"[domain] wrote {args.out}.md and {args.out}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
