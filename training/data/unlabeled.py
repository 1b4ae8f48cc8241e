"""A folder of images without (or with partial) labels, nested or flat: DCL pre-training.

Every image under the folder is a training image, at any depth (hidden files and folders
skipped; the listing is :func:`runtime.gallery_build.list_images`, the one the retrieval
gallery of a folder uses). Where the tree has labels they are its first-level sub-folders,
as in an ImageFolder and in a folder gallery: ``root/<label>/**/<image>`` has that label,
an image directly under ``root`` has none (-1). Unreadable files are left out and logged
(:func:`training.data.folders.unreadable`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from runtime.gallery_build import label_names, list_images
from training.data.fashion_mnist import DatasetNotFoundError
from training.data.folders import IMAGE_EXTENSIONS, FileDataset, report_skipped, unreadable


def scan_unlabeled_folder(root: str | os.PathLike[str], check: bool = True) -> FileDataset:
    """Every image under ``root``; labels from first-level sub-folders, -1 elsewhere.

    Returns:
        A :class:`FileDataset` whose ``class_names`` are the sub-folder names (possibly
        none) and whose ``labels`` are int64 (N,) ids into them, -1 for unlabelled images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder not found: {root}")
    rel = list_images(root, tuple(IMAGE_EXTENSIONS))
    skipped = [str(root / r) for r in rel if check and unreadable(root / r) is not None]
    report_skipped(str(root), skipped)
    bad = set(skipped)
    rel = [r for r in rel if str(root / r) not in bad]
    if not rel:
        raise DatasetNotFoundError(f"{root} holds no readable images "
                                   f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
    names = label_names(rel)
    ids = {n: i for i, n in enumerate(names)}
    labels = np.asarray([ids[r.split("/", 1)[0]] if "/" in r else -1 for r in rel],
                        dtype=np.int64)
    return FileDataset([str(root / r) for r in rel], labels, tuple(names), tuple(skipped))
