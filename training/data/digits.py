"""Digit images for qMIL's digit bags: scikit-learn's bundled 8x8 handwritten digits.

MNIST itself cannot be downloaded here; scikit-learn ships the UCI "optical recognition of
handwritten digits" test set (1797 images, 8x8, 16 grey levels, ~180 per digit) inside the
package. Each image is scaled to 0..255 and resized to 28x28 (bilinear) so that the same
LeNet instance encoder and preprocessing as Fashion-MNIST apply. The split is fixed: a
seeded, per-class stratified two-thirds / one-third train/test partition.
"""
from __future__ import annotations

import numpy as np

from training.data.fashion_mnist import ArrayDataset

CLASS_NAMES: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven",
                                "eight", "nine")
"""Query words of the digit classes (GloVe has all ten)."""
_SPLIT_SEED = 0
_TRAIN_FRACTION = 2 / 3


def _split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Stratified train/test indices, fixed by ``_SPLIT_SEED``."""
    rng = np.random.default_rng(_SPLIT_SEED)
    train, test = [], []
    for c in range(len(CLASS_NAMES)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(len(idx) * _TRAIN_FRACTION))
        train.append(idx[:k])
        test.append(idx[k:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def load_digits(split: str = "train", size: int = 28) -> ArrayDataset:
    """A split of the bundled digits.

    Args:
        split: "train" (1198 images) or "test" (599).
        size: output side in pixels.

    Returns:
        ArrayDataset with images uint8 (N, size, size) and labels int64 (N,).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    import cv2
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    labels = d.target.astype(np.int64)
    idx = _split_indices(labels)[split]
    small = (d.images[idx] * (255.0 / 16.0)).astype(np.float32)           # (N, 8, 8)
    images = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR)
                       for im in small])
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    return ArrayDataset(images, labels[idx], CLASS_NAMES)
