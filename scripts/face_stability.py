"""Verdict stability of the face pipeline under re-encoding, rescaling and file formats.

    python -m scripts.face_stability --artifacts DIR [--n 600] [--detect-n 120] [--photos 12]

For generated test faces (the seqfake test split of the build, :mod:`training.data.faces_synth`;
all of it by default, else a fixed-seed subset), every transform of :data:`TRANSFORMS` is
written to a file and analysed through the app's own code path
(:func:`app.services.face.analyze_face_models` on the file); its verdict (manipulated / real
at the model's threshold) and predicted sequence are compared with those of the original
file. Three paths are measured:

* ``crop/<task>``: the generated faces are whole-face crops, analysed with ``is_crop=True``;
* ``detect/<task>``: the first ``detect-n`` faces of the selection, with face detection; only
  faces whose original file gives a face count, and a transform on which no face is found
  counts as a disagreement;
* ``photo``: ``photos`` re-framed copies of scikit-image's astronaut photograph (a real
  face), with face detection.

Pipeline variants (:func:`pipeline_variants`) are measured side by side on the same files:
``before`` (the detector at the file's own size, crops warped from the full-size image: the
pipeline before reports/stability.md), ``canonical`` (detection at a canonical size only),
``after`` (the app's pipeline now) and ``after+flip`` (``after`` with the model's
probabilities averaged over the crop and its mirror image; probability-ranked models only, a
measurement, not an app option). The crop path has no detection: ``after`` and ``after+flip``.

Writes ``<out>/stability.json`` and ``<out>/stability.md``: per path, variant, model and
transform the agreement of the verdict and of the exact sequence, the mean absolute change
of the fake probability and the files with no face found; n, the command, seed, machine,
date and model versions. ``--render JSON`` rewrites the markdown of an earlier run.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112
# transforms that remove colour information on purpose: reported, not held to the target
INFORMATIONAL = ("grayscale",)


def _save(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _rescale(img: Image.Image, factor: float) -> Image.Image:
    """The image resized by ``factor`` with bicubic resampling (Pillow's default)."""
    return img.resize((max(1, round(img.width * factor)), max(1, round(img.height * factor))),
                      Image.BICUBIC)


def _exif_rotated(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    """Pixels rotated 90 degrees counter-clockwise, with EXIF Orientation 6 ("rotate 90
    clockwise to display"), which undoes it in a viewer that honours EXIF."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return _save(img.transpose(Image.Transpose.ROTATE_90), fmt, exif=exif, **kw)


def _rgba_opaque(img: Image.Image) -> bytes:
    rgba = img.convert("RGBA")
    rgba.putalpha(255)
    return _save(rgba, "PNG")


# name -> (the original's RGB pixels -> (file bytes, file suffix))
Encoder = Callable[[Image.Image], tuple[bytes, str]]
TRANSFORMS: dict[str, Encoder] = {
    "png": lambda im: (_save(im, "PNG"), ".png"),
    "jpeg_q95": lambda im: (_save(im, "JPEG", quality=95), ".jpg"),
    "jpeg_q80": lambda im: (_save(im, "JPEG", quality=80), ".jpg"),
    "jpeg_q70": lambda im: (_save(im, "JPEG", quality=70), ".jpg"),
    "scale_0.5": lambda im: (_save(_rescale(im, 0.5), "PNG"), ".png"),
    "scale_2": lambda im: (_save(_rescale(im, 2.0), "PNG"), ".png"),
    "scale_4": lambda im: (_save(_rescale(im, 4.0), "PNG"), ".png"),
    "rgba_opaque": lambda im: (_rgba_opaque(im), ".png"),
    "cmyk_jpeg": lambda im: (_save(im.convert("CMYK"), "JPEG", quality=95), ".jpg"),
    "exif_rotated_png": lambda im: (_exif_rotated(im, "PNG"), ".png"),
    "exif_rotated_jpeg": lambda im: (_exif_rotated(im, "JPEG", quality=95), ".jpg"),
    "grayscale": lambda im: (_save(im.convert("L"), "PNG"), ".png"),
}


@dataclass(frozen=True)
class Variant:
    """A face pipeline setting: ``analyze_face_models(detect_side=, antialias=)``, and
    whether the probabilities are averaged over the crop and its mirror (``flip``)."""

    detect_side: int | None
    antialias: bool
    flip: bool
    description: str


def pipeline_variants() -> dict[str, Variant]:
    """The variants measured, by name (the detection paths measure them all)."""
    from app.services.face import DETECT_SIDE

    return {
        "before": Variant(None, False, False, "the detector at the file's own size (MTCNN "
                          "shrinks images over 640 px only), crops warped from the full-size "
                          "image: the pipeline before this measurement"),
        "canonical": Variant(DETECT_SIDE, False, False, f"detection on the image resampled to "
                             f"{DETECT_SIDE} px (longer side), crops as before"),
        "after": Variant(DETECT_SIDE, True, False, f"the app's pipeline: detection at "
                         f"{DETECT_SIDE} px and area-averaged (anti-aliased) crops"),
        "after+flip": Variant(DETECT_SIDE, True, True, "'after', the probabilities averaged "
                              "over the crop and its mirror (probability-ranked models only; "
                              "measured here, not an app option)"),
    }


CROP_VARIANTS = ("after", "after+flip")  # the crop path has no detection


def write_transform(img: Image.Image, name: str, folder: Path, stem: str) -> Path:
    """``img`` (RGB) under transform ``name`` written to ``folder/<stem>_<name>.<ext>``."""
    data, ext = TRANSFORMS[name](img)
    path = folder / f"{stem}_{name}{ext}"
    path.write_bytes(data)
    return path


def outcome(report: dict[str, Any]) -> dict[str, Any]:
    """What is compared of one model's report: the model's own verdict (``raw_verdict``,
    in domain or not), sequence, fake probability."""
    return {"verdict": report["raw_verdict"],
            "sequence": [s["component"] for s in report["sequence"]],
            "fake_probability": float(report["fake_probability"]),
            "rotated": report.get("rotated", 0)}


def flip_outcome(engine: Any, crop: np.ndarray, name: str, report: dict[str, Any]
                 ) -> dict[str, Any] | None:
    """The outcome with the model's probabilities averaged over ``crop`` (H, W, 3) and its
    mirror image, decoded as :func:`app.services.face.analyze_crop` does; None for a model
    that decodes its own sequence (the average of two sequences is not defined)."""
    from app.services.face import METHOD
    from runtime.sequence import decode_sequence

    model = engine.get(name, METHOD)
    out = model.run({"image": model.prepare([crop, np.ascontiguousarray(crop[:, ::-1])])})
    if "sequence" in out:
        return None
    probs = out["probs"].astype(float).mean(0)
    order = decode_sequence(probs, float(report["threshold"]))
    return {"verdict": "manipulated" if order else "real",
            "sequence": [model.labels[c] for c in order],
            "fake_probability": float(probs.max()) if len(probs) else 0.0,
            "rotated": report.get("rotated", 0)}


def analyse(engine: Any, detector: Any, path: Path | str, models: list[str], is_crop: bool,
            variants: dict[str, Variant]) -> dict[str, dict[str, dict[str, Any] | None] | None]:
    """{variant: {model: outcome (None: not applicable)} or None (no face found)} of one
    file through the app's face pipeline. Variants that differ only in ``flip`` share one
    analysis."""
    from app.batch import NoFaceError
    from app.services import face as face_svc

    done: dict[tuple[int | None, bool], Any] = {}
    res: dict[str, dict[str, dict[str, Any] | None] | None] = {}
    for vname, v in variants.items():
        key = (v.detect_side, v.antialias)
        if key not in done:
            try:
                done[key] = face_svc.analyze_face_models(
                    engine, detector, str(path), models, is_crop=is_crop,
                    detect_side=v.detect_side, antialias=v.antialias)
            except NoFaceError:
                done[key] = None
        results = done[key]
        if results is None:
            res[vname] = None
            continue
        res[vname] = {name: (flip_outcome(engine, r.crop, name, r.report) if v.flip
                             else outcome(r.report)) for name, r in zip(models, results)}
    return res


def generated_faces(artifacts: str | Path | None, task: str) -> list[tuple[Path, list[int]]]:
    """(image path, 5-slot label) of the generated test split of ``task``."""
    from training.data.seqdeepfake import read_annotations
    from training.methods.seqfake import default_data_dir

    return read_annotations(default_data_dir(artifacts), task, "test")


def photographs(n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` framings of scikit-image's astronaut (RGB): the 512 x 512 photo itself, then
    mirrored / shifted square crops of 300-480 px (seeded)."""
    from skimage import data

    rng = np.random.default_rng(seed)
    base = Image.fromarray(data.astronaut())
    out = [base]
    for i in range(1, n):
        img = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else base
        side = int(rng.integers(300, 480))
        x0, y0 = int(rng.integers(0, 512 - side)), int(rng.integers(0, min(40, 512 - side)))
        out.append(img.crop((x0, y0, x0 + side, y0 + side)))
    return out


class Tally:
    """Agreement counts of one (path, variant, model, transform)."""

    def __init__(self) -> None:
        self.n = self.verdict = self.sequence = self.no_face = self.rotated = 0
        self.dp: list[float] = []
        self.flips: list[str] = []
        self.applicable = True

    def add(self, ref: dict[str, Any] | None, got: dict[str, Any] | None | bool, item: str
            ) -> None:
        """``got``: the transform's outcome, None (not applicable) or False (no face)."""
        if ref is None or got is None:
            self.applicable = False
            return
        self.n += 1
        if got is False:
            self.no_face += 1
            self.flips.append(item)
            return
        assert isinstance(got, dict)
        self.verdict += ref["verdict"] == got["verdict"]
        self.sequence += ref["sequence"] == got["sequence"]
        self.rotated += bool(got["rotated"]) != bool(ref["rotated"])
        self.dp.append(abs(ref["fake_probability"] - got["fake_probability"]))
        if ref["verdict"] != got["verdict"]:
            self.flips.append(item)

    def to_dict(self) -> dict[str, Any] | None:
        if not self.applicable or not self.n:
            return None
        return {"n": self.n, "verdict_agreement": round(self.verdict / self.n, 4),
                "sequence_agreement": round(self.sequence / self.n, 4),
                "no_face": self.no_face, "rotation_changed": self.rotated,
                "mean_abs_dp": round(float(np.mean(self.dp)), 4) if self.dp else None,
                "max_abs_dp": round(float(np.max(self.dp)), 4) if self.dp else None,
                "verdict_disagreements": self.flips[:20]}


def measure(engine: Any, detector: Any, items: list[tuple[str, Image.Image, Path | None]],
            models: list[str], transforms: list[str], is_crop: bool,
            variants: dict[str, Variant], progress: str = "") -> dict[str, Any]:
    """Agreement over ``items`` ((name, RGB image, original file, or None to write the
    image as a PNG)); returns {variant: {"n": originals with an answer, "models": {model:
    {transform: tally dict or None (not applicable)}}}}."""
    tallies = {v: {m: {t: Tally() for t in transforms} for m in models} for v in variants}
    used = {v: 0 for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for k, (name, img, original) in enumerate(items):
            if original is None:
                original = folder / f"{k:05d}_original.png"
                img.save(original)
            ref = analyse(engine, detector, original, models, is_crop, variants)
            live = {v: r for v, r in ref.items() if r is not None}
            for v in live:
                used[v] += 1
            for t in transforms:
                if not live:
                    break
                path = write_transform(img, t, folder, f"{k:05d}")
                got = analyse(engine, detector, path, models, is_crop,
                              {v: variants[v] for v in live})
                for v, r in live.items():
                    g = got[v]
                    for m in models:
                        tallies[v][m][t].add(r[m], False if g is None else g[m], name)
                path.unlink()
            if progress and (k + 1) % 25 == 0:
                print(f"[stability] {progress}: {k + 1}/{len(items)}", file=sys.stderr,
                      flush=True)
    return {v: {"n": used[v], "models": {m: {t: tl.to_dict() for t, tl in per.items()}
                                          for m, per in tallies[v].items()}}
            for v in variants}


def machine() -> dict[str, Any]:
    """The machine the figures were measured on."""
    import onnxruntime as ort

    return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "onnxruntime": ort.__version__}


def _pct(v: dict[str, Any] | None, key: str) -> str:
    return "n/a" if v is None else f"{v[key]:.1%}"


def render_markdown(res: dict[str, Any]) -> str:
    """The report as markdown: per path and model, a row per transform with the verdict and
    sequence agreement of each variant."""
    m = res["machine"]
    lines = ["# Face pipeline: verdict stability under file transforms", "",
             f"Command: `{res['command']}`  ", f"Date: {res['date']} ({res['seconds']} s)  ",
             f"Machine: {m['cpu_count']} CPUs, {m['platform']}, Python {m['python']}, "
             f"onnxruntime {m['onnxruntime']}  ",
             f"Seed: {res['seed']}; detector: {res['detector']}  ",
             "Models: " + ", ".join(f"`{k}` ({v})" for k, v in res["model_versions"].items()),
             "", "Variants:", ""]
    lines += [f"* `{k}`: {v}" for k, v in res["variants"].items()]
    lines += ["", "Agreement = share of pictures whose transformed file gets the same verdict "
              "(manipulated / real at the model's threshold) / the same predicted sequence as "
              "the original file; a transformed file in which no face is found disagrees. "
              f"{', '.join(res['informational'])}: removes colour, reported only.", ""]
    if res.get("notes"):
        lines += [res["notes"].rstrip(), ""]
    for path, block in res["paths"].items():
        names = list(block["variants"])
        ns = ", ".join(f"{v}: {block['variants'][v]['n']}" for v in names)
        lines += [f"## `{path}`: {block['description']}", "",
                  f"{block['selection']}; pictures whose original gave an answer: {ns}.", ""]
        for model in block["variants"][names[0]]["models"]:
            main = "after" if "after" in names else names[0]  # the app's pipeline
            head = ("| transform | " + " | ".join(f"verdict {v}" for v in names) + " | "
                    + " | ".join(f"sequence {v}" for v in names)
                    + f" | mean abs dp {main} | no face {main} |")
            lines += [f"### `{model}`", "", head, "|" + "---|" * (2 * len(names) + 3)]
            for t in block["variants"][names[0]]["models"][model]:
                cells = [block["variants"][v]["models"][model][t] for v in names]
                mv = block["variants"][main]["models"][model][t]
                mark = " (informational)" if t in res["informational"] else ""
                lines.append(f"| {t}{mark} | " + " | ".join(_pct(c, "verdict_agreement")
                                                            for c in cells)
                             + " | " + " | ".join(_pct(c, "sequence_agreement") for c in cells)
                             + f" | {mv['mean_abs_dp'] if mv else 'n/a'} | "
                             f"{mv['no_face'] if mv else 'n/a'} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from app.faces import default_detector
    from app.services import face as face_svc
    from runtime.engine import Engine

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts",
                   help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    p.add_argument("--n", type=int, default=None,
                   help="generated test faces for the crop path (default: the whole test split)")
    p.add_argument("--detect-n", type=int, default=120,
                   help="generated faces tried on the detection path (0: skip)")
    p.add_argument("--photos", type=int, default=12,
                   help="astronaut framings on the detection path (0: skip)")
    p.add_argument("--models", default="all", help="a seqfake model, or 'all' served ones")
    p.add_argument("--seed", type=int, default=0, help="subset selection and photo framing")
    p.add_argument("--transforms", default=",".join(TRANSFORMS),
                   help="comma-separated subset of: " + ", ".join(TRANSFORMS))
    p.add_argument("--notes", default="", help="a markdown file whose text heads the report")
    p.add_argument("--out", default="reports", help="folder for <name>.json / <name>.md")
    p.add_argument("--name", default="stability", help="file stem of the outputs")
    p.add_argument("--render", metavar="JSON",
                   help="measure nothing: rewrite <out>/<name>.md (and the JSON's notes, with "
                        "--notes) from this earlier run's JSON")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.render:
        res = json.loads(Path(args.render).read_text())
        if args.notes:
            res["notes"] = Path(args.notes).read_text()
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{args.name}.json").write_text(json.dumps(res, indent=1) + "\n")
        (out / f"{args.name}.md").write_text(render_markdown(res))
        print(f"[stability] rendered {out / args.name}.md from {args.render}")
        return 0

    engine = Engine(args.artifacts)
    models = face_svc.resolve_models(engine, args.models)
    transforms = [t for t in args.transforms.split(",") if t]
    unknown = set(transforms) - set(TRANSFORMS)
    if unknown:
        p.error(f"unknown transforms: {sorted(unknown)}")
    variants = pipeline_variants()
    crop_variants = {k: variants[k] for k in CROP_VARIANTS}
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    paths: dict[str, Any] = {}
    # every model reads the test split of its own task (components / attributes)
    by_task: dict[str, list[str]] = {}
    for name in models:
        task = engine.get(name, face_svc.METHOD).entry.get("extra", {}).get("task", "components")
        by_task.setdefault("attributes" if task == "attributes" else "components", []).append(name)
    detector = default_detector() if args.detect_n or args.photos else None
    for task, task_models in by_task.items():
        rows = generated_faces(args.artifacts, task)
        idx = np.arange(len(rows))
        if args.n is not None and args.n < len(rows):
            idx = np.sort(rng.choice(len(rows), args.n, replace=False))
        items = []
        for i in idx:
            path = rows[int(i)][0]
            with Image.open(path) as im:
                items.append((str(path.relative_to(path.parents[3])), im.convert("RGB"), path))
        selection = ("the whole test split" if len(idx) == len(rows)
                     else f"{len(idx)} of the {len(rows)} test faces (seed {args.seed})")
        paths[f"crop/{task}"] = {
            "description": f"generated {task} test faces as whole-face crops (is_crop=True)",
            "selection": selection,
            "variants": measure(engine, None, items, task_models, transforms, True,
                                crop_variants, f"crop/{task}")}
        if args.detect_n:
            cand = items[:args.detect_n]
            paths[f"detect/{task}"] = {
                "description": f"generated {task} test faces through face detection",
                "selection": f"the first {len(cand)} faces of the crop path's selection",
                "variants": measure(engine, detector, cand, task_models, transforms, False,
                                    variants, f"detect/{task}")}
    if args.photos:
        items = [(f"astronaut_{i:02d}", im, None)
                 for i, im in enumerate(photographs(args.photos, args.seed))]
        paths["photo"] = {
            "description": "scikit-image's astronaut photograph (a real face), re-framed, "
                           "through face detection",
            "selection": f"{len(items)} framings (the 512 px photo and seeded crops of "
                         f"300-480 px, half of them mirrored)",
            "variants": measure(engine, detector, items, models, transforms, False, variants,
                                "photo")}
    res: dict[str, Any] = {
        "command": "python -m scripts.face_stability " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "seconds": round(time.time() - t0, 1),
        "seed": args.seed, "machine": machine(),
        "model_versions": {name: engine.get(name, face_svc.METHOD).version for name in models},
        "detector": getattr(detector, "name", None), "transforms": transforms,
        "informational": [t for t in INFORMATIONAL if t in transforms],
        "variants": {k: v.description for k, v in variants.items()},
        "notes": Path(args.notes).read_text() if args.notes else "",
        "paths": paths,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / f"{args.name}.md").write_text(render_markdown(res))
    for path, block in paths.items():  # the worst transform of each variant, per model
        for v, vb in block["variants"].items():
            for name, per in vb["models"].items():
                scored = [(c["verdict_agreement"], t) for t, c in per.items()
                          if c is not None and t not in INFORMATIONAL]
                if scored:
                    low, worst = min(scored)
                    print(f"{path} [{v}] {name} (n={vb['n']}): lowest verdict agreement "
                          f"{low:.1%} ({worst})")
    print(f"[stability] wrote {out / args.name}.json and .md in {res['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
