"""Images per second of the face batch on the local engine and on Ray (1 and 2 workers).

    python -m scripts.bench_scale --artifacts DIR [--n 48] [--small 12] [--size 1024] [--out FILE]

Writes N JPEG photographs of SIZE px (:func:`scripts.bench_batch.photographs`: one face each,
no two files equal), then runs ``python -m app.cli face FOLDER --out results.csv`` on the
first SMALL of them and on all N, each with the local engine and with ``--engine ray
--workers 1`` and ``--workers 2`` on a Ray started here (``num_cpus`` = this machine's CPUs;
started before the clocks, as a cluster is up before a batch). Each run goes through the
command's own code (:func:`app.batch_ray.capture_analysis` builds its per-file function, as a
Ray worker does) and :func:`app.batch.run_batch`; the rows of the engines are checked equal.

Per engine: the end-to-end rate of each run (the whole batch: the local engine's first
model call and the Ray actors' start included) and the sustained rate, ``(N - SMALL) /
(T(N) - T(SMALL))``, in which each run's fixed start cancels out; Ray's overhead at 1
worker against the local engine on both; and the machines for 10 million images a day at the
best sustained rate. One JSON document (``--out``, and stdout), with the machine and its
load average at the start and the end.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DAY_IMAGES = 10_000_000
DAY_SECONDS = 86_400


def machine() -> dict[str, Any]:
    """This machine as the run read it: CPUs, processor, memory, load average."""
    from runtime.machine import cpu_name

    model = cpu_name()
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpus": os.cpu_count(), "processor": model, "memory_gib": mem_gib,
            "python": platform.python_version(),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def timed_run(paths: list[Path], args: argparse.Namespace, out: Path,
              rows_source: Any = None) -> dict[str, Any]:
    """One batch as the CLI runs it: its time, rate and when its first rows came."""
    from app.batch import run_batch
    from app.batch_ray import capture_analysis
    from app.inputs import cli_requests

    with cli_requests():
        analyse, columns = capture_analysis(args)
        stamps: list[float] = []
        t0 = time.perf_counter()
        res = run_batch(paths, analyse, columns, out=out, rows_source=rows_source,
                        progress=lambda i, n, f: stamps.append(time.perf_counter()),
                        count_key="faces", show_bar=False)
        seconds = time.perf_counter() - t0
    return {"images": len(paths), "seconds": round(seconds, 2),
            "images_per_second": round(len(paths) / seconds, 2),
            "first_row_after_s": round(stamps[0] - t0, 2),
            "faces": res.summary["faces"], "errors": res.summary["errors"]}


def sustained(small: dict[str, Any], large: dict[str, Any]) -> float:
    """Images per second once started: the extra images over the extra time."""
    return (large["images"] - small["images"]) / max(large["seconds"] - small["seconds"], 1e-9)


def _rows(path: Path) -> list[tuple[str, ...]]:
    return sorted(tuple(line.split(",")) for line in path.read_text().splitlines()[1:])


def projection(rate: float) -> dict[str, Any]:
    """Machines like this one for 10 million images a day at ``rate`` images/s each."""
    need = DAY_IMAGES / DAY_SECONDS
    return {"images_per_day": DAY_IMAGES, "images_per_second_needed": round(need, 1),
            "per_machine_images_per_second": round(rate, 2),
            "machines": math.ceil(need / rate),
            "arithmetic": f"{DAY_IMAGES:,} / {DAY_SECONDS:,} s = {need:.1f} images/s; "
                          f"{need:.1f} / {rate:.2f} per machine = {need / rate:.1f} -> "
                          f"{math.ceil(need / rate)} machines"}


def main(argv: list[str] | None = None) -> int:
    from app.batch_ray import connect, rows_source
    from app.cli import _parser
    from scripts.bench_batch import photographs

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts",
                   help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    p.add_argument("--n", type=int, default=48, help="photographs")
    p.add_argument("--small", type=int, default=12, help="photographs of the shorter runs")
    p.add_argument("--size", type=int, default=1024, help="their side in px")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args(argv)
    started = machine()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        paths = photographs(folder, a.n, a.size)

        def cli_args(out: Path, *extra: str) -> argparse.Namespace:
            art = ["--artifacts", a.artifacts] if a.artifacts else []
            return _parser().parse_args([*art, "face", str(folder), "--out", str(out), *extra])

        engines = {"local": (), "ray_1_worker": ("--engine", "ray", "--workers", "1"),
                   "ray_2_workers": ("--engine", "ray", "--workers", "2")}
        ray = connect(None)  # a Ray of this machine, started before the clocks
        runs: dict[str, dict[str, Any]] = {name: {} for name in engines}
        for size in (a.small, a.n):       # the engines in turn at each size: same load drift
            for name, extra in engines.items():
                out = Path(tmp) / f"{name}_{size}.csv"
                args = cli_args(out, *extra)
                runs[name][f"{size}_images"] = timed_run(
                    paths[:size], args, out, rows_source(args) if extra else None)
        same = all(_rows(Path(tmp) / f"{name}_{a.n}.csv") == _rows(Path(tmp) / f"local_{a.n}.csv")
                   for name in engines)
        ray_version = ray.__version__
        ray.shutdown()
    for r in runs.values():
        r["sustained_images_per_second"] = round(sustained(r[f"{a.small}_images"],
                                                           r[f"{a.n}_images"]), 2)
    local, one = runs["local"], runs["ray_1_worker"]
    best = max(r["sustained_images_per_second"] for r in runs.values())
    report = {
        "command": "python -m scripts.bench_scale " + " ".join(argv if argv is not None
                                                               else sys.argv[1:]),
        "images": [a.small, a.n], "size_px": a.size, "model": "seqfake", "rows_equal": same,
        "ray": ray_version, "runs": runs,
        "ray_1_worker_overhead_pct": {
            "end_to_end": round(100 * (1 - one[f"{a.n}_images"]["images_per_second"]
                                       / local[f"{a.n}_images"]["images_per_second"]), 1),
            "sustained": round(100 * (1 - one["sustained_images_per_second"]
                                      / local["sustained_images_per_second"]), 1)},
        "projection": projection(best),
        "machine_at_start": started, "machine_at_end": machine(),
    }
    text = json.dumps(report, indent=2)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
