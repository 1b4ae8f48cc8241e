"""Bag manifests: a CSV of bags of images with bag-level labels (multi-instance,
multi-label: the setting of the thesis' MIML experiments).

Format (a header row, then one row per image)::

    bag_id,path,labels[,split]
    beach_01,images/0001.jpg,sea;sky;sand
    beach_01,images/0002.jpg,sea;sky;sand
    city_07,images/0100.jpg,building

- ``bag_id``: rows with the same id form one bag (any order);
- ``path``: the image, relative to the CSV's folder (or absolute);
- ``labels``: the bag's labels, words separated by ``;`` (underscores and hyphens read as
  spaces, as folder names); the bag's label set is the union over its rows, so the labels
  may be written on every row or on one; an empty set is a bag with none of the words;
- ``split`` (optional): ``train``, ``val`` or ``test`` per bag; without it the bags are
  split by a seed.

Unreadable images are left out with a count and their first names in the log; a bag left
with no image is dropped (counted too). Instance labels are unknown, so attention accuracy
cannot be measured on such data.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data.fashion_mnist import DatasetNotFoundError
from training.data.folders import report_skipped, unreadable

COLUMNS = ("bag_id", "path", "labels")
SPLITS = ("train", "val", "test")


def label_word(name: str) -> str:
    """A folder name or manifest label as a query phrase: lower-case, underscores and
    hyphens read as spaces, whitespace collapsed (``"Ankle_Boot"`` -> ``"ankle boot"``).
    The word vectors still find hyphenated tokens (``"t shirt"`` -> ``t-shirt``,
    :meth:`runtime.words.WordVectors.tokens`)."""
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


@dataclass
class BagManifest:
    """The bags of a manifest.

    Attributes:
        paths: the image files, each once (the pool the bags index).
        bag_ids: the id of each bag (B,).
        members: per bag, int64 indices into ``paths``.
        labels: per bag, the sorted label ids (into ``words``).
        words: the label vocabulary (sorted query phrases).
        split: per bag, "train" / "val" / "test" or "" when the file has no split column.
        skipped: unreadable image files left out.
        dropped_bags: ids of bags left without an image.
    """

    paths: list[str]
    bag_ids: list[str]
    members: list[np.ndarray]
    labels: list[tuple[int, ...]]
    words: tuple[str, ...]
    split: list[str]
    skipped: tuple[str, ...]
    dropped_bags: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.bag_ids)


def read_bag_manifest(path: str | os.PathLike[str], check: bool = True) -> BagManifest:
    """Read a bag manifest (see the module docstring).

    Raises:
        DatasetNotFoundError: the file is missing or lists no readable image.
        ValueError: a missing column, a row without a bag id or path, an unknown split.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"bag manifest not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path}: the header must name the columns {', '.join(COLUMNS)} "
                             f"(optional: split); missing {', '.join(missing)}, found "
                             f"{', '.join(header) or 'no header'}")
        reader.fieldnames = header
        rows = list(reader)
    order: list[str] = []
    files: dict[str, list[str]] = {}
    words: dict[str, set[str]] = {}
    split: dict[str, str] = {}
    for n, row in enumerate(rows, 2):
        bag, rel = (row.get("bag_id") or "").strip(), (row.get("path") or "").strip()
        if not bag or not rel:
            raise ValueError(f"{path}:{n}: every row needs a bag_id and a path, got {row}")
        if bag not in files:
            order.append(bag)
            files[bag], words[bag] = [], set()
        f = Path(rel).expanduser()
        files[bag].append(str(f if f.is_absolute() else path.parent / f))
        words[bag].update(w for w in (label_word(x) for x in (row.get("labels") or "").split(";"))
                          if w)
        s = (row.get("split") or "").strip().lower()
        if s and s not in SPLITS:
            raise ValueError(f"{path}:{n}: split must be one of {', '.join(SPLITS)}, got {s!r}")
        if s and split.setdefault(bag, s) != s:
            raise ValueError(f"{path}:{n}: bag {bag!r} is in two splits ({split[bag]}, {s})")
    if not order:
        raise DatasetNotFoundError(f"{path} lists no bags")
    unique = sorted({f for fs in files.values() for f in fs})
    skipped = [f for f in unique if check and unreadable(f) is not None]
    report_skipped(str(path), skipped)
    bad = set(skipped)
    pool = [f for f in unique if f not in bad]
    index = {f: i for i, f in enumerate(pool)}
    vocab = tuple(sorted({w for ws in words.values() for w in ws}))
    wid = {w: i for i, w in enumerate(vocab)}
    kept, members, labels, dropped = [], [], [], []
    for bag in order:
        idx = [index[f] for f in files[bag] if f in index]
        if not idx:
            dropped.append(bag)
            continue
        kept.append(bag)
        members.append(np.asarray(idx, dtype=np.int64))
        labels.append(tuple(sorted(wid[w] for w in words[bag])))
    if dropped:
        print(f"[data] {path}: dropped {len(dropped)} bag(s) with no readable image: "
              f"{', '.join(dropped[:5])}", flush=True)
    if not kept:
        raise DatasetNotFoundError(f"{path}: no bag has a readable image")
    return BagManifest(pool, kept, members, labels, vocab, [split.get(b, "") for b in kept],
                       tuple(skipped), tuple(dropped))


def split_bags(manifest: BagManifest, val_fraction: float, test_fraction: float,
               seed: int) -> dict[str, np.ndarray]:
    """Bag indices per split: the manifest's ``split`` column where it has one, else a
    seeded shuffle of the bags into test, validation and training parts.

    Returns:
        ``{"train": int64 (B_train,), "val": ..., "test": ...}``.
    """
    if any(manifest.split):
        if not all(manifest.split):
            raise ValueError("the manifest's split column is empty for some bags: give "
                             "every bag a split, or leave the column out")
        sp = np.asarray(manifest.split)
        return {s: np.flatnonzero(sp == s) for s in SPLITS}
    perm = np.random.default_rng(seed).permutation(len(manifest))
    n_test = int(round(len(perm) * test_fraction))
    n_val = int(round(len(perm) * val_fraction))
    return {"test": np.sort(perm[:n_test]), "val": np.sort(perm[n_test:n_test + n_val]),
            "train": np.sort(perm[n_test + n_val:])}
