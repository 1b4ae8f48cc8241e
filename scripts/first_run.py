"""Measure the first run as a new user meets it: start the app's main command on a fresh
artifacts folder and record, from outside, when the first page answers, when each tab
first answers through ``gradio_client`` (with one of the examples its build wrote), the
build's per-run times and the default models' headline test metrics.

Usage (from a clean clone; the measuring Python needs ``gradio_client``, e.g. another
checkout's ``.venv``)::

    python -m scripts.first_run --cwd CLONE --artifacts FRESH_DIR [--out reports/first_run]
    python -m scripts.first_run --cwd CLONE --artifacts FRESH_DIR -- bash scripts/run.sh --no-build

The command defaults to ``bash scripts/run.sh`` (set up, then ``python -m app``); the
script appends ``--artifacts DIR --port P``. Stops the app with SIGTERM once every run of
the build is ready or failed and every ready tab has answered (or at ``--timeout``).
Writes ``<out>.json`` and ``<out>.md`` with the command, the clone's commit, the machine
and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from runtime.machine import cpu_name

# which run answers in which tab, and how to ask it (examples written by the build)
TABS = {"abcnorm": "Classifier", "qmil": "Bag query", "dcl": "Retrieval", "seqfake": "Face"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _page_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def _examples(art: Path, pattern: str) -> list[Path]:
    return sorted((art / "examples").glob(pattern))


def _ask(client: Any, run: str, art: Path) -> Callable[[], Any] | None:
    """A call of ``run``'s tab with one of its examples (None while the examples are absent)."""
    from gradio_client import handle_file

    if run == "abcnorm":
        img = _examples(art, "fashion/*.png")
        return (lambda: client.predict(handle_file(str(img[0])), "", "abcnorm",
                                       api_name="/classify")) if img else None
    if run == "dcl":
        img = _examples(art, "fashion/*.png")
        return (lambda: client.predict(handle_file(str(img[0])), 4, "", "dcl",
                                       api_name="/neighbours")) if img else None
    if run == "qmil":
        bag = _examples(art, "bags/0_*/*.png")
        return (lambda: client.predict([handle_file(str(p)) for p in bag], "sneaker", "qmil",
                                       api_name="/query")) if bag else None
    if run == "seqfake":
        face = _examples(art, "faces*/*.png")
        return (lambda: client.predict(handle_file(str(face[0])), 0.5, 1, True, "seqfake",
                                       api_name="/face")) if face else None
    return None


def _metrics(art: Path) -> dict[str, dict[str, float]]:
    try:
        models = json.loads((art / "manifest.json").read_text())["models"]
    except (OSError, ValueError, KeyError):
        return {}
    return {run: {k: v for k, v in e.get("metrics", {}).items()
                  if "/" not in k and isinstance(v, (int, float))}
            for run, e in models.items()}


def measure(cmd: list[str], cwd: Path, art: Path, port: int, timeout: float,
            log_path: Path) -> dict[str, Any]:
    """Run ``cmd`` and watch it; returns the measured times (seconds from the start)."""
    from gradio_client import Client

    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    for k in ("VIRTUAL_ENV", "PYTHONPATH"):  # the command sets up its own environment
        env.pop(k, None)
    t0 = time.time()
    log = open(log_path, "w")
    proc = subprocess.Popen([*cmd, "--artifacts", str(art), "--port", str(port)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    setup_s: list[float] = []
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            lines.append(line)
            if "[setup]" in line and " installed in " in line:
                setup_s.append(time.time() - t0)

    threading.Thread(target=pump, daemon=True).start()
    first_page = None
    answered: dict[str, float] = {}
    errors: dict[str, str] = {}
    client = None
    status: dict[str, Any] = {}
    load: list[float] = []
    try:
        while time.time() - t0 < timeout:
            if proc.poll() is not None:
                raise SystemExit(f"the command exited {proc.returncode}:\n" + "".join(lines[-30:]))
            load.append(os.getloadavg()[0])
            if first_page is None and _page_up(url):
                first_page = time.time() - t0
                print(f"[first_run] first page after {first_page:.1f} s", flush=True)
                client = Client(url, verbose=False)
            if client is not None:
                status = client.predict(api_name="/status")
                runs = ((status.get("build") or {}).get("runs")  # nothing built: what is served
                        or [{"run": n, "state": "ready"} for n in _metrics(art)])
                for r in runs:
                    run = r["run"]
                    if run in TABS and run not in answered and r["state"] == "ready":
                        ask = _ask(client, run, art)
                        if ask is None:
                            continue
                        try:
                            ask()
                            answered[run] = time.time() - t0
                            print(f"[first_run] {TABS[run]} tab ({run}) answers after "
                                  f"{answered[run]:.0f} s", flush=True)
                        except Exception as exc:  # noqa: BLE001 - reported, retried
                            errors[run] = str(exc)[:300]
                settled = all(r["state"] in ("ready", "failed") for r in runs) and \
                    (bool(runs) or "--no-build" in cmd)  # --no-build: nothing will come
                if settled and all(r["run"] in answered or r["state"] == "failed"
                                   or r["run"] not in TABS for r in runs):
                    break
            time.sleep(2)
        else:
            print(f"[first_run] timed out after {timeout:.0f} s", flush=True)
    finally:
        end = time.time() - t0
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    build = status.get("build") or {}
    runs = []
    built = [r for r in build.get("runs", []) if (r.get("started") or 0) >= t0]  # by this start
    for r in build.get("runs", []):
        now = r in built
        took = (r["ended"] - r["started"]) if now and r.get("ended") else None
        runs.append({"run": r["run"], "state": r["state"] if now else "ready before the start",
                     "seconds": took,
                     "ready_after_s": (r["ended"] - t0) if now and r.get("ended") else None,
                     "tab": TABS.get(r["run"]), "tab_answers_after_s": answered.get(r["run"]),
                     "error": r.get("error") or errors.get(r["run"])})
    started = [r["started"] for r in built]
    ended = [r["ended"] for r in built if r.get("ended")]
    return {"first_page_s": first_page, "setup_s": setup_s[0] if setup_s else None,
            "build_s": (max(ended) - min(started)) if started and ended else None,
            "until_all_answer_s": end if answered else None, "runs": runs, "metrics": _metrics(art),
            "load_1min_max": round(max(load), 2) if load else None,
            "load_1min_median": round(sorted(load)[len(load) // 2], 2) if load else None}


def _fmt(s: float | None) -> str:
    if s is None:
        return "-"
    whole = round(s)  # round first: 179.6 s is "3 min 00 s", not "2 min 60 s"
    return f"{whole} s" if whole < 120 else f"{whole // 60} min {whole % 60:02d} s"


def render(res: dict[str, Any]) -> str:
    p = res["provenance"]
    out = ["# The first run, measured", "",
           f"Command: `{res['command']}`  ",
           f"Measured command (in a clone): `{res['measured']}`  ",
           f"Clone's git commit: `{res['clone_commit']}`  ",
           f"Artifacts folder: fresh (empty) at the start: {res['fresh_artifacts']}; "
           f"environment (.venv) present at the start: {res['venv_present']}  ",
           f"Machine: {p['cpu']} ({p['cpu_count']} logical cores), Python {p['python']}, "
           f"{p['platform']}; started {p['started_utc']} UTC  ",
           f"Load average (1 min) while measuring: median {res['load_1min_median']}, "
           f"max {res['load_1min_max']}  ", "",
           "| | time from the command's start |", "|---|---|",
           f"| environment installed (`[setup] installed`) | {_fmt(res['setup_s'])} |",
           f"| first page answers (HTTP 200) | {_fmt(res['first_page_s'])} |",
           f"| whole default build (first run started -> last run ready) | "
           f"{_fmt(res['build_s'])} |",
           f"| every tab answered | {_fmt(res['until_all_answer_s'])} |", "",
           "| run | tab | state | build (train + export) | ready after | tab answers after "
           "| test metrics |", "|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        m = ", ".join(f"{k} {v:.4f}" for k, v in list(res["metrics"].get(r["run"], {}).items())[:4])
        out.append(f"| {r['run']} | {r['tab'] or '-'} | {r['state']} | {_fmt(r['seconds'])} | "
                   f"{_fmt(r['ready_after_s'])} | {_fmt(r['tab_answers_after_s'])} | {m or '-'} |")
    errs = [r for r in res["runs"] if r.get("error")]
    if errs:
        out += ["", "Errors:"] + [f"- {r['run']}: {r['error']}" for r in errs]
    out += ["", "A tab 'answers' when its API call (`gradio_client`, one of the examples the "
            "build wrote) returns without an error; each call is made as soon as the build "
            "status says the run is ready."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.first_run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cwd", default=".", help="the clone to run the command in")
    p.add_argument("--artifacts", required=True, help="artifacts folder (fresh for a first run)")
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--out", default="reports/first_run", help="output path without suffix")
    p.add_argument("cmd", nargs="*", help="the command (default: bash scripts/run.sh)")
    args = p.parse_args(argv)
    from runtime.artifacts import write_report

    cwd, art = Path(args.cwd).resolve(), Path(args.artifacts).resolve()
    cmd = args.cmd or ["bash", "scripts/run.sh"]
    fresh = not art.exists() or not any(art.iterdir())
    venv = (cwd / ".venv" / "bin" / "python").exists()
    commit = subprocess.run(["git", "-C", str(cwd), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    prov = {"cpu": cpu_name(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(),
            "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = art.with_name(art.name + ".log")  # the command's output, beside the artifacts
    res = measure(cmd, cwd, art, args.port or _port(), args.timeout, log)
    res.update({"command": " ".join(["python", "-m", "scripts.first_run",
                                     *(sys.argv[1:] if argv is None else argv)]),
                "measured": " ".join(cmd) + " --artifacts DIR --port P",
                "clone_commit": commit, "fresh_artifacts": fresh, "venv_present": venv,
                "provenance": prov, "log": str(log)})
    write_report(out, res, render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
