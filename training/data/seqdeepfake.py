"""The Seq-DeepFake data layout (Shao et al., ECCV 2022), and a torch Dataset over it.

Layout (the Seq-DeepFake release, docs/seqfake.md "Data")::

    ROOT/facial_components/annotations/{train,val,test}.csv
    ROOT/facial_components/images/...
    ROOT/facial_attributes/annotations/{train,val,test}.csv

CSV columns ``file_path,label``; ``label`` is a 5-slot list such as ``[1, 2, 4, 0, 0]``
(0 = no manipulation). ``file_path`` is resolved against the task folder, then ROOT, then
as given. ``ROOT`` may also be the task folder itself. Component ids: 1 nose, 2 eye,
3 eyebrow, 4 lip, 5 hair; attribute ids: 1 bangs, 2 eyeglasses, 3 beard, 4 smiling, 5 young.

Optional ``TASK/landmarks/{split}.csv`` (written by :mod:`training.data.faces_synth`) gives 5
landmarks per image for landmark-based augmentation; without it canonical landmarks of an
aligned 256 x 256 face crop are used.
"""
from __future__ import annotations

import ast
import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from runtime.preprocess import PreprocessSpec, normalize, to_array

COMPONENT_NAMES: tuple[str, ...] = ("nose", "eye", "eyebrow", "lip", "hair")
ATTRIBUTE_NAMES: tuple[str, ...] = ("bangs", "eyeglasses", "beard", "smiling", "young")
TASK_DIRS = {"components": "facial_components", "attributes": "facial_attributes"}
SLOTS = 5
# Canonical 5 landmarks (x, y) of an aligned 256 x 256 face crop: eyes, nose tip, mouth corners.
CANONICAL_LANDMARKS = np.array([[88, 118], [168, 118], [128, 152], [98, 186], [158, 186]],
                               dtype=np.float32)


class SeqDeepFakeFormatError(ValueError):
    """A Seq-DeepFake annotation file or folder is not in the expected format."""


def names_for(task: str) -> tuple[str, ...]:
    """Class names in id order (1..5) for "components"/"binary" or "attributes"."""
    return ATTRIBUTE_NAMES if task == "attributes" else COMPONENT_NAMES


def parse_label(text: str, where: str = "") -> list[int]:
    """'[1, 2, 4, 0, 0]' -> [1, 2, 4, 0, 0], checked (5 ints in 0..5, no gaps/repeats)."""
    try:
        value = ast.literal_eval(str(text).strip())
    except (ValueError, SyntaxError) as exc:
        raise SeqDeepFakeFormatError(f"{where}: label {text!r} is not a list like [1, 2, 0, 0, 0]") from exc
    if not isinstance(value, (list, tuple)) or len(value) != SLOTS or not all(
            isinstance(v, int) and 0 <= v <= 5 for v in value):
        raise SeqDeepFakeFormatError(f"{where}: label {text!r} must be 5 integers in 0..5")
    seq = [v for v in value if v]
    if list(value[: len(seq)]) != seq or len(set(seq)) != len(seq):
        raise SeqDeepFakeFormatError(f"{where}: label {text!r} has a gap or a repeated id")
    return list(value)


def task_dir(root: str | os.PathLike[str], task: str) -> Path:
    """The folder holding ``annotations/`` for the task ("binary" reads the components)."""
    root = Path(root)
    sub = TASK_DIRS["attributes" if task == "attributes" else "components"]
    if (root / sub / "annotations").is_dir():
        return root / sub
    if (root / "annotations").is_dir():
        return root
    raise SeqDeepFakeFormatError(
        f"{root} is not a Seq-DeepFake folder: expected {root / sub / 'annotations'} "
        f"(with train.csv, val.csv, test.csv)")


def read_annotations(root: str | os.PathLike[str], task: str, split: str
                     ) -> list[tuple[Path, list[int]]]:
    """Rows (image path, 5-slot label) of one split; paths are resolved and checked."""
    base = task_dir(root, task)
    ann = base / "annotations" / f"{split}.csv"
    if not ann.is_file():
        raise SeqDeepFakeFormatError(f"missing annotation file {ann}")
    rows = []
    with open(ann, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"file_path", "label"} <= set(reader.fieldnames):
            raise SeqDeepFakeFormatError(f"{ann}: columns must be file_path,label "
                                         f"(found {reader.fieldnames})")
        for i, row in enumerate(reader, start=2):
            label = parse_label(row["label"], f"{ann}:{i}")
            rows.append((_resolve(row["file_path"], base, Path(root), ann, i), label))
    if not rows:
        raise SeqDeepFakeFormatError(f"{ann} has no rows")
    return rows


def _resolve(fp: str, base: Path, root: Path, ann: Path, line: int) -> Path:
    for cand in (base / fp, root / fp, Path(fp)):
        if cand.is_file():
            return cand
    raise SeqDeepFakeFormatError(f"{ann}:{line}: image {fp!r} not found under {base} or {root}")


def read_landmarks(root: str | os.PathLike[str], task: str, split: str
                   ) -> dict[str, np.ndarray] | None:
    """{file_path: (5, 2) float32} from ``TASK/landmarks/{split}.csv`` if present."""
    path = task_dir(root, task) / "landmarks" / f"{split}.csv"
    if not path.is_file():
        return None
    out = {}
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for row in reader:
            out[row[0]] = np.asarray([float(v) for v in row[1:11]], np.float32).reshape(5, 2)
    return out


@dataclass
class SeqDeepFakeSplit:
    """One split in memory: images resized by the shared preprocessing, as uint8.

    Attributes:
        images: uint8 (N, H, W, 3), exactly ``to_array``'s pixels (x 255).
        labels: int64 (N, 5) padded sequences.
        landmarks: float32 (N, 5, 2) in the resized frame.
        paths: the image paths.
    """

    images: np.ndarray
    labels: np.ndarray
    landmarks: np.ndarray
    paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def load_split(root: str | os.PathLike[str], task: str, split: str, spec: PreprocessSpec,
               limit: int | None = None) -> SeqDeepFakeSplit:
    """Read, resize (``runtime.preprocess.to_array``) and hold one split in memory."""
    rows = read_annotations(root, task, split)[:limit]
    base = task_dir(root, task)
    lms = read_landmarks(root, task, split) or {}
    h, w = spec.size
    imgs = np.empty((len(rows), h, w, 3), np.uint8)
    marks = np.empty((len(rows), 5, 2), np.float32)
    for i, (path, _) in enumerate(rows):
        with Image.open(path) as im:
            src_w, src_h = im.size
            arr = to_array(im, spec)
        imgs[i] = np.round(arr.transpose(1, 2, 0) * 255).astype(np.uint8)
        key = str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
        lm = lms.get(key, CANONICAL_LANDMARKS * np.array([src_w / 256, src_h / 256], np.float32))
        marks[i] = lm * np.array([w / src_w, h / src_h], np.float32)
    labels = np.asarray([lab for _, lab in rows], np.int64)
    return SeqDeepFakeSplit(imgs, labels, marks, [str(p) for p, _ in rows])


class SeqDeepFakeDataset(Dataset):
    """Torch view of a split: (x float32 (3, H, W) normalised, label int64 (5,)).

    Args:
        split: the split in memory.
        spec: preprocessing (normalisation after augmentation).
        augment: optional ``(img (3, H, W) float in [0, 1], label (5,), landmarks (5, 2))
            -> (img, label)`` applied before ``normalize``.
    """

    def __init__(self, split: SeqDeepFakeSplit, spec: PreprocessSpec,
                 augment: Callable[[np.ndarray, np.ndarray, np.ndarray],
                                   tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        self.split, self.spec, self.augment = split, spec, augment

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.split.images[i].transpose(2, 0, 1).astype(np.float32) / 255.0
        label = self.split.labels[i].copy()
        if self.augment is not None:
            img, label = self.augment(img, label, self.split.landmarks[i].copy())
        x = normalize(np.ascontiguousarray(img, dtype=np.float32), self.spec)
        return torch.from_numpy(x), torch.from_numpy(np.asarray(label, np.int64))


def describe(split: SeqDeepFakeSplit) -> dict[str, Any]:
    """Counts per sequence length (for reports)."""
    lengths = (split.labels > 0).sum(1)
    return {"n": len(split), "by_length": {int(k): int((lengths == k).sum()) for k in range(SLOTS + 1)}}
