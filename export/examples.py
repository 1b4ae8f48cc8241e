"""Example inputs for the app's tabs, written under ``<artifacts>/examples``.

Generic helpers used by the methods' post-export hooks (``methods/<name>/assets.py``):
one Fashion-MNIST test image per class (``examples/fashion``) and the first test faces of
a Seq-DeepFake-layout data set copied as PNG.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

from PIL import Image

from training.data.fashion_mnist import DatasetNotFoundError, load_fashion_mnist


def slug(name: str) -> str:
    return name.replace(" ", "-")


def write_class_examples(artifacts: Path) -> None:
    """``examples/fashion/NN_<class>.png``: the first Fashion-MNIST test image of each class
    (nothing when the data set is not installed)."""
    try:
        test = load_fashion_mnist("test")
    except DatasetNotFoundError:
        return
    fashion = artifacts / "examples" / "fashion"
    fashion.mkdir(parents=True, exist_ok=True)
    for c in range(len(test.class_names)):
        i = int((test.labels == c).nonzero()[0][0])
        Image.fromarray(test.images[i]).save(fashion / f"{c:02d}_{slug(test.class_names[c])}.png")


def copy_faces(csv_path: Path, faces_out: Path, n: int = 8,
               names: tuple[str, ...] | list[str] | None = None) -> None:
    """Save the first ``n`` test faces of a Seq-DeepFake CSV as PNG, named by their label:
    with ``names`` (class names of ids 1..L), ``NN_<name>-<name>.png`` in sequence order or
    ``NN_real.png``; without, the label's numbers."""
    root = csv_path.parent.parent
    if faces_out.is_dir():  # faces of an earlier data set must not linger
        shutil.rmtree(faces_out)
    faces_out.mkdir(parents=True)
    with open(csv_path) as fh:
        rows = list(csv.DictReader(fh))
    for k, row in enumerate(rows[:n]):
        src = root / row["file_path"]
        if not src.is_file():
            src = root.parent / row["file_path"]
        if src.is_file():
            ids = [int(v) for v in row["label"].strip("[]").split(",") if v.strip()]
            if names is not None:
                seq = [slug(names[i - 1]) for i in ids if i > 0]
                label = "-".join(seq) if seq else "real"
            else:
                label = "-".join(str(i) for i in ids)
            Image.open(src).convert("RGB").save(faces_out / f"{k:02d}_{label}.png")
