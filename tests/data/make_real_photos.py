"""Write the small real-photograph fixture that ``tests/test_domain_real.py`` reads.

Every image is derived from a photograph that ships inside an installed package, so the
fixture needs no download: scikit-image's ``astronaut`` (NASA, public domain), ``coffee``
and ``camera`` (scikit-image sample data, public domain / CC0) and matplotlib's
``grace_hopper.jpg`` (US Navy photograph, public domain). Faces are the aligned crops the
face tab sends to a face model (:func:`app.faces.align_crop`), found by the app's ONNX MTCNN
of an artifacts folder; photographs are the whole image. Each is stored at ``SIDE`` px.

Usage (from the repository root)::

    python -m tests.data.make_real_photos --artifacts DIR
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("real_photos")
SIDE = 96


def sources() -> dict[str, np.ndarray]:
    """The packaged photographs, RGB uint8."""
    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f, Image.open(f) as im:
        hopper = np.asarray(im.convert("RGB"))
    camera = np.repeat(data.camera()[..., None], 3, axis=2)
    return {"astronaut": data.astronaut(), "coffee": data.coffee(), "camera": camera,
            "grace_hopper": hopper}


def _small(rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((SIDE, SIDE), Image.BICUBIC))


def build(artifacts: Path, out: Path = OUT) -> list[Path]:
    """Write ``photo_<name>.png`` for every source and ``face_<name>.png`` for the best
    face found in the astronaut and Grace Hopper portraits."""
    from PIL import Image

    from app.faces import OnnxMTCNNDetector, align_crop

    out.mkdir(parents=True, exist_ok=True)
    detector = OnnxMTCNNDetector(artifacts)
    written = []
    for name, rgb in sources().items():
        written.append(out / f"photo_{name}.png")
        Image.fromarray(_small(rgb)).save(written[-1])
        if name in ("astronaut", "grace_hopper"):
            face = max(detector.detect(rgb), key=lambda f: f.score)
            written.append(out / f"face_{name}.png")
            Image.fromarray(_small(align_crop(rgb, face, 256))).save(written[-1])
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", type=Path, required=True,
                   help="artifacts folder with the exported ONNX MTCNN (detector/)")
    args = p.parse_args(argv)
    for path in build(args.artifacts):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
