"""Batch throughput of the face command: N photographs of SIZE px, face detection included.

    python -m scripts.bench_batch --artifacts DIR [--n 100] [--size 1024]

Writes N JPEG photographs (scikit-image's astronaut, resized so the longer side is SIZE px,
each shifted, mirrored or re-framed a little so no two files are equal) to a temporary
folder, then runs the same batch as ``python -m app.cli face FOLDER --out results.csv`` in
this process and prints one JSON line: images per second over the batch (models loaded
and the detector built before the clock starts, as in a running app), the faces found, and
the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def photographs(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """``n`` distinct JPEG photographs of one face, longer side ``size`` px."""
    from skimage import data

    rng = np.random.default_rng(seed)
    base = Image.fromarray(data.astronaut())
    out = []
    for i in range(n):
        img = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else base
        w, h = img.size
        dx, dy = rng.integers(0, 40, size=2)
        img = img.crop((dx, dy, w - 40 + dx, h - 40 + dy)).resize((size, size), Image.BICUBIC)
        path = folder / f"photo_{i:03d}.jpg"
        img.save(path, quality=int(rng.integers(80, 96)))
        out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    from app.batch import run_batch
    from app.faces import default_detector
    from app.services import face as face_svc
    from runtime.engine import Engine

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--model", default="seqfake")
    args = p.parse_args(argv)
    engine = Engine(args.artifacts)
    models = face_svc.resolve_models(engine, args.model)
    det = default_detector()
    with tempfile.TemporaryDirectory() as tmp:
        paths = photographs(Path(tmp), args.n, args.size)
        columns = face_svc.batch_columns(engine, models)
        run_batch(paths[:1], lambda q: face_svc.batch_rows(engine, det, q, models), columns,
                  show_bar=False)  # warm-up: sessions created, detector's first call
        t0 = time.perf_counter()
        res = run_batch(paths, lambda q: face_svc.batch_rows(engine, det, q, models), columns,
                        out=Path(tmp) / "results.csv", count_key="faces")
        seconds = time.perf_counter() - t0
    print(json.dumps({
        "images": args.n, "size_px": args.size, "model": args.model, "seconds": round(seconds, 2),
        "images_per_second": round(args.n / seconds, 2), "faces": res.summary["faces"],
        "errors": res.summary["errors"], "detector": det.name,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
