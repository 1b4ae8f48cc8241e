"""qMIL post-export hook: example bags for the Bag query tab.

``examples/bags/<i>_<word>_<holds|lacks>/NN_<class>.png``: each bag holds 7 Fashion-MNIST
test images numbered from 01 (the 1-based instance numbers of the answer); a bag that
"holds" the word has one image of its class at a random position. The folder name is the
truth the tab shows beside the model's answer. Seeded: the same on every build. Not written
when the served ``qmil`` model does not know the examples' words (trained on a user's folder).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from export.examples import slug
from runtime.manifest import ManifestError, read_manifest
from training.data.fashion_mnist import DatasetNotFoundError, load_fashion_mnist

BAG_QUERIES = (("sneaker", True), ("trouser", False), ("bag", True), ("sandal", True))


def write_examples(artifacts: Path, runs: list[str] | None = None,
                   options: dict[str, Any] | None = None, seed: int = 0) -> None:
    """Write the example bags; none (and old ones removed) when the served ``qmil`` model
    was trained on other classes than the examples' words (a user's own folder)."""
    bags = artifacts / "examples" / "bags"
    try:
        entry = read_manifest(artifacts).get("models", {}).get("qmil")
    except ManifestError:
        entry = None
    if entry is not None and not all(w in entry.get("labels", []) for w, _ in BAG_QUERIES):
        if bags.exists():
            shutil.rmtree(bags)
        return
    try:
        test = load_fashion_mnist("test")
    except DatasetNotFoundError:
        return
    rng = np.random.default_rng(seed)
    for b, (word, positive) in enumerate(BAG_QUERIES):
        c = test.class_names.index(word)
        folder = bags / f"{b}_{slug(word)}_{'holds' if positive else 'lacks'}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        others = rng.choice(np.flatnonzero(test.labels != c), size=7, replace=False)
        members = list(others)
        if positive:
            members[rng.integers(0, len(members))] = rng.choice(np.flatnonzero(test.labels == c))
        for k, i in enumerate(members):
            Image.fromarray(test.images[i]).save(
                folder / f"{k + 1:02d}_{slug(test.class_names[test.labels[i]])}.png")
