"""The torch-free MTCNN (ONNX networks + numpy cascade, :mod:`runtime.mtcnn`) against
facenet-pytorch's MTCNN on the same images: boxes, landmarks and scores.

    python -m scripts.mtcnn_parity --artifacts DIR [--n 24] [--out reports/mtcnn_parity]

Images (:func:`parity_images`): scikit-image's astronaut as it is and resampled to the
app's detection size (640 px), mirrored, turned by 90 degrees; a 640 x 360 scene with
three faces (the astronaut, its mirror image at another size, a generated face) and a
photograph without a face (scikit-image's coffee); and the first ``--n`` generated test
faces of the build (the seqfake test split under DIR). Every detection of both detectors
is compared (no score threshold), matched by area order as the app sorts them. Needs the
full install (torch) and the exported detector (``python -m export.mtcnn``). Writes
``<out>.json`` and ``<out>.md`` (command, machine, date, versions).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

Detection = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (N, 4), scores (N,), marks (N, 5, 2)


def scene(generated: np.ndarray | None = None) -> np.ndarray:
    """A 640 x 360 RGB scene with three faces: the astronaut's face, its mirror image
    smaller, and ``generated`` (a generated face crop) or a third astronaut copy."""
    from skimage import data

    face = data.astronaut()[10:240, 110:340]
    out = np.full((360, 640, 3), 200, np.uint8)
    out[20:250, 20:250] = face
    small = cv2.resize(np.ascontiguousarray(face[:, ::-1]), (130, 130), interpolation=cv2.INTER_AREA)
    out[200:330, 280:410] = small
    third = face if generated is None else generated
    out[60:240, 440:620] = cv2.resize(third, (180, 180), interpolation=cv2.INTER_AREA)
    return out


def parity_images(generated: list[np.ndarray], extra: bool = True) -> dict[str, np.ndarray]:
    """Named RGB uint8 images (H, W, 3): the astronaut (and, with ``extra``, its 640 px,
    mirrored and turned versions), the three-face scene, coffee (no face), then each of
    ``generated`` (generated face crops)."""
    from skimage import data

    astro = data.astronaut()
    out = {"astronaut": astro,
           "astronaut_640": cv2.resize(astro, (640, 640), interpolation=cv2.INTER_LINEAR)}
    if extra:
        out["astronaut_mirrored"] = np.ascontiguousarray(astro[:, ::-1])
        out["astronaut_turned_90"] = np.ascontiguousarray(np.rot90(astro))
    out["three_faces"] = scene(generated[0] if generated else None)
    out["coffee_no_face"] = data.coffee()
    out.update({f"generated_{i:02d}": g for i, g in enumerate(generated)})
    return out


def facenet_detect(mtcnn: Any) -> Callable[[np.ndarray], Detection]:
    """facenet-pytorch's ``MTCNN.detect(..., landmarks=True)`` as (boxes, scores, marks)."""
    def detect(rgb: np.ndarray) -> Detection:
        boxes, probs, points = mtcnn.detect(rgb, landmarks=True)
        if boxes is None:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        return (np.asarray(boxes, np.float64), np.asarray(probs, np.float64),
                np.asarray(points, np.float64))
    return detect


def _by_area(d: Detection) -> Detection:
    b = d[0]
    order = np.argsort(-(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), kind="stable")
    return d[0][order], d[1][order], d[2][order]


def compare(ref: Detection, got: Detection) -> dict[str, Any]:
    """Counts and, when they agree, the largest differences (px for boxes and landmarks)."""
    ref, got = _by_area(ref), _by_area(got)
    out: dict[str, Any] = {"faces_reference": len(ref[0]), "faces_onnx": len(got[0])}
    if len(ref[0]) != len(got[0]) or not len(ref[0]):  # nothing to compare face by face
        out.update(box_px=None, landmark_px=None, score=None)
        return out
    diff = [float(np.abs(np.asarray(r, np.float64) - np.asarray(g, np.float64)).max())
            for r, g in zip(ref, got)]
    out.update(box_px=diff[0], score=diff[1], landmark_px=diff[2])
    return out


def run(images: dict[str, np.ndarray], reference: Callable[[np.ndarray], Detection],
        onnx: Callable[[np.ndarray], Detection]) -> list[dict[str, Any]]:
    """One row per image: :func:`compare` plus both detectors' seconds."""
    rows = []
    for name, rgb in images.items():
        t0 = time.perf_counter()
        ref = reference(rgb)
        t1 = time.perf_counter()
        got = onnx(rgb)
        t2 = time.perf_counter()
        rows.append({"image": name, "size": f"{rgb.shape[1]}x{rgb.shape[0]}", **compare(ref, got),
                     "seconds_facenet": round(t1 - t0, 3), "seconds_onnx": round(t2 - t1, 3)})
    return rows


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.1e}" if isinstance(v, float) else str(v)


def render(result: dict[str, Any]) -> str:
    cols = ["image", "size", "faces_reference", "faces_onnx", "box_px", "landmark_px", "score",
            "seconds_facenet", "seconds_onnx"]
    s = result["summary"]
    lines = ["# MTCNN without torch: parity with facenet-pytorch", "",
             f"Command: `{result['command']}`  ",
             f"Machine: {result['machine']}; date {result['date']}  ",
             f"Versions: {result['versions']}", "",
             f"{s['images']} images, {s['faces']} faces: face counts equal on "
             f"{s['counts_equal']} of {s['images']}; largest difference over all faces: box "
             f"{_fmt(s['max_box_px'])} px, landmark {_fmt(s['max_landmark_px'])} px, score "
             f"{_fmt(s['max_score'])}. Time (sum): facenet-pytorch {s['seconds_facenet']} s, "
             f"ONNX + numpy {s['seconds_onnx']} s.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in result["rows"]]
    return "\n".join(lines) + "\n"


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def worst(key: str) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return max(vals) if vals else None
    return {"images": len(rows), "faces": sum(r["faces_reference"] for r in rows),
            "counts_equal": sum(r["faces_reference"] == r["faces_onnx"] for r in rows),
            "max_box_px": worst("box_px"), "max_landmark_px": worst("landmark_px"),
            "max_score": worst("score"),
            "seconds_facenet": round(sum(r["seconds_facenet"] for r in rows), 2),
            "seconds_onnx": round(sum(r["seconds_onnx"] for r in rows), 2)}


def main(argv: list[str] | None = None) -> int:
    from importlib import metadata

    import onnxruntime
    from facenet_pytorch import MTCNN
    from PIL import Image

    from runtime.artifacts import artifacts_dir, write_report
    from runtime.mtcnn import MTCNNCascade
    from scripts.face_stability import generated_faces

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    p.add_argument("--n", type=int, default=24, help="generated test faces (0: none)")
    p.add_argument("--out", default="reports/mtcnn_parity", help="report path without suffix")
    args = p.parse_args(argv)
    art = artifacts_dir(args.artifacts)
    gen = [np.asarray(Image.open(path).convert("RGB"))
           for path, _ in generated_faces(art, "components")[:args.n]] if args.n else []
    cascade = MTCNNCascade(art)
    rows = run(parity_images(gen), facenet_detect(MTCNN(keep_all=True, device="cpu")),
               cascade.detect)
    result = {"command": "python -m scripts.mtcnn_parity " + " ".join(
                  shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
              "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python "
                         f"{platform.python_version()}",
              "date": time.strftime("%Y-%m-%d %H:%M"),
              "versions": f"facenet-pytorch {metadata.version('facenet-pytorch')}, torch "
                          f"{metadata.version('torch')}, onnxruntime {onnxruntime.__version__}, "
                          f"numpy {np.__version__}",
              "summary": summary(rows), "rows": rows}
    out = Path(args.out)
    write_report(out, result, render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
