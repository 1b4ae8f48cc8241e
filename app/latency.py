"""``python -m app.latency``: cold start of the app and face-tab latency on a 1024 px photo.

Cold start: wall time from launching ``python -m app --no-build`` (artifacts present) to
the first HTTP 200 on 127.0.0.1. Face latency: the face service end to end (decode,
MTCNN detection, alignment, ONNX model, where-map) on scikit-image's astronaut photo
resized to 1024 x 1024, median of repeats after one warm-up call. Writes
``reports/latency.json`` and ``reports/latency.md``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from runtime.artifacts import artifacts_dir, write_json_atomic


def cold_start(artifacts: Path, port: int = 7977, timeout: float = 120) -> float:
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "app", "--no-build", "--artifacts", str(artifacts),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        while time.time() - t0 < timeout:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).status == 200:
                    return time.time() - t0
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("app did not start")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def face_latency(artifacts: Path, repeats: int = 10) -> dict[str, float]:
    from skimage import data

    from runtime.engine import Engine
    from app.faces import default_detector
    from app.services.face import analyze_face

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((1024, 1024), Image.BICUBIC))
    engine, det = Engine(artifacts), default_detector(artifacts=artifacts)
    analyze_face(engine, det, photo)  # warm-up (sessions, detector)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        rep = analyze_face(engine, det, photo).report
        times.append(time.perf_counter() - t)
    return {"median_s": round(statistics.median(times), 4), "max_s": round(max(times), 4),
            "faces_found": len(rep["faces"]), "repeats": repeats}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.latency", description=__doc__)
    p.add_argument("--artifacts")
    p.add_argument("--out", default="reports")
    args = p.parse_args(argv)
    art = artifacts_dir(args.artifacts)
    starts = [cold_start(art) for _ in range(3)]
    face = face_latency(art)
    report = {"command": "python -m app.latency", "cpu_count": os.cpu_count(),
              "cold_start_s": {"runs": [round(s, 2) for s in starts],
                               "median": round(statistics.median(starts), 2)},
              "face_1024px": face}
    write_json_atomic(Path(args.out) / "latency.json", report)
    (Path(args.out) / "latency.md").write_text(
        "# App latency\n\n"
        f"Command: `python -m app.latency` on {os.cpu_count()} CPU cores.\n\n"
        f"- Cold start with artifacts present (launch to first HTTP 200): median "
        f"{report['cold_start_s']['median']} s over 3 runs {report['cold_start_s']['runs']}\n"
        f"- Face tab on a 1024 x 1024 photo (decode + MTCNN + align + ONNX + map): median "
        f"{face['median_s']} s, max {face['max_s']} s over {face['repeats']} calls, "
        f"{face['faces_found']} face found\n")
    print(report)
    return 0


if __name__ == "__main__":
    from runtime.cli import run_main

    raise SystemExit(run_main(main))
