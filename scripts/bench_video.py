"""Seconds to analyse a clip with two people (every face tracked and scored).

    python -m scripts.bench_video --artifacts DIR [--seconds 10] [--size 640x360] [--frames 16]

Writes an mp4v clip of two real faces walking past each other (the end-to-end test's clip,
:func:`tests.test_video_tracks.write_two_faces_video`, at 25 fps) to a temporary folder,
then times :func:`app.services.video.analyze_video` as the ``/face_video`` endpoint runs it:
the models loaded and the detector built before the clock starts (as in a running app),
one untimed warm-up call, then the median of ``--repeat`` calls. Prints one JSON line with
the figure, the tracks found and the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from app.faces import default_detector
    from app.services.video import analyze_video
    from runtime.engine import Engine
    from tests.test_video_tracks import write_two_faces_video

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts",
                   help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--size", default="640x360", help="W x H")
    p.add_argument("--frames", type=int, default=16, help="frames sampled (the default: 16)")
    p.add_argument("--model", default="seqfake")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    engine = Engine(args.artifacts)
    engine.get(args.model, "seqfake")  # loaded before the clock, as in a running app
    det = default_detector()
    fps = 25.0
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_two_faces_video(Path(tmp) / "two.mp4", n_frames=round(args.seconds * fps),
                                     fps=fps, size=(w, h))
        t0 = time.perf_counter()
        res = analyze_video(engine, det, clip, max_frames=args.frames, model_name=args.model)
        first = time.perf_counter() - t0
        runs = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = analyze_video(engine, det, clip, max_frames=args.frames, model_name=args.model)
            runs.append(time.perf_counter() - t0)
    r = res.report
    print(json.dumps({
        "clip": {"seconds": args.seconds, "size": f"{w}x{h}", "fps": fps, "people": 2},
        "frames_sampled": r["frames_sampled"], "tracks": len(r["tracks"]),
        "faces_analysed": sum(t["frames"] for t in r["tracks"]),
        "seconds_median": round(statistics.median(runs), 3),
        "seconds_runs": [round(t, 3) for t in runs], "seconds_first_call": round(first, 3),
        "model": args.model, "detector": getattr(det, "name", None),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.processor() or platform.machine()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
