"""Size, install time and start time of the torch-free serving install against the full one.

    python -m scripts.bench_install --artifacts DIR [--kinds serve,full] [--keep]
                                    [--out reports/serving] [--starts 3]
    python -m scripts.bench_install --render reports/serving.json   # Markdown only

For each kind, a fresh virtual environment in a temporary folder (``--workdir``, default
under the system's temp folder) is created and its requirements installed as the setup
scripts do (``serve``: ``requirements-serve.txt``, what ``scripts/serve.sh`` installs;
``full``: ``requirements.txt`` then ``--no-deps requirements-nodeps.txt``, what
``scripts/setup.sh`` installs without the test tools). Measured: seconds to create the
venv and to install, the venv's size on disk (``du -sb``), whether ``import torch`` works
in it, and the seconds from ``python -m app --serve-only --artifacts DIR`` to the first
page served (HTTP 200), median of ``--starts`` starts. In the serving venv the services then run on DIR
(:mod:`tests.torch_free_services`: every tab's service, face detection included).

pip uses this machine's configuration (its local wheel folders and cache) for both kinds
alike; the figures are for installs from that cache, not a cold download. Writes
``<out>.json`` and ``<out>.md`` with the command, the machine and the date.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"serve": [["-r", "requirements-serve.txt"]],  # pip install arguments, in order
         "full": [["-r", "requirements.txt"], ["--no-deps", "-r", "requirements-nodeps.txt"]]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def _pip(vpy: Path, args: list[str]) -> None:
    r = subprocess.run([str(vpy), "-m", "pip", "install", "-q", *args], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"pip install {' '.join(args)} failed:\n{r.stderr[-3000:]}")


def install(kind: str, venv: Path) -> dict[str, Any]:
    """Create ``venv`` and install the kind's requirements; seconds and size."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    subprocess.run([str(vpy), "-m", "pip", "install", "-q", "--upgrade", "pip"],
                   capture_output=True)
    t_venv = time.perf_counter() - t0
    t1 = time.perf_counter()
    for args in KINDS[kind]:
        _pip(vpy, args)
    t_install = time.perf_counter() - t1
    torch_ok = subprocess.run([str(vpy), "-c", "import torch"], capture_output=True).returncode == 0
    return {"venv_seconds": round(t_venv, 1), "install_seconds": round(t_install, 1),
            "size_bytes": _du_bytes(venv), "torch_importable": torch_ok,
            "largest": largest_entries(venv)}


def largest_entries(venv: Path, n: int = 8) -> dict[str, int]:
    """The ``n`` largest entries of the venv's site-packages (bytes), largest first."""
    (site,) = venv.glob("lib/python*/site-packages")
    sizes = {p.name: _du_bytes(p) for p in site.iterdir()}
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:n])


def start_seconds(vpy: Path, artifacts: Path, timeout: float = 300) -> float:
    """Seconds from launching ``python -m app --serve-only`` to the first HTTP 200."""
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(vpy), "-m", "app", "--serve-only", "--artifacts", str(artifacts),
                             "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"the app exited ({proc.returncode}): {proc.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    if r.status == 200:
                        return round(time.perf_counter() - t0, 1)
            except OSError:
                time.sleep(0.25)
        raise TimeoutError(f"no page within {timeout} s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def services_without_torch(vpy: Path, artifacts: Path, work: Path) -> dict[str, Any]:
    """Run :mod:`tests.torch_free_services` with ``vpy`` on the astronaut and a two-person
    clip (written here, with the full environment's scikit-image)."""
    from PIL import Image
    from skimage import data

    from tests.test_video_tracks import write_two_faces_video

    work.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.astronaut()).save(work / "astronaut.png")
    write_two_faces_video(work / "two_faces.mp4", n_frames=6)
    t0 = time.perf_counter()
    r = subprocess.run([str(vpy), "-m", "tests.torch_free_services", str(artifacts), str(work)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    if r.returncode:
        raise RuntimeError(f"the services failed in the serving venv:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out.pop("modules")
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def render(result: dict[str, Any]) -> str:
    """The Markdown report of :func:`main`'s result."""
    rows = result["kinds"]
    lines = ["# The serving install: size, install and start time", "",
             f"Command: `{result['command']}`  ",
             f"Machine: {result['machine']}; date {result['date']}; artifacts "
             f"`{result['artifacts']}`", "",
             "| install | requirements | venv size | venv + pip upgrade | install | "
             "torch importable | first page after start (median) |", "|---|---|---|---|---|---|---|"]
    for kind, r in rows.items():
        reqs = " + ".join(" ".join(a) for a in KINDS[kind]).replace("-r ", "")
        lines.append(f"| {kind} | {reqs} | {_gb(r['size_bytes'])} | {r['venv_seconds']} s | "
                     f"{r['install_seconds']} s | {r['torch_importable']} | "
                     f"{r['start_seconds']} s ({', '.join(map(str, r['start_seconds_runs']))}) |")
    if {"serve", "full"} <= set(rows):
        s, f = rows["serve"], rows["full"]
        lines += ["", f"The serving install is {s['size_bytes'] / f['size_bytes']:.1%} of the "
                      f"full one's size and installs in {s['install_seconds'] / max(f['install_seconds'], 1e-9):.1%} "
                      f"of its time."]
    lines += ["", "Largest entries of site-packages:", ""]
    lines += [f"- {kind}: " + ", ".join(f"{name} {_gb(b)}" for name, b in r["largest"].items())
              for kind, r in rows.items()]
    if "services" in result:
        lines += ["", "Every tab's service in the serving venv (no torch installed; "
                      "`tests/torch_free_services.py`):", "", "```json",
                  json.dumps(result["services"], indent=1), "```"]
    lines += ["", "pip ran with this machine's configuration (local wheel folders, cache) for "
                  "both installs alike: install times are from that cache, not cold downloads."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="an exported artifacts folder to serve (required "
                                        "unless --render)")
    p.add_argument("--render", metavar="JSON", help="only rewrite the Markdown of an earlier run")
    p.add_argument("--kinds", default="serve,full", help="comma-separated: serve, full")
    p.add_argument("--workdir", help="where the venvs go (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the venvs")
    p.add_argument("--starts", type=int, default=3, help="app starts timed per venv (median)")
    p.add_argument("--out", default="reports/serving", help="report path without suffix")
    args = p.parse_args(argv)
    if args.render:
        from runtime.artifacts import write_bytes_atomic

        earlier = json.loads(Path(args.render).read_text())
        write_bytes_atomic(Path(args.render).with_suffix(".md"), render(earlier).encode())
        return 0
    if not args.artifacts:
        p.error("--artifacts is required")
    artifacts = Path(args.artifacts).resolve()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="replens-install-"))
    result: dict[str, Any] = {
        "command": "python -m scripts.bench_install " + " ".join(shlex.quote(a) for a in
                                                                 (argv or sys.argv[1:])),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python "
                   f"{platform.python_version()}, load average "
                   f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the start",
        "date": time.strftime("%Y-%m-%d %H:%M"), "artifacts": str(artifacts), "kinds": {}}
    try:
        for kind in args.kinds.split(","):
            venv = work / f"venv-{kind}"
            print(f"[bench] {kind}: installing into {venv}", flush=True)
            r = install(kind, venv)
            vpy = venv / "bin" / "python"
            starts = [start_seconds(vpy, artifacts) for _ in range(args.starts)]
            r["start_seconds"], r["start_seconds_runs"] = statistics.median(starts), starts
            if kind == "serve":
                result["services"] = services_without_torch(vpy, artifacts, work / "inputs")
            result["kinds"][kind] = r
            print(f"[bench] {kind}: {json.dumps(r)}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from runtime.artifacts import write_report

    write_report(out, result, render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
