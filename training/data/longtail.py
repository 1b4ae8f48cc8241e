"""Long-tailed subsets (as CIFAR-LT) and the Many / Medium / Few class groups.

The class at tail rank r (0 = head) keeps n_r = floor(n_max * ratio^(-r / (C - 1))) training
images (the exponential profile of Cui et al. 2019 / Cao et al. 2019), drawn without
replacement with a seeded generator. Which class sits at rank r is the ``class_order``:
label order (class 0 is the head) or a seeded permutation, so that hard classes can land in
the tail. The split is recorded as plain JSON-able data (:meth:`LongTailSplit.to_dict`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

GROUPS: tuple[str, str, str] = ("many", "medium", "few")
# iNaturalist's thresholds (Kang et al. 2020): many > 100, medium 20..100, few < 20.
INAT_THRESHOLDS: dict[str, int] = {"many_above": 100, "few_below": 20}


def longtail_profile(n_max: int, num_classes: int, ratio: float) -> list[int]:
    """Images per tail rank: n_r = floor(n_max * ratio^(-r / (C - 1))), r = 0..C-1.

    Args:
        n_max: images of the head class.
        num_classes: C.
        ratio: imbalance ratio n_0 / n_{C-1} (>= 1).
    """
    if num_classes < 1 or n_max < 1 or ratio < 1:
        raise ValueError(f"need num_classes >= 1, n_max >= 1, ratio >= 1; got "
                         f"{num_classes}, {n_max}, {ratio}")
    if num_classes == 1:
        return [int(n_max)]
    return [max(1, int(n_max * ratio ** (-r / (num_classes - 1)))) for r in range(num_classes)]


def class_order(num_classes: int, order: str = "label", seed: int = 0) -> list[int]:
    """Class id at each tail rank: ``"label"`` -> 0..C-1, ``"permutation"`` -> seeded shuffle."""
    if order == "label":
        return list(range(num_classes))
    if order == "permutation":
        return [int(c) for c in np.random.default_rng(seed).permutation(num_classes)]
    raise ValueError(f"class order must be 'label' or 'permutation', got {order!r}")


@dataclass
class LongTailSplit:
    """A long-tailed subset of a labelled data set.

    Attributes:
        indices: sorted indices into the source data set (int64, no duplicates).
        class_counts: images kept per class id (list of C ints).
        order: class id at each tail rank (head first).
        ratio: imbalance ratio; seed: sampling seed.
    """

    indices: np.ndarray
    class_counts: list[int]
    order: list[int]
    ratio: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record of the split (indices as a list of ints)."""
        return {"indices": [int(i) for i in self.indices], "class_counts": self.class_counts,
                "order": self.order, "ratio": float(self.ratio), "seed": int(self.seed)}


def make_longtail(labels: np.ndarray, ratio: float = 100.0, order: str = "label",
                  order_seed: int = 0, seed: int = 0, n_max: int | None = None,
                  num_classes: int | None = None) -> LongTailSplit:
    """Draw a long-tailed subset.

    Args:
        labels: int labels of the full (balanced) split. Shape: (N,).
        ratio: imbalance ratio (100 as CIFAR-LT).
        order: ``"label"`` or ``"permutation"`` (see :func:`class_order`).
        order_seed: seed of the permutation.
        seed: seed of the per-class sampling.
        n_max: head-class size (default: the smallest class size of ``labels``).
        num_classes: C (default: max label + 1).

    Returns:
        The :class:`LongTailSplit`.
    """
    labels = np.asarray(labels).astype(np.int64)
    c = int(num_classes if num_classes is not None else labels.max() + 1)
    available = np.bincount(labels, minlength=c)
    if n_max is None:
        n_max = int(available.min())
    ranks = class_order(c, order, order_seed)
    profile = longtail_profile(int(n_max), c, ratio)
    rng = np.random.default_rng(seed)
    counts = [0] * c
    chosen: list[np.ndarray] = []
    for rank, cls in enumerate(ranks):
        pool = np.flatnonzero(labels == cls)
        want = profile[rank]
        if want > len(pool):
            raise ValueError(f"class {cls} has {len(pool)} images, the profile needs {want}")
        chosen.append(rng.choice(pool, size=want, replace=False))
        counts[cls] = want
    indices = np.sort(np.concatenate(chosen)).astype(np.int64)
    return LongTailSplit(indices, counts, ranks, float(ratio), int(seed))


def class_groups(class_counts: Sequence[int], many_above: int = 100,
                 few_below: int = 20) -> list[str]:
    """Many / Medium / Few group of each class from its training count.

    many: N > ``many_above``; few: N < ``few_below``; medium: otherwise
    (iNaturalist's 100 / 20 by default, as thesis Chapter 4 groups them).
    """
    if few_below > many_above:
        raise ValueError(f"few_below ({few_below}) must not exceed many_above ({many_above})")
    return ["many" if n > many_above else "few" if n < few_below else "medium"
            for n in class_counts]


def derived_group_thresholds(class_counts: Sequence[int]) -> dict[str, int]:
    """Many / Medium / Few thresholds from the training counts, for data whose user set none.

    The classes are ranked by count (largest first) and split in thirds: the first
    ``ceil(C / 3)`` are "many", the last ``floor(C / 3)`` "few", the rest "medium";
    ``many_above`` is the count of the largest class outside "many" and ``few_below`` that
    of the smallest class above "few", so :func:`class_groups` gives those groups (classes
    tied with a boundary count go to "medium"). On Fashion-MNIST-LT (ratio 100: 6000 ... 60)
    this is the 4 / 3 / 3 split of the fixed 1000 / 200; on a folder of 30-image classes
    every class is "medium" (fixed thresholds would make them all "few")."""
    counts = sorted((int(n) for n in class_counts), reverse=True)
    c = len(counts)
    if c == 0:
        raise ValueError("no classes to group")
    n_many, n_few = -(-c // 3), c // 3
    many_above = counts[n_many] if n_many < c else counts[-1]
    few_below = counts[c - n_few - 1] if n_few else 0
    return {"many_above": int(many_above), "few_below": int(min(few_below, many_above))}


def class_balanced_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Class-balanced sampling (cRT): each draw picks a class uniformly among the classes
    present, then an image of that class uniformly (with replacement).

    Args:
        labels: labels of the training set. Shape: (N,).
        n: number of draws.

    Returns:
        Indices into ``labels``. Shape: (n,).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    pools = [np.flatnonzero(labels == c) for c in classes]
    picks = rng.integers(0, len(classes), size=n)
    return np.array([pools[k][rng.integers(0, len(pools[k]))] for k in picks], dtype=np.int64)
