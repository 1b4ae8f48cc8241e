"""``python -m app.loadtest``: concurrent clients against a running app, on 127.0.0.1.

Starts ``python -m app --no-build`` on a free port, computes each endpoint's answer alone,
then runs 4, 8 and 16 concurrent gradio_client clients (``--duration`` seconds each)
calling the four endpoints round-robin, and checks every answer against the one computed
alone. Writes ``reports/load.json`` and ``reports/load.md`` with throughput, p50/p95/p99
latency, errors, wrong answers and the app's peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from runtime.artifacts import artifacts_dir, write_json_atomic


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import urllib.request

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"app did not answer at {url} within {timeout} s")


def requests_for(artifacts: Path) -> list[tuple[str, tuple, Any]]:
    """(api_name, args, key-extractor) for each endpoint, on the shipped examples (each tab
    names its own requests)."""
    from gradio_client import handle_file

    from app.tabs import tabs

    return [r for _, tab in tabs() for r in tab.sample_requests(artifacts / "examples", handle_file)]


DOWNLOAD = [False]


def run_level(url: str, reqs, expected, clients: int, duration: float, proc: psutil.Process
              ) -> dict[str, Any]:
    from gradio_client import Client

    lat: list[float] = []
    errors: list[str] = []
    wrong = 0
    lock = threading.Lock()
    stop = time.time() + duration
    peak = [proc.memory_info().rss]

    def client_loop(cid: int) -> None:
        nonlocal wrong
        # answers (JSON) come in-band; output files are not fetched (see --download-files)
        c = Client(url, verbose=False, download_files=DOWNLOAD[0])
        i = cid
        while time.time() < stop:
            api, args, key = reqs[i % len(reqs)]
            i += 1
            t = time.perf_counter()
            try:
                res = c.predict(*args, api_name=api)
                ok = key(res) == expected[api]
            except Exception as exc:  # noqa: BLE001 - counted as an error
                with lock:
                    errors.append(f"{api}: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            with lock:
                lat.append(time.perf_counter() - t)
                wrong += not ok

    def sampler() -> None:
        while time.time() < stop:
            try:
                rss = proc.memory_info().rss + sum(ch.memory_info().rss for ch in proc.children(recursive=True))
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                pass
            time.sleep(0.25)

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
    threads.append(threading.Thread(target=sampler))
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
    return {"clients": clients, "duration_s": round(wall, 1), "requests_ok": len(lat),
            "errors": len(errors), "error_samples": errors[:5], "wrong_answers": wrong,
            "throughput_rps": round(len(lat) / wall, 2),
            "latency_ms": {"p50": round(1e3 * q[49], 1), "p95": round(1e3 * q[94], 1),
                           "p99": round(1e3 * q[98], 1)},
            "peak_rss_mb": round(peak[0] / 2**20, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.loadtest", description=__doc__)
    p.add_argument("--artifacts")
    p.add_argument("--clients", default="4,8,16")
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--out", default="reports")
    p.add_argument("--download-files", action="store_true",
                   help="clients also download every output file (images, JSON)")
    args = p.parse_args(argv)
    from gradio_client import Client

    DOWNLOAD[0] = args.download_files

    art = artifacts_dir(args.artifacts)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "app", "--no-build", "--artifacts", str(art), "--port", str(port),
           "--concurrency", str(args.concurrency)]
    app = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        _wait_ready(url, app)
        proc = psutil.Process(app.pid)
        reqs = requests_for(art)
        alone = Client(url, verbose=False)
        expected = {api: key(alone.predict(*a, api_name=api)) for api, a, key in reqs}
        levels = [run_level(url, reqs, expected, int(c), args.duration, proc)
                  for c in args.clients.split(",")]
    finally:
        app.terminate()
        app.wait(timeout=30)
    report = {"command": "python -m app.loadtest " + " ".join(argv or sys.argv[1:]),
              "app_command": " ".join(cmd[1:]),
              "settings": {"queue_default_concurrency_limit": args.concurrency, "queue_max_size": 64,
                           "clients_download_output_files": args.download_files,
                           "endpoints": [r[0] for r in reqs], "host": "127.0.0.1"},
              "machine": {"cpu_count": os.cpu_count(), "platform": sys.platform},
              "levels": levels,
              "total_errors": sum(lv["errors"] for lv in levels),
              "total_wrong": sum(lv["wrong_answers"] for lv in levels)}
    out = Path(args.out)
    write_json_atomic(out / "load.json", report)
    lines = ["# Load test", "", f"Command: `{report['command']}` (app: `{report['app_command']}`)", "",
             f"Queue: default_concurrency_limit={args.concurrency}, max_size=64; endpoints "
             f"{', '.join(report['settings']['endpoints'])} round-robin; answers compared with "
             f"each endpoint's answer computed alone.", "",
             "| clients | requests | req/s | p50 ms | p95 ms | p99 ms | errors | wrong | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for lv in levels:
        lines.append(f"| {lv['clients']} | {lv['requests_ok']} | {lv['throughput_rps']} | "
                     f"{lv['latency_ms']['p50']} | {lv['latency_ms']['p95']} | {lv['latency_ms']['p99']} | "
                     f"{lv['errors']} | {lv['wrong_answers']} | {lv['peak_rss_mb']} |")
    lines += ["", "Notes:", "",
              "- Clients send byte-identical uploads concurrently. Gradio's upload cache keeps "
              "identical files under one path, so a request could see its upload mid-write "
              "(an earlier run: 5 of 1,001 requests got 'empty file'); `app.inputs` now waits "
              "for a just-written empty upload to settle.",
              "- Output files (images, JSON downloads) are not fetched by the clients unless "
              "`--download-files` is given: with it, an earlier run saw 10 of 511 downloads cut "
              "off ('peer closed connection') when concurrent requests produced byte-identical "
              "output files under one cache path. The answers compared here are the in-band JSON "
              "reports."]
    (out / "load.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["total_errors"] == 0 and report["total_wrong"] == 0 else 1


if __name__ == "__main__":
    from runtime.cli import run_main

    raise SystemExit(run_main(main))
