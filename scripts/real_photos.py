"""Rebuild the real-photograph evaluation set (kept outside git) for the domain check.

    python -m scripts.real_photos --mirrors DIR [--artifacts DIR] [--out data/real_photos]

Sources (``SOURCES``): the photographs bundled with scikit-image, and sample images of public
GitHub repositories read from local git mirrors (``<mirrors>/<owner>+<name>/repo``, a bare
clone of each repository; ``git --git-dir=<mirror> show <rev>:<path>``: ageitgey/
face_recognition, davisking/dlib, ultralytics/assets, microsoft/Bringing-Old-Photos-Back-
to-Life (old prints), yisol/IDM-VTON and levihsu/OOTDiffusion (clothing photographs),
serengil/deepface (portraits, couples, crowds); a missing one is skipped). Every source file
goes whole into ``photos/`` (a photograph as the classifier and retrieval tabs receive it),
and every face the app's detector (the ONNX MTCNN of ``--artifacts``) finds in it with score
>= 0.95 goes into ``faces/`` as the aligned crop the face tab sends to the model
(:func:`app.faces.align_crop`, 256 px). Each source file falls into ``tune`` or ``held_out``
by a hash of its name, so every crop of a group photo stays in the same half: choose and tune
on ``tune``, report on ``held_out``. ``sources.json`` lists every file with its source,
licence note, kind and half.

``--user-folder DIR`` also writes the set as a user's image folder (``DIR/{train,val,test}/
{faces,photos}/``: the tune half's sources in train, every fourth of them in val, the
held-out half in test), to train a classifier on real photographs and measure that its
domain check passes the user's held-out photos.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

# (repository, path, kind, licence note); kind: what the photograph shows
DLIB = "dlib examples (public domain note)"
SOURCES: list[tuple[str, str, str, str]] = [
    ("ageitgey/face_recognition", "examples/biden.jpg", "portrait", "MIT (repository)"),
    ("ageitgey/face_recognition", "examples/obama.jpg", "portrait", "MIT (repository)"),
    ("ageitgey/face_recognition", "examples/obama2.jpg", "portrait", "MIT (repository)"),
    ("ageitgey/face_recognition", "examples/obama_small.jpg", "small face", "MIT (repository)"),
    ("ageitgey/face_recognition", "examples/two_people.jpg", "group", "MIT (repository)"),
    ("ageitgey/face_recognition", "examples/alex-lacamoire.png", "portrait", "MIT (repository)"),
    ("ageitgey/face_recognition", "examples/lin-manuel-miranda.png", "portrait",
     "MIT (repository)"),
    ("ageitgey/face_recognition", "examples/knn_examples/test/kit_with_rose.jpg", "group",
     "MIT (repository)"),
    ("ageitgey/face_recognition", "examples/knn_examples/test/obama_and_biden.jpg", "group",
     "MIT (repository)"),
    ("ageitgey/face_recognition", "examples/knn_examples/test/johnsnow_test1.jpg", "portrait",
     "MIT (repository)"),
    ("ageitgey/face_recognition", "examples/knn_examples/train/rose_leslie/img1.jpg",
     "portrait", "MIT (repository)"),
    ("ageitgey/face_recognition", "examples/knn_examples/train/rose_leslie/img2.jpg",
     "portrait", "MIT (repository)"),
    ("ageitgey/face_recognition", "examples/knn_examples/train/kit_harington/john1.jpeg",
     "portrait", "MIT (repository)"),
    ("ageitgey/face_recognition", "examples/knn_examples/train/biden/biden2.jpg", "portrait",
     "MIT (repository)"),
    ("ageitgey/face_recognition", "tests/test_images/obama3.jpg", "portrait",
     "MIT (repository)"),
    ("ageitgey/face_recognition", "tests/test_images/obama_partial_face.jpg", "partial face",
     "MIT (repository)"),
    ("davisking/dlib", "examples/faces/2007_007763.jpg", "group", DLIB),
    ("davisking/dlib", "examples/faces/2008_001009.jpg", "group", DLIB),
    ("davisking/dlib", "examples/faces/2008_001322.jpg", "group", DLIB),
    ("davisking/dlib", "examples/faces/2008_002079.jpg", "group", DLIB),
    ("davisking/dlib", "examples/faces/2008_002470.jpg", "group", DLIB),
    ("davisking/dlib", "examples/faces/2008_002506.jpg", "group", DLIB),
    ("davisking/dlib", "examples/faces/2008_004176.jpg", "group", DLIB),
    ("davisking/dlib", "examples/faces/2008_007676.jpg", "group", DLIB),
    ("davisking/dlib", "examples/faces/2009_004587.jpg", "group", DLIB),
    ("davisking/dlib", "examples/faces/Tom_Cruise_avp_2014_4.jpg", "portrait",
     DLIB),
    ("davisking/dlib", "examples/faces/bald_guys.jpg", "group", DLIB),
    ("davisking/dlib", "examples/faces/dogs.jpg", "scene", DLIB),
    ("davisking/dlib", "examples/mmod_cars_test_image.jpg", "scene",
     DLIB),
    ("davisking/dlib", "examples/mmod_cars_test_image2.jpg", "scene",
     DLIB),
    ("davisking/dlib", "dlib/test/ffmpeg_data/dog.jpg", "object", "Boost (dlib)"),
    ("davisking/dlib", "dlib/test/ffmpeg_data/eagle.jpg", "object", "Boost (dlib)"),
    ("davisking/dlib", "dlib/test/ffmpeg_data/giraffe.jpg", "scene", "Boost (dlib)"),
    ("davisking/dlib", "dlib/test/ffmpeg_data/horses.jpg", "scene", "Boost (dlib)"),
    ("ultralytics/assets", "im/bus.jpg", "group", "AGPL-3.0 (repository)"),
    ("ultralytics/assets", "im/zidane.jpg", "group", "AGPL-3.0 (repository)"),
    ("ultralytics/assets", "im/boats.jpg", "scene", "AGPL-3.0 (repository)"),
    ("ultralytics/assets", "im/airport.jpg", "scene", "AGPL-3.0 (repository)"),
]
# dlib's examples/johns: tightly cropped face photographs (250 px), two per person
JOHNS = ["John_Salley/000179_02159509.jpg", "John_Salley/000190_02159501.jpg",
         "John_Savage/000264_01099001.jpg", "John_Savage/000290_01099067.jpg",
         "John_Schneider/000288_00925786.jpg", "John_Schneider/000326_00926089.jpg",
         "John_Shimkus/000373_03228153.jpg", "John_Shimkus/000383_03227939.jpg",
         "John_Simm/000288_00470387.jpg", "John_Simm/000304_00470122.jpg"]
SOURCES += [("davisking/dlib", f"examples/johns/{p}", "face crop",
             DLIB) for p in JOHNS]
# old prints (scanned, faded, scratched), from Bringing-Old-Photos-Back-to-Life's test images
OLD = "MIT (repository)"
SOURCES += [("microsoft/Bringing-Old-Photos-Back-to-Life", f"test_images/{d}/{c}.png",
             "old print", OLD) for d, cs in (("old", "abcdefgh"), ("old_w_scratch", "abcd"))
            for c in cs]
# clothing: product photographs of garments and people wearing them (virtual try-on examples)
NC = "CC BY-NC-SA 4.0 (repository)"
IDM = ["04469", "04743", "09133", "09163", "09164", "09166", "09176", "09236", "09256",
       "09263", "09266", "09290", "09305", "10165", "14627", "14673"]
SOURCES += [("yisol/IDM-VTON", f"gradio_demo/example/cloth/{c}_00.jpg", "clothing", NC)
            for c in IDM]
SOURCES += [("yisol/IDM-VTON", f"gradio_demo/example/human/{c}", "clothing worn", NC)
            for c in ("00034_00.jpg", "00035_00.jpg", "00055_00.jpg", "00121_00.jpg",
                      "01992_00.jpg")]
OOTD = ["00055_00", "00126_00", "00151_00", "00470_00", "02015_00", "02305_00", "03032_00",
        "03244_00", "04825_00", "048554_1", "048769_1", "049805_1", "049920_1", "049940_1",
        "049947_1", "049949_1", "049965_1", "050002_1", "050105_1", "050181_1", "050191_1",
        "051412_1", "051473_1", "051515_1", "051517_1", "051827_1", "051946_1", "051988_1",
        "051991_1", "051998_1", "052234_1", "053290_1", "053319_1", "053742_1", "053744_1",
        "053786_1", "053790_1", "06123_00", "07382_00", "07764_00", "10297_00", "12562_00"]
SOURCES += [("levihsu/OOTDiffusion", f"run/examples/garment/{c}.jpg", "clothing", NC)
            for c in OOTD]
SOURCES += [("levihsu/OOTDiffusion", f"run/examples/model/{c}.jpg", "clothing worn", NC)
            for c in ("01008_00", "01861_00", "02849_00", "049205_0", "049447_0", "049713_0",
                      "051482_0", "051918_0", "051962_0", "052472_0", "052767_0", "052964_0",
                      "053228_0", "053514_0", "053700_0", "05997_00")]
# more faces: deepface's unit-test photographs (portraits, couples, crowds, children)
DEEPFACE = [f"img{i}.jpg" for i in (*range(1, 52), 53, 54, 55, 56, 57, 58, 59, 61, 62, 67)]
SOURCES += [("serengil/deepface", f"tests/unit/dataset/{f}", "portrait", "MIT (repository)")
            for f in DEEPFACE]
SOURCES += [("serengil/deepface", f"tests/unit/dataset/{f}", "group", "MIT (repository)")
            for f in ("couple.jpg", "selfie-many-people.jpg")]
# scikit-image's bundled photographs (no download): name -> kind
SKIMAGE = {"astronaut": "portrait", "camera": "portrait", "coffee": "object",
           "chelsea": "object", "cat": "object", "rocket": "scene", "coins": "object",
           "moon": "scene", "brick": "object", "grass": "object", "gravel": "object",
           "immunohistochemistry": "object"}
MIN_FACE_SCORE = 0.95
CROP = 256


def half(source_id: str) -> str:
    """``tune`` or ``held_out``, fixed by the source file's name (sha256, first byte)."""
    return "held_out" if hashlib.sha256(source_id.encode()).digest()[0] % 2 else "tune"


def _git_image(mirrors: Path, repo: str, path: str) -> np.ndarray:
    from PIL import Image

    git_dir = mirrors / repo.replace("/", "+") / "repo"
    blob = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"HEAD:{path}"],
                          check=True, capture_output=True).stdout
    with Image.open(io.BytesIO(blob)) as im:
        return np.asarray(im.convert("RGB"))


def _skimage(name: str) -> np.ndarray:
    from skimage import data

    a = np.asarray(getattr(data, name)())
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a[..., :3]).astype(np.uint8)


def originals(mirrors: Path) -> list[tuple[str, str, str, np.ndarray]]:
    """(source id, kind, licence, RGB image) of every source that can be read here."""
    out = []
    for name, kind in SKIMAGE.items():
        out.append((f"scikit-image:data.{name}", kind, "scikit-image sample data "
                    "(public domain / CC0 per skimage.data)", _skimage(name)))
    for repo, path, kind, lic in SOURCES:
        try:
            out.append((f"github:{repo}:{path}", kind, lic, _git_image(mirrors, repo, path)))
        except (subprocess.CalledProcessError, OSError) as exc:
            print(f"[real_photos] skipped {repo}:{path} ({exc})")
    return out


def build(mirrors: Path, artifacts: Path, out: Path) -> dict[str, Any]:
    """Write ``out/{photos,faces}/{tune,held_out}/*.png`` and ``out/sources.json``."""
    from PIL import Image

    from app.faces import OnnxMTCNNDetector, align_crop

    detector = OnnxMTCNNDetector(artifacts)
    rows = []
    for sid, kind, lic, rgb in originals(mirrors):
        h = half(sid)
        stem = hashlib.sha256(sid.encode()).hexdigest()[:10]
        photo = out / "photos" / h / f"{stem}.png"
        photo.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(photo)
        faces = [f for f in detector.detect(rgb) if f.score >= MIN_FACE_SCORE]
        crops = []
        for i, face in enumerate(faces):
            crop = out / "faces" / h / f"{stem}_{i}.png"
            crop.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(align_crop(rgb, face, CROP)).save(crop)
            x1, y1, x2, y2 = face.box
            crops.append({"file": str(crop.relative_to(out)), "score": round(float(face.score), 3),
                          "face_px": int(max(x2 - x1, y2 - y1))})
        rows.append({"source": sid, "kind": kind, "licence": lic, "half": h,
                     "photo": str(photo.relative_to(out)), "size": list(rgb.shape[:2]),
                     "faces": crops})
        print(f"[real_photos] {h:8s} {kind:12s} {len(crops)} faces  {sid}")
    index = {"sources": rows, "min_face_score": MIN_FACE_SCORE, "crop": CROP}
    (out / "sources.json").write_text(json.dumps(index, indent=1) + "\n")
    return index


def load(root: Path, part: str, half_name: str) -> list[tuple[str, np.ndarray]]:
    """(source id, RGB image) of ``part`` (``photos`` or ``faces``) of one half of the set."""
    from PIL import Image

    index = json.loads((root / "sources.json").read_text())
    out = []
    for row in index["sources"]:
        if row["half"] != half_name:
            continue
        files = [row["photo"]] if part == "photos" else [c["file"] for c in row["faces"]]
        for f in files:
            with Image.open(root / f) as im:
                out.append((row["source"], np.asarray(im.convert("RGB"))))
    return out


def user_folder(root: Path, out: Path) -> dict[str, int]:
    """Write the set under ``root`` as an image-folder tree at ``out`` (module docstring);
    returns the image count per split."""
    import shutil

    index = json.loads((root / "sources.json").read_text())
    counts: dict[str, int] = {}
    k = 0
    for row in index["sources"]:
        split = "test"
        if row["half"] == "tune":
            split = "val" if k % 4 == 3 else "train"
            k += 1
        faces = [c["file"] for c in row["faces"]]
        for cls, files in (("photos", [row["photo"]]), ("faces", faces)):
            for f in files:
                dst = out / split / cls / Path(f).name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / f, dst)
                counts[split] = counts.get(split, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mirrors", required=True, type=Path,
                   help="folder of bare git mirrors, <owner>+<name>/repo")
    p.add_argument("--artifacts", type=Path, default=Path("artifacts"),
                   help="artifacts folder with the exported ONNX MTCNN (detector/)")
    p.add_argument("--out", type=Path, default=Path("data/real_photos"))
    p.add_argument("--user-folder", type=Path, help="also write the set as an image folder here")
    args = p.parse_args(argv)
    index = build(args.mirrors, args.artifacts, args.out)
    n_faces = sum(len(r["faces"]) for r in index["sources"])
    print(f"[real_photos] {len(index['sources'])} photographs, {n_faces} face crops -> {args.out}")
    if args.user_folder:
        print(f"[real_photos] image folder {args.user_folder}: "
              f"{user_folder(args.out, args.user_folder)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
