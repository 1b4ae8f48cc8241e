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
    faces_out = out / "faces"
    for csv_path in sorted((artifacts / "data").glob("**/annotations/test.csv")):
        root = csv_path.parent.parent
        faces_out.mkdir(parents=True, exist_ok=True)
        with open(csv_path) as fh:
            rows = list(csv.DictReader(fh))
        for k, row in enumerate(rows[:8]):
            src = root / row["file_path"]
            if not src.is_file():
                src = root.parent / row["file_path"]
            if src.is_file():
                shutil.copyfile(src, faces_out / f"{k:02d}_{_slug(row['label'].strip('[]').replace(', ', '-'))}.png")
        break
