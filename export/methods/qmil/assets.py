"""qMIL post-export hook: example bags for the Bag query tab.

``examples/bags/<i>_<word>_<holds|lacks>/NN_<class>.png``: each bag holds 7 Fashion-MNIST
test images numbered from 01 (the 1-based instance numbers of the answer); a bag that
"holds" the word has one image of its class at a random position. The folder name is the
truth the tab shows beside the model's answer. Each bag is the first of up to
``BAG_TRIES`` seeded draws that the served ``qmil`` model answers correctly (else the first
draw, whose answer ``answers.json`` records). Seeded: the same on every build of the same
model. Not written when the served ``qmil`` model does not know the examples' words
(trained on a user's folder).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.services import qmil as qmil_svc
from export.examples import Judge, keep_answered, served_model, slug, write_answers
from runtime.manifest import ManifestError, read_manifest
from training.data.fashion_mnist import DatasetNotFoundError, load_fashion_mnist

BAG_QUERIES = (("sneaker", True), ("trouser", False), ("bag", True), ("sandal", True))
BAG_SIZE = 7
BAG_TRIES = 20  # draws tried per example bag before keeping one answered wrongly


def judge(artifacts: Path) -> Judge | None:
    """The served default bag model as the Bag query tab asks it about an example bag
    folder ("yes"/"no"; the word is in the folder name), or None when none is served."""
    found = served_model(artifacts, qmil_svc.METHOD, qmil_svc.MODEL)
    if found is None:
        return None
    engine, name = found

    def answer(folder: Path) -> str:
        word = folder.name.split("_", 1)[1].rsplit("_", 1)[0].replace("-", " ")
        return qmil_svc.query_bag(engine, sorted(folder.glob("*.png")), word,
                                  model_name=name).report["raw_answer"]

    return Judge(name, engine.get(name).version, answer)


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
    check = judge(artifacts)
    records = {}
    for b, (word, positive) in enumerate(BAG_QUERIES):
        c = test.class_names.index(word)
        folder = bags / f"{b}_{slug(word)}_{'holds' if positive else 'lacks'}"
        records[folder.name] = keep_answered(folder, "yes" if positive else "no",
                                             _draws(rng, test.labels, c, positive),
                                             lambda m, f: _save_bag(test, m, f), check,
                                             BAG_TRIES)
    write_answers(bags, check, records)


def _draws(rng: np.random.Generator, labels: np.ndarray, c: int, positive: bool):
    """Endless seeded draws of ``BAG_SIZE`` test indices without class ``c``, one of them
    replaced by an image of class ``c`` where ``positive``."""
    while True:
        members = list(rng.choice(np.flatnonzero(labels != c), size=BAG_SIZE, replace=False))
        if positive:
            members[rng.integers(0, len(members))] = rng.choice(np.flatnonzero(labels == c))
        yield members


def _save_bag(test: Any, members: list[int], folder: Path) -> None:
    """Write one bag folder (an earlier bag there is removed)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for k, i in enumerate(members):
        Image.fromarray(test.images[i]).save(
            folder / f"{k + 1:02d}_{slug(test.class_names[test.labels[i]])}.png")
