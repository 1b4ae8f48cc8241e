"""``python -m app.loadtest``: concurrent clients against a running app, fetching what a
browser fetches.

Starts ``python -m app --no-build`` on a free port (its log kept, to count tracebacks),
computes each request's answer alone, then runs 4, 8 and 16 concurrent gradio_client
clients (``--duration`` seconds each) and, with ``--soak SECONDS``, a long run of
``--soak-clients`` clients. The clients walk a mix of real files on every endpoint with
hostile files mixed in (:mod:`app.loadmix`, ``--hostile-every``). Every output file an
answer refers to (images, JSON downloads) is downloaded and checked: each image is
decoded, each JSON parsed and compared with the answer's in-band report; a download that
breaks off or does not decode is a *cut download*. An answer whose key differs from the one
computed alone is *wrong*; a hostile file must be refused with the user-facing message.

Writes ``reports/load.json`` and ``reports/load.md``: calls, errors, wrong answers, cut
downloads, p50/p95/p99 latency (download included), and the app's RSS (with its children)
after warm-up and at the end of each run; exit status 1 when anything failed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from app.loadmix import Request, build_mix, interleave
from runtime.artifacts import artifacts_dir, write_json_atomic

IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg", ".gif")
CUT_MARKERS = ("peer closed", "RemoteProtocolError", "incomplete", "Content-Length",
               "IncompleteRead", "ReadError", "ConnectionReset")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
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


def _files_in(value: Any, root: Path) -> list[Path]:
    """Paths under ``root`` (the client's download folder) anywhere in an answer."""
    found: list[Path] = []
    if isinstance(value, str):
        if value.startswith(str(root)):
            found.append(Path(value))
    elif isinstance(value, dict):
        for v in value.values():
            found += _files_in(v, root)
    elif isinstance(value, (list, tuple)):
        for v in value:
            found += _files_in(v, root)
    return found


def check_downloads(result: Any, root: Path) -> tuple[int, list[str]]:
    """(files checked, problems) for the downloaded files of one answer: each image must
    decode, each JSON parse and equal the answer's in-band report (when it has one)."""
    from PIL import Image

    problems: list[str] = []
    files = _files_in(result, root)
    reports = [v for v in (result if isinstance(result, (list, tuple)) else [result])
               if isinstance(v, dict)]
    for f in files:
        try:
            if f.stat().st_size == 0:
                problems.append(f"{f.name}: empty download")
            elif f.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(f) as im:
                    im.load()
            elif f.suffix.lower() == ".json":
                data = json.loads(f.read_text())
                if reports and not any(data == json.loads(json.dumps(r, default=str))
                                       for r in reports):
                    problems.append(f"{f.name}: differs from the answer's report")
        except Exception as exc:  # noqa: BLE001 - a broken download
            problems.append(f"{f.name}: {type(exc).__name__}: {str(exc)[:120]}")
    for f in files:  # keep the client's folder small over a long soak
        if f.parent != root:
            shutil.rmtree(f.parent, ignore_errors=True)
        else:
            f.unlink(missing_ok=True)
    return len(files), problems


def _rss(proc: psutil.Process) -> int:
    try:
        return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
    except psutil.Error:
        return 0


def run_level(url: str, mix: list[Request], expected: dict[int, Any], clients: int,
              duration: float, proc: psutil.Process, download: bool, warmup: float
              ) -> dict[str, Any]:
    """``clients`` clients walking ``mix`` for ``duration`` seconds."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    lat: list[float] = []
    problems: list[str] = []
    counts = {"calls": 0, "ok": 0, "refused_as_expected": 0, "errors": 0, "wrong": 0,
              "cut_downloads": 0, "files_checked": 0}
    lock = threading.Lock()
    t_start = time.time()
    stop = t_start + duration
    rss: dict[str, Any] = {"warm": None, "peak": _rss(proc)}
    ids = {id(r): i for i, r in enumerate(mix)}

    def note(kind: str, msg: str | None = None) -> None:
        with lock:
            counts[kind] += 1
            if msg and len(problems) < 12:
                problems.append(msg)

    def client_loop(cid: int) -> None:
        folder = Path(tempfile.mkdtemp(prefix=f"replens-load-{cid}-"))
        c = Client(url, verbose=False, download_files=str(folder) if download else False)
        i = cid * 7
        try:
            while time.time() < stop:
                req = mix[i % len(mix)]
                i += 1
                with lock:
                    counts["calls"] += 1
                t = time.perf_counter()
                try:
                    res = c.predict(*req.args, api_name=req.api)
                except AppError as exc:
                    msg = str(exc)
                    if req.hostile and "Internal error" not in msg:
                        note("refused_as_expected")
                    else:
                        note("errors", f"{req.api} {req.label}: {msg[:200]}")
                    continue
                except Exception as exc:  # noqa: BLE001 - transport failures
                    text = f"{type(exc).__name__}: {exc}"
                    kind = "cut_downloads" if any(m in text for m in CUT_MARKERS) else "errors"
                    note(kind, f"{req.api} {req.label}: {text[:200]}")
                    continue
                elapsed = time.perf_counter() - t
                if req.hostile:
                    note("wrong", f"{req.api} {req.label}: answered instead of refused")
                    continue
                checked, bad = check_downloads(res, folder) if download else (0, [])
                with lock:
                    counts["files_checked"] += checked
                if bad:
                    note("cut_downloads", f"{req.api} {req.label}: {bad[0]}")
                    continue
                if req.key(res) != expected[ids[id(req)]]:
                    note("wrong", f"{req.api} {req.label}: answer differs from the one alone")
                    continue
                with lock:
                    counts["ok"] += 1
                    lat.append(elapsed)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def sampler() -> None:
        while time.time() < stop:
            now = _rss(proc)
            rss["peak"] = max(rss["peak"], now)
            if rss["warm"] is None and time.time() - t_start >= warmup:
                rss["warm"] = now
            time.sleep(0.5)

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
    threads.append(threading.Thread(target=sampler))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t_start
    end = _rss(proc)
    rss["peak"] = max(rss["peak"], end)
    warm = rss["warm"] or end
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
    return {"clients": clients, "duration_s": round(wall, 1), **counts,
            "throughput_rps": round(counts["ok"] / wall, 2),
            "latency_ms": {"p50": round(1e3 * q[49], 1), "p95": round(1e3 * q[94], 1),
                           "p99": round(1e3 * q[98], 1)},
            "rss_mb": {"after_warmup": round(warm / 2**20, 1), "end": round(end / 2**20, 1),
                       "peak": round(rss["peak"] / 2**20, 1),
                       "growth_after_warmup_pct": round(100 * (end - warm) / warm, 1) if warm else None},
            "problem_samples": problems}


def _served(url: str) -> list[str]:
    from gradio_client import Client

    st = Client(url, verbose=False).predict(api_name="/status")
    return [n for n, m in st["models"].items() if m["status"] == "ok"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts")
    p.add_argument("--clients", default="4,8,16", help="client counts of the short runs ('' for none)")
    p.add_argument("--duration", type=float, default=60, help="seconds of each short run")
    p.add_argument("--soak", type=float, default=0, help="seconds of the soak (0: none)")
    p.add_argument("--soak-clients", type=int, default=16)
    p.add_argument("--hostile-every", type=int, default=30,
                   help="one hostile request after every N real ones (30: about 3 %%)")
    p.add_argument("--concurrency", type=int, help="the app's --concurrency (default: app/serve.yaml)")
    p.add_argument("--no-download", action="store_true",
                   help="do not fetch the answers' output files (in-band JSON only)")
    p.add_argument("--out", default="reports")
    args = p.parse_args(argv)
    from gradio_client import Client

    download = not args.no_download
    art = artifacts_dir(args.artifacts)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "app", "--no-build", "--artifacts", str(art), "--port", str(port)]
    if args.concurrency:
        cmd += ["--concurrency", str(args.concurrency)]
    work = Path(tempfile.mkdtemp(prefix="replens-loadmix-"))
    log_path = work / "app.log"
    log_fh = open(log_path, "w")
    app = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT,
                           env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        _wait_ready(url, app)
        proc = psutil.Process(app.pid)
        from gradio_client import handle_file

        real, hostile = build_mix(art / "examples", work, handle_file, _served(url))
        mix = interleave(real, hostile, args.hostile_every)
        alone = Client(url, verbose=False, download_files=False)
        expected = {}
        for i, r in enumerate(mix):
            if not r.hostile:
                expected[i] = r.key(alone.predict(*r.args, api_name=r.api))
        levels = [run_level(url, mix, expected, int(c), args.duration, proc, download,
                            warmup=min(10.0, args.duration / 4))
                  for c in args.clients.split(",") if c.strip()]
        soak = (run_level(url, mix, expected, args.soak_clients, args.soak, proc, download,
                          warmup=min(60.0, args.soak / 10)) if args.soak > 0 else None)
    finally:
        app.terminate()
        app.wait(timeout=30)
        log_fh.close()
    log_text = log_path.read_text(errors="replace")
    runs = levels + ([soak] if soak else [])
    report = {
        "command": "python -m app.loadtest " + " ".join(argv if argv is not None else sys.argv[1:]),
        "app_command": " ".join(cmd[1:]),
        "settings": {"clients_download_output_files": download,
                     "hostile_every": args.hostile_every,
                     "requests": [f"{r.api} {r.label}" for r in real],
                     "hostile_requests": [f"{r.api} {r.label}" for r in hostile],
                     "host": "127.0.0.1"},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "levels": levels, "soak": soak,
        "server_log": {"tracebacks": log_text.count("Traceback (most recent call last)"),
                       "refusal_lines": log_text.count(" refused"),
                       "lines": log_text.count("\n")},
        "totals": {k: sum(r[k] for r in runs) for k in
                   ("calls", "ok", "refused_as_expected", "errors", "wrong", "cut_downloads",
                    "files_checked")},
    }
    out = Path(args.out)
    write_json_atomic(out / "load.json", report)
    (out / "load.md").write_text(render(report))
    print(render(report))
    t = report["totals"]
    grew = soak is not None and (soak["rss_mb"]["growth_after_warmup_pct"] or 0) > 10
    return 0 if t["errors"] == 0 and t["wrong"] == 0 and t["cut_downloads"] == 0 and not grew else 1


def render(report: dict[str, Any]) -> str:
    """reports/load.md from the JSON report."""
    s = report["settings"]
    lines = ["# Load test", "",
             f"Command: `{report['command']}` (app: `{report['app_command']}`)", "",
             f"Machine: {report['machine']['cpu_count']} CPUs, {report['machine']['platform']}, "
             f"Python {report['machine']['python']}.", "",
             f"Clients download every output file: **{s['clients_download_output_files']}** "
             f"(each image decoded, each JSON parsed and compared with the in-band report). "
             f"Requests ({len(s['requests'])}, walked in turn by every client): "
             + "; ".join(s["requests"]) + f". Hostile, one after every {s['hostile_every']} real "
             f"requests (must be refused with a message): " + "; ".join(s["hostile_requests"]) + ".",
             "", "| run | clients | s | calls | ok | refused (hostile) | errors | wrong | cut downloads "
             "| files checked | ok/s | p50 ms | p95 ms | p99 ms | RSS MB after warm-up -> end (peak) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    runs = [("short", lv) for lv in report["levels"]] + ([("soak", report["soak"])] if report["soak"] else [])
    for kind, lv in runs:
        r = lv["rss_mb"]
        lines.append(f"| {kind} | {lv['clients']} | {lv['duration_s']} | {lv['calls']} | {lv['ok']} | "
                     f"{lv['refused_as_expected']} | {lv['errors']} | {lv['wrong']} | "
                     f"{lv['cut_downloads']} | {lv['files_checked']} | {lv['throughput_rps']} | "
                     f"{lv['latency_ms']['p50']} | {lv['latency_ms']['p95']} | {lv['latency_ms']['p99']} | "
                     f"{r['after_warmup']} -> {r['end']} ({r['peak']}) |")
    t = report["totals"]
    lines += ["", f"Totals: {t['calls']} calls, {t['errors']} errors, {t['wrong']} wrong answers, "
              f"{t['cut_downloads']} cut downloads, {t['files_checked']} downloaded files checked.",
              ""]
    if report["soak"]:
        g = report["soak"]["rss_mb"]["growth_after_warmup_pct"]
        lines.append(f"Soak memory: {g} % growth from after warm-up to the end (target: at most 10 %).")
        lines.append("")
    lg = report["server_log"]
    lines += [f"Server log: {lg['lines']} lines, {lg['tracebacks']} tracebacks, "
              f"{lg['refusal_lines']} one-line refusals (expected input errors are logged as one "
              f"line; an unexpected one gets a traceback and an error id).", ""]
    for kind, lv in runs:
        if lv["problem_samples"]:
            lines.append(f"Problems ({kind}, {lv['clients']} clients): "
                         + "; ".join(lv["problem_samples"][:5]))
    lines += ["", "Why outputs can be fetched under load: every file an answer refers to is "
              "written once, atomically, in a folder of its own (`app/outputs.py`), so no "
              "request's file is rewritten while another request's client is downloading it. "
              "Before, Gradio stored returned pictures under their content hash and rewrote "
              "them in place: an earlier run saw 10 of 511 downloads cut off."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from runtime.cli import run_main

    raise SystemExit(run_main(main))
