"""``python -m export.published.domain MODEL --faces DIR``: a domain check for an imported model.

An imported model (``python -m export.published``) is exported without a domain check: the
faces it was trained on are not here, so nothing says whether a face is like them and every
answer is marked unreliable (app/services/reliability.py). With a folder of faces of its
training domain that the user names (for SBI: frames of FaceForensics++ real videos; for
SeqFakeFormer: Seq-DeepFake's val split), this command fits the check on them: each image's
largest face is detected (the app's detector: MTCNN, or RetinaFace with
``--retinaface-weights``) and cropped with the model's own alignment (``--crops``: the images
are already such crops), the model's ``features`` output is read through its ONNX file, and
the check (:func:`export.domain.fit_for_model`, its threshold from a held-out part of the
folder) is written beside the model and recorded in its manifest entry, naming the folder.

The check is as good as the folder: faces unlike the model's training data there make it
accept faces unlike that data. A re-export of the model (``python -m export MODEL``) drops the
check; run this command again after it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from runtime.cli import Parser, UserError, artifacts_folder, run_main

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FEATURES = ("features",)  # the ONNX output the check reads (every imported variant has it)


def folder_images(folder: Path) -> list[Path]:
    """The image files under ``folder`` (recursive), sorted.

    Raises:
        UserError: not a folder, or no image in it.
    """
    if not folder.is_dir():
        raise UserError(f"--faces {folder} is not a folder; name a folder of face images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"--faces {folder} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return files


def face_crops(files: list[Path], entry: dict[str, Any], detector: Any | None
               ) -> tuple[list[np.ndarray], int]:
    """The model's crop of each file's largest face (or the whole image when ``detector``
    is None), and how many files gave none."""
    from app.inputs import display_rgb, load_image
    from runtime.align import aligner, alignment_of, crop_side

    align, side = aligner(alignment_of(entry)), crop_side(entry)
    crops, skipped = [], 0
    for f in files:
        rgb = display_rgb(load_image(str(f), min_side=32))
        if detector is None:
            crops.append(rgb)
            continue
        faces = detector.detect(rgb)
        if not faces:
            skipped += 1
            continue
        crops.append(align(rgb, faces[0], side))
    return crops, skipped


def fit_from_folder(artifacts: Path, name: str, folder: Path, detector: Any | None
                    ) -> dict[str, Any]:
    """Fit model ``name``'s check on ``folder`` and commit it to the manifest; returns the
    record.

    Raises:
        UserError: no such imported model, or too few faces.
    """
    from export.domain import commit_refit, fit_for_model, settings
    from runtime.engine import OnnxModel
    from runtime.manifest import read_manifest

    models = read_manifest(artifacts)["models"]
    if name not in models:
        raise UserError(f"no exported model {name!r} in {artifacts}; export it first "
                        f"(python -m export {name}); exported: {', '.join(sorted(models))}")
    entry = models[name]
    if "published" not in (entry.get("extra") or {}):
        raise UserError(f"{name} was trained here and has its own domain check; this command "
                        f"is for models imported with python -m export.published")
    crops, skipped = face_crops(folder_images(folder), entry, detector)
    if len(crops) < 4:
        raise UserError(f"--faces {folder}: {len(crops)} face(s) found ({skipped} image(s) "
                        f"without one); at least 4 are needed, more than 100 recommended")
    def fit(new: dict[str, Any]) -> tuple[Any, dict[str, Any], None]:
        dm, record = fit_for_model(OnnxModel(name, new, artifacts), crops, None, FEATURES,
                                   settings())
        record["trained_on"] = (f"the faces of {folder} (named by the user as the model's "
                                f"training domain; {len(crops)} faces)")
        record["fitted_on_folder"] = str(folder)
        return dm, record, None

    return commit_refit(artifacts, name, entry, fit)


def main(argv: list[str] | None = None) -> int:
    """The command; a user's mistake exits 2 with one line (:mod:`runtime.cli`)."""
    return run_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    p = Parser(prog="python -m export.published.domain", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="the imported model's name in the manifest")
    p.add_argument("--faces", required=True, type=Path,
                   help="a folder of face images of the model's training domain")
    p.add_argument("--crops", action="store_true",
                   help="the images are already the model's face crops (no detection)")
    p.add_argument("--retinaface-weights", help="detect with RetinaFace (this weights file) "
                                                "instead of MTCNN")
    p.add_argument("--artifacts", help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    args = p.parse_args(argv)
    art = artifacts_folder(args.artifacts)
    detector = None
    if not args.crops:
        from app.faces import default_detector

        detector = default_detector(args.retinaface_weights, art)
    rec = fit_from_folder(art, args.model, args.faces.expanduser(), detector)
    print(f"[domain] {args.model}: domain check on {rec['n_fit']} + {rec['n_held_out']} faces "
          f"of {args.faces}, threshold {rec['threshold']:.3g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
