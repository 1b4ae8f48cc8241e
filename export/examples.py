"""Example inputs for the app (written to ``<artifacts>/examples``): Fashion-MNIST test
images, a few qMIL bags, and generated test faces (when the seqfake data exists)."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from training.data.fashion_mnist import DatasetNotFoundError, load_fashion_mnist

BAG_QUERIES = (("sneaker", True), ("trouser", False), ("bag", True), ("sandal", True))


def _slug(name: str) -> str:
    return name.replace(" ", "-")


def write_examples(artifacts: Path, seed: int = 0) -> None:
    out = artifacts / "examples"
    rng = np.random.default_rng(seed)
    try:
        test = load_fashion_mnist("test")
    except DatasetNotFoundError:
        test = None
    if test is not None:
        fashion = out / "fashion"
        fashion.mkdir(parents=True, exist_ok=True)
        for c in range(len(test.class_names)):
            i = int(np.flatnonzero(test.labels == c)[0])
            Image.fromarray(test.images[i]).save(fashion / f"{c:02d}_{_slug(test.class_names[c])}.png")
        bags = out / "bags"
        for b, (word, positive) in enumerate(BAG_QUERIES):
            c = test.class_names.index(word)
            folder = bags / f"{b}_{_slug(word)}"
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            others = rng.choice(np.flatnonzero(test.labels != c), size=7, replace=False)
            members = list(others)
            if positive:
                members[rng.integers(0, len(members))] = rng.choice(np.flatnonzero(test.labels == c))
            for k, i in enumerate(members):
                Image.fromarray(test.images[i]).save(
                    folder / f"{k:02d}_{_slug(test.class_names[test.labels[i]])}.png")
    # generated test faces, one folder per task: faces/ (components), faces_attr/ (attributes)
    for task_dir, folder in (("facial_components", "faces"), ("facial_attributes", "faces_attr")):
        for csv_path in sorted((artifacts / "data").glob(f"**/{task_dir}/annotations/test.csv")):
            _copy_faces(csv_path, out / folder)
            break


def _copy_faces(csv_path: Path, faces_out: Path, n: int = 8) -> None:
    """Save the first ``n`` test faces of a Seq-DeepFake CSV as PNG, named by their label."""
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
            label = _slug(row["label"].strip("[]").replace(", ", "-"))
            Image.open(src).convert("RGB").save(faces_out / f"{k:02d}_{label}.png")
