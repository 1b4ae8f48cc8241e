"""Cost curves: how each tab's latency (and seqfake's training step) grows with the work.

    python -m scripts.scaling --artifacts DIR [--curves qmil,face,retrieval,seqfake]
        [--out reports/scaling] [--cache DIR]

Each curve is measured in one run on this machine, in this process (models loaded and
warmed before the clock starts, as in a running app):

* qmil: ``app.services.qmil.query_bag`` (preparation, the ONNX model, domain check,
  attention tiles) on bags of 1 .. 256 Fashion-MNIST images (the serving limit,
  ``max_bag_serving``, is raised for the measurement beyond 64).
* face: ``app.services.face.analyze_face`` on a JPEG photograph (scikit-image's astronaut)
  of 256 .. 4096 px a side: decoding, the upload's downscaling, MTCNN detection, alignment
  and the face model.
* retrieval: embedding one query image with the DCL encoder + the gallery search (k = 10)
  over galleries of 10^3 .. 10^6 real DCL embeddings (:mod:`scripts.index_vectors`), with
  the index the app chooses by size (``runtime/gallery_index.yaml``) and with exact search.
* seqfake: one training step (forward, the loss with its contrastive-MIL term over all
  N(N-1)/2 token pairs, backward, AdamW) of the default seqfake config at
  ``data.img_size`` 32 .. 256 (tokens N = (img_size / 8)^2), batch ``train.batch_size``.

For each curve: the fitted growth (the exponent p of cost ~ x^p over the upper half of
the points, with linear and quadratic least-squares fits and which fits better), and the
size where it stops being interactive (1 s): measured when a point passes it, else
extrapolated from the fit. Writes ``<out>.json`` (merged: a curve re-measured replaces its
old entry), ``<out>.md`` and ``<out>.png``; every entry records its command, machine, load
average (before/after) and seed.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from scripts.bench_index import machine

INTERACTIVE_S = 1.0
# fitted on the fastest repetition: on a shared 2-core machine the median carries other
# jobs' load; the minimum is the closest to the work's own cost (both are reported)
FIT_KEY = "min_s"
CURVES = ("qmil", "face", "retrieval", "seqfake")


def timed(fn: Callable[[], Any], reps: int, warm: int = 1) -> dict[str, float]:
    """Median / p90 / min seconds of ``reps`` calls of ``fn`` after ``warm`` untimed ones."""
    for _ in range(warm):
        fn()
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return {"median_s": float(np.median(t)), "p90_s": float(np.percentile(t, 90)),
            "min_s": float(np.min(t)), "reps": reps}


# --- the curves ------------------------------------------------------------------------
def curve_qmil(artifacts: Path, log) -> dict[str, Any]:
    from app.services import qmil as qmil_svc
    from runtime.engine import Engine
    from training.data.fashion_mnist import load_fashion_mnist

    engine = Engine(artifacts)
    model = engine.get(qmil_svc.MODEL, qmil_svc.METHOD)
    model.entry.setdefault("extra", {})["max_bag_serving"] = 256  # measure past the limit
    ims = load_fashion_mnist("test").images
    rgb = [np.repeat(im[..., None], 3, axis=2) for im in ims[:256]]
    points = []
    for k in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        t = timed(lambda: qmil_svc.query_bag(engine, None, "sneaker", images=rgb[:k]), reps=7)
        points.append({"x": k, **t})
        log(f"[qmil] bag {k}: {t['median_s'] * 1000:.1f} ms")
    return {"x_name": "bag size (instances)", "what": "qMIL query (query_bag: preparation, ONNX, "
            "domain check, tiles), decoded 28 px images", "points": points}


def curve_face(artifacts: Path, log) -> dict[str, Any]:
    from PIL import Image
    from skimage import data

    from app.faces import default_detector
    from app.services import face as face_svc
    from runtime.engine import Engine

    engine, det = Engine(artifacts), default_detector()
    base = Image.fromarray(data.astronaut())
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for side in (256, 512, 1024, 2048, 3072, 4096):
            path = Path(tmp) / f"photo_{side}.jpg"
            base.resize((side, side), Image.BICUBIC).save(path, quality=90)
            res = face_svc.analyze_face(engine, det, str(path))
            t = timed(lambda: face_svc.analyze_face(engine, det, str(path)), reps=5)
            points.append({"x": side, "faces": len(res.report["faces"]), **t})
            log(f"[face] {side} px: {t['median_s'] * 1000:.0f} ms, {len(res.report['faces'])} face(s)")
    return {"x_name": "photo side (px, square JPEG)", "what": "face tab (analyze_face: decode, "
            "downscale, MTCNN detection, alignment, seqfake model)", "points": points}


def curve_retrieval(artifacts: Path, log, cache: Path) -> dict[str, Any]:
    from runtime import ann
    from runtime.engine import OnnxModel
    from runtime.manifest import read_manifest
    from scripts.bench_index import chunks
    from scripts.index_vectors import gallery_vectors
    from training.data.fashion_mnist import load_fashion_mnist

    import faiss

    x = gallery_vectors(artifacts, 1_000_000, cache, log=log)
    model = OnnxModel("dcl", read_manifest(artifacts)["models"]["dcl"], artifacts)
    queries = list(load_fashion_mnist("train").images[:50])
    settings = ann.load_settings()
    points, exact_points = [], []
    for n in (1000, 10_000, 30_000, 100_000, 300_000, 1_000_000):
        for which, spec in (("chosen", ann.choose(n, settings)), ("exact", ann.IndexSpec("exact"))):
            if which == "exact" and spec == ann.choose(n, settings):
                exact_points.append({**points[-1], "index": "exact"})
                continue
            sample = (np.ascontiguousarray(x[ann.sample_rows(n, spec.params["train_size"],
                                                               spec.params["seed"])])
                      if spec.needs_training else None)
            t0 = time.time()
            index = ann.build(spec, x.shape[1], chunks(x[:n]), sample)
            build_s = time.time() - t0
            faiss.omp_set_num_threads(1)  # one request = one search call on one thread
            it = iter(range(10 ** 9))

            def one() -> None:
                im = queries[next(it) % len(queries)]
                q = model.run({"image": model.prepare([im])})["embedding"]
                index.search(q / np.linalg.norm(q, axis=1, keepdims=True), 10)

            t = timed(one, reps=40, warm=3)
            faiss.omp_set_num_threads(os.cpu_count() or 1)
            row = {"x": n, "index": spec.kind, "build_s": round(build_s, 1), **t}
            (points if which == "chosen" else exact_points).append(row)
            log(f"[retrieval] N={n} {which} ({spec.kind}): {t['median_s'] * 1000:.2f} ms "
                f"(built in {build_s:.0f} s)")
            del index, sample
    return {"x_name": "gallery size (vectors)", "what": "retrieval (DCL embedding of one 28 px "
            "query + search, k = 10, one thread) with the index chosen by size",
            "points": points, "exact_points": exact_points}


def curve_seqfake(artifacts: Path, log) -> dict[str, Any]:
    import torch

    from training.config import resolve_config
    from training.engine import build_optimizer, seed_everything
    from training.methods.seqfake import build

    points = []
    for size in (32, 64, 96, 128, 192, 256):
        cfg = resolve_config("seqfake", overrides=[
            f"data.img_size={size}", "data.limit_train=128", f"run.artifacts={artifacts}"])
        seed_everything(int(cfg["run"]["seed"]))
        method = build(cfg)
        model = method.build_model()
        opt = build_optimizer(method.parameters_to_train(model), cfg["optim"])
        ds = method.train_dataset()
        bs = int(cfg["train"]["batch_size"])
        batch = [torch.stack(t) for t in zip(*(ds[i] for i in range(bs)))]
        model.eval()
        with torch.no_grad():
            pairs = int(model(batch[0][:2])["u"].shape[1])  # u: the N(N-1)/2 sorted pair scores
        tokens = int(round((1 + (1 + 8 * pairs) ** 0.5) / 2))
        phases: dict[str, list[float]] = {"forward_loss": [], "backward_step": []}

        def step() -> None:
            t0 = time.perf_counter()
            loss, _ = method.loss(model, batch, torch.device("cpu"))
            t1 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            phases["forward_loss"].append(t1 - t0)
            phases["backward_step"].append(time.perf_counter() - t1)

        model.train()
        reps = 3 if size >= 192 else 5
        t = timed(step, reps=reps)
        points.append({"x": tokens, "img_size": size, "pairs": pairs,
                       "batch": bs, "forward_loss_s": float(np.median(phases["forward_loss"][1:])),
                       "backward_step_s": float(np.median(phases["backward_step"][1:])), **t})
        log(f"[seqfake] {size} px, {tokens} tokens: {t['median_s']:.2f} s/step")
    return {"x_name": "tokens per image (N)", "what": "seqfake training step (batch "
            f"{points[0]['batch']}, default config, data.img_size varied; threads "
            f"{torch.get_num_threads()})", "points": points}


# --- fits and the report ----------------------------------------------------------------
def fit(points: list[dict[str, Any]], key: str = FIT_KEY) -> dict[str, Any]:
    """Growth of cost (s) with x: the log-log slope over the upper half, linear and
    quadratic least squares, and where cost reaches :data:`INTERACTIVE_S`."""
    xs = np.array([p["x"] for p in points], float)
    ys = np.array([p[key] for p in points], float)
    upper = slice(len(xs) // 2 - (len(xs) % 2 == 0 and len(xs) > 3), None)
    slope = float(np.polyfit(np.log(xs[upper]), np.log(ys[upper]), 1)[0])
    lin = np.polyfit(xs, ys, 1, w=1 / ys)  # weights 1/y: least relative error at every size
    quad = np.polyfit(xs, ys, 2, w=1 / ys)

    def rel_err(c: np.ndarray) -> float:
        return float(np.sqrt(np.mean(((np.polyval(c, xs) - ys) / ys) ** 2)))

    growth = ("constant" if slope < 0.2 else "sublinear" if slope < 0.8 else "linear"
              if slope < 1.3 else "between linear and quadratic" if slope < 1.8 else "quadratic"
              if slope < 2.3 else "faster than quadratic")
    over = [p for p in points if p[key] >= INTERACTIVE_S]
    if over:
        j = points.index(over[0])
        if j == 0:
            cross, how = float(xs[0]), "already at the smallest size"
        else:  # log-log interpolation between the last point under and the first over
            x0, x1, y0, y1 = np.log(xs[j - 1]), np.log(xs[j]), np.log(ys[j - 1]), np.log(ys[j])
            cross, how = float(np.exp(x0 + (np.log(INTERACTIVE_S) - y0) * (x1 - x0) / (y1 - y0))), "measured"
    elif slope >= 0.2:
        cross = float(xs[-1] * (INTERACTIVE_S / ys[-1]) ** (1 / slope))
        how = "extrapolated from the fitted exponent"
    else:
        cross, how = None, "does not grow measurably over the sizes measured"
    return {"exponent": round(slope, 3), "growth": growth,
            "linear": {"a_s": float(lin[1]), "b_s_per_x": float(lin[0]), "rel_rmse": rel_err(lin)},
            "quadratic": {"c_s_per_x2": float(quad[0]), "rel_rmse": rel_err(quad)},
            "better_fit": "quadratic" if rel_err(quad) < 0.7 * rel_err(lin) else "linear",
            "interactive_until": cross, "interactive_how": how}


def _fmt_s(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def render(res: dict[str, Any]) -> str:
    lines = ["# Cost curves", "",
             "How each tab's latency, and the seqfake training step, grows with the work. "
             "Generated by `python -m scripts.scaling` (each curve below gives the command "
             "and the run it comes from); one process, models warm; min / median / p90 of "
             "the repetitions. The fits use the fastest repetition (min), the closest to the "
             "work's own cost on a machine shared with other jobs. Interactive = under "
             f"{INTERACTIVE_S:g} s. The fitted growth is the "
             "exponent p of cost ~ x^p over the upper half of the sizes; linear / quadratic "
             "are least-squares fits of the relative error over all sizes (relative RMS error given). The machine is "
             "shared with other engineers' jobs: the load average is given per curve.", "",
             "![cost curves](scaling.png)", ""]
    titles = {"qmil": "qMIL latency against bag size", "face": "Face tab latency against photo size",
              "retrieval": "Retrieval latency against gallery size",
              "seqfake": "seqfake training step against token count"}
    for name in CURVES:
        c = res["curves"].get(name)
        if not c:
            continue
        f, m = c["fit"], c["machine"]
        lines += [f"## {titles[name]}", "",
                  f"{c['what']}. Command: `{c['command']}`; run {c['started']} - {c['finished']}, "
                  f"{m['cpu']} ({m['cores']} cores), load average (1 min) {c['load_before'][0]:.2f} "
                  f"before / {c['load_after'][0]:.2f} after; seed {c['seed']}."
                  + (f" **The load exceeded the {m['cores']} cores: other jobs shared the CPU, "
                     f"so these figures are inflated and noisy (non-monotonic points are that "
                     f"noise); rerun on an idle machine for the work's own cost.**"
                     if max(c["load_before"][0], c["load_after"][0]) > m["cores"] else ""), ""]
        extra_cols = {"face": ["faces"], "retrieval": ["index", "build_s"],
                      "seqfake": ["img_size", "pairs", "forward_loss_s", "backward_step_s"]}.get(name, [])
        lines += [f"| {c['x_name']} | min | median | p90 | " + " | ".join(extra_cols) + (" |" if extra_cols else ""),
                  "|---|---|---|---|" + "---|" * len(extra_cols)]
        for p in c["points"]:
            ex = " | ".join(_fmt_s(p[k]) if k.endswith("_s") and k != "build_s" else
                            (f"{p[k]:,}" if isinstance(p[k], int) else str(p[k])) for k in extra_cols)
            lines.append(f"| {p['x']:,} | {_fmt_s(p['min_s'])} | {_fmt_s(p['median_s'])} | {_fmt_s(p['p90_s'])} | "
                         + ex + (" |" if extra_cols else ""))
        if name == "retrieval" and c.get("exact_points"):
            lines += ["", "Exact search at every size (for comparison; the app switches at "
                      f"`index.exact_below` = {c['exact_below']:,}):", "",
                      "| gallery size | min | median | p90 |", "|---|---|---|---|"]
            lines += [f"| {p['x']:,} | {_fmt_s(p['min_s'])} | {_fmt_s(p['median_s'])} | {_fmt_s(p['p90_s'])} |"
                      for p in c["exact_points"]]
            fe = c["fit_exact"]
            lines += ["", f"Exact search grows with exponent {fe['exponent']} ({fe['growth']})."]
        until = f["interactive_until"]
        lines += ["", f"Growth: exponent **{f['exponent']}** ({f['growth']}); linear fit rel. error "
                  f"{f['linear']['rel_rmse']:.2f}, quadratic {f['quadratic']['rel_rmse']:.2f} "
                  f"(better: {f['better_fit']}). Interactive (< {INTERACTIVE_S:g} s) "
                  + (f"until **x = {until:,.0f}** ({f['interactive_how']})." if until is not None
                     else f"at every size measured ({f['interactive_how']})."), ""]
    return "\n".join(lines)


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in CURVES if n in res["curves"]]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6))
    for ax, name in zip(np.atleast_1d(axes), names):
        c = res["curves"][name]
        xs = [p["x"] for p in c["points"]]
        ax.loglog(xs, [p["min_s"] for p in c["points"]], "o-", label="min")
        ax.loglog(xs, [p["median_s"] for p in c["points"]], ".:", color="C0", alpha=0.6, label="median")
        if c.get("exact_points"):
            ax.loglog([p["x"] for p in c["exact_points"]], [p["min_s"] for p in c["exact_points"]],
                      "s--", label="exact search (min)")
        ax.axhline(INTERACTIVE_S, color="red", lw=0.8, ls=":", label="1 s")
        ax.set_xlabel(c["x_name"])
        ax.set_ylabel("seconds")
        ax.set_title(f"{name}: x^{c['fit']['exponent']:.2f}")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    from runtime.artifacts import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from scripts.index_vectors import CACHE

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", required=True, help="artifacts folder with the exported models")
    p.add_argument("--curves", default=",".join(CURVES))
    p.add_argument("--out", default="reports/scaling")
    p.add_argument("--cache", type=Path, default=CACHE)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    p.add_argument("--render", action="store_true", help="measure nothing: refit and rewrite "
                   "<out>.md / <out>.png from <out>.json")
    args = p.parse_args(argv)
    wanted = [] if args.render else [c.strip() for c in args.curves.split(",") if c.strip()]
    bad = [c for c in wanted if c not in CURVES]
    if bad:
        p.error(f"unknown curve(s) {bad}; choose from {', '.join(CURVES)}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    artifacts = Path(args.artifacts)
    out = Path(args.out)
    res = (json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file()
           else {"curves": {}})
    log = lambda m: print(m, flush=True)  # noqa: E731
    command = "python -m scripts.scaling " + " ".join(argv if argv is not None else sys.argv[1:])
    from runtime import ann
    from runtime.artifacts import write_bytes_atomic, write_json_atomic

    for name in wanted:
        started, load0 = time.strftime("%Y-%m-%d %H:%M:%S"), os.getloadavg()
        fn = {"qmil": lambda: curve_qmil(artifacts, log), "face": lambda: curve_face(artifacts, log),
              "retrieval": lambda: curve_retrieval(artifacts, log, args.cache),
              "seqfake": lambda: curve_seqfake(artifacts, log)}[name]
        c = fn()
        c.update(command=command, started=started, finished=time.strftime("%Y-%m-%d %H:%M:%S"),
                 load_before=load0, load_after=os.getloadavg(), machine=machine(), seed=0,
                 fit=fit(c["points"]))
        if name == "retrieval":
            c["exact_below"] = int(ann.load_settings()["index"]["exact_below"])
            c["fit_exact"] = fit(c["exact_points"])
        res["curves"][name] = c
        write_json_atomic(out.with_suffix(".json"), res)  # after each curve: a crash keeps the others
    for c in res["curves"].values():  # the fits from the stored points (--render: refitted)
        c["fit"] = fit(c["points"])
        if c.get("exact_points"):
            c["fit_exact"] = fit(c["exact_points"])
    write_json_atomic(out.with_suffix(".json"), res)
    write_bytes_atomic(out.with_suffix(".md"), render(res).encode())
    plot(res, out.with_suffix(".png"))
    log(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
