"""Command-line access to the same services as the UI; prints the same JSON.

    python -m app.cli face IMAGE [--threshold 0.5] [--face 1] [--crop]
    python -m app.cli video VIDEO [--frames 16] [--crop]
    python -m app.cli query --bag DIR_OR_VIDEO --word WORD
    python -m app.cli neighbours IMAGE [-k 8] [--label sneaker]
    python -m app.cli classify IMAGE [--model abcnorm] [--cam-class sneaker]
    python -m app.cli status

Bad input exits with status 2 and a one-line message on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.engine import Engine, ModelUnavailableError
from app.inputs import InputError

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
VIDEO_EXT = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app.cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("face", help="sequential deepfake analysis of a face image")
    f.add_argument("image")
    f.add_argument("--threshold", type=float)
    f.add_argument("--face", type=int, default=1, help="which face (1 = largest)")
    f.add_argument("--crop", action="store_true", help="the image is already a face crop")
    f.add_argument("--model", default="seqfake")
    v = sub.add_parser("video", help="per-frame analysis of a video")
    v.add_argument("video")
    v.add_argument("--threshold", type=float)
    v.add_argument("--frames", type=int, default=16)
    v.add_argument("--crop", action="store_true")
    q = sub.add_parser("query", help="ask whether a bag holds a query word")
    q.add_argument("--bag", required=True, help="folder of images, or a video file")
    q.add_argument("--word", required=True)
    n = sub.add_parser("neighbours", help="nearest gallery images (DCL)")
    n.add_argument("image")
    n.add_argument("-k", type=int, default=8)
    n.add_argument("--label", help="the query's true label (reports precision)")
    c = sub.add_parser("classify", help="top-5 classes and Grad-CAM (ABC-Norm)")
    c.add_argument("image")
    c.add_argument("--model", default="abcnorm")
    c.add_argument("--cam-class", help="class to explain (default: predicted)")
    c.add_argument("--cam-out", help="write the Grad-CAM overlay PNG here")
    sub.add_parser("status", help="which models are served, provider and versions")
    return p


def run(args: argparse.Namespace) -> dict:
    engine = Engine(args.artifacts)
    if args.cmd == "status":
        return {"manifest_error": engine.manifest_error, "models": engine.status()}
    if args.cmd == "face":
        from app.faces import default_detector
        from app.services.face import analyze_face

        det = None if args.crop else default_detector()
        return analyze_face(engine, det, args.image, args.threshold, args.face - 1, args.crop,
                            args.model).report
    if args.cmd == "video":
        from app.faces import default_detector
        from app.services.video import analyze_video

        det = None if args.crop else default_detector()
        return analyze_video(engine, det, args.video, args.threshold, args.frames, args.crop).report
    if args.cmd == "query":
        from app.services.qmil import query_bag

        bag = Path(args.bag)
        if bag.is_file() and bag.suffix.lower() in VIDEO_EXT:
            from app.services.video import video_bag

            return query_bag(engine, None, args.word, images=video_bag(bag)).report
        if not bag.is_dir():
            raise InputError(f"--bag must be a folder of images or a video file: {bag}")
        files = sorted(p for p in bag.iterdir() if p.suffix.lower() in IMAGE_EXT)
        return query_bag(engine, files, args.word).report
    if args.cmd == "neighbours":
        from app.services.retrieval import neighbours

        return neighbours(engine, args.image, args.k, args.label).report
    if args.cmd == "classify":
        from app.services.classify import classify

        res = classify(engine, args.image, args.model, args.cam_class)
        if args.cam_out:
            from PIL import Image

            Image.fromarray(res.cam).save(args.cam_out)
        return res.report
    raise InputError(f"unknown command {args.cmd}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        report = run(args)
    except (InputError, ModelUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
