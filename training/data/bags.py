"""qMIL bags: sets of images, each paired with a query class and a binary bag label.

Sampling follows thesis sections 2.3.1 / 2.4.1 (bag label: docs/qmil.md, Eq. (2.1)): for
each query class q in the query set Q', ``bags_per_query`` bags (= N / |Q'|), of which a
fraction ``pos_fraction`` (1/2 in the thesis) are positive. Bag sizes are drawn from
Normal(mean, std) = (10, 2) (the MNIST-bags of Ilse et al. 2018), rounded and clipped to
[min_size, max_size]; bags are padded to ``max_size`` (K_max) and carry a boolean mask.
Instances come only from ``instance_classes`` (the seen classes for training bags). A
positive bag holds at least one image of class q: its instance classes are drawn uniformly
from ``instance_classes`` and redrawn until one is q (rejection sampling, i.e. uniform draws
conditioned on Y = 1); a negative bag draws uniformly from ``instance_classes`` without q.
Instance labels are kept in :class:`BagSet` for evaluation only; :class:`BagDataset` never
returns them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from runtime.preprocess import FASHION_MNIST, PreprocessSpec, normalize

PAD = -1


@dataclass
class BagSet:
    """A sampled set of bags (indices into an image array, not the images).

    Attributes:
        indices: int64 (N, K_max), image index per slot, ``PAD`` (-1) for padding.
        mask: bool (N, K_max), True for real instances.
        query: int64 (N,), the class id the bag is asked about.
        label: int64 (N,), 1 iff the bag holds an instance of class ``query`` (eq. 2.1).
        instance_labels: int64 (N, K_max), class of each instance, ``PAD`` for padding.
            Evaluation only (attention accuracy); never used in training.
    """

    indices: np.ndarray
    mask: np.ndarray
    query: np.ndarray
    label: np.ndarray
    instance_labels: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    @property
    def sizes(self) -> np.ndarray:
        """Real instances per bag: int64 (N,)."""
        return self.mask.sum(1).astype(np.int64)

    def subset(self, rows: np.ndarray) -> "BagSet":
        return BagSet(self.indices[rows], self.mask[rows], self.query[rows], self.label[rows],
                      self.instance_labels[rows])


def sample_bag_sizes(rng: np.random.Generator, n: int, mean: float = 10.0, std: float = 2.0,
                     min_size: int = 2, max_size: int = 16) -> np.ndarray:
    """n bag sizes ~ round(Normal(mean, std)) clipped to [min_size, max_size]: int64 (n,)."""
    if not 1 <= min_size <= max_size:
        raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
    return np.clip(np.rint(rng.normal(mean, std, size=n)), min_size, max_size).astype(np.int64)


def sample_bags(labels: np.ndarray, queries: Sequence[int], bags_per_query: int, *,
                instance_classes: Sequence[int] | None = None, pos_fraction: float = 0.5,
                size_mean: float = 10.0, size_std: float = 2.0, min_size: int = 2,
                max_size: int = 16, seed: int = 0) -> BagSet:
    """Sample qMIL bags from a labelled image pool.

    Args:
        labels: int (M,), class of each image in the pool.
        queries: the query classes Q'.
        bags_per_query: bags per query (N / |Q'|).
        instance_classes: classes instances may come from (default: all in ``labels``).
        pos_fraction: fraction of positive bags per query (0.5 = balanced).
        size_mean, size_std, min_size, max_size: bag size distribution; ``max_size`` = K_max.
        seed: the sampler's seed (same seed -> same bags).

    Returns:
        A :class:`BagSet` of ``len(queries) * bags_per_query`` bags, grouped by query,
        positives first within each query.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels) if instance_classes is None else np.asarray(
        sorted(set(int(c) for c in instance_classes)), dtype=np.int64)
    pools = {int(c): np.flatnonzero(labels == c) for c in classes}
    if any(len(p) == 0 for p in pools.values()):
        raise ValueError(f"no images of classes {[c for c, p in pools.items() if not len(p)]}")
    if not 0.0 <= pos_fraction <= 1.0:
        raise ValueError(f"pos_fraction must lie in [0, 1], got {pos_fraction}")
    n_pos = int(round(bags_per_query * pos_fraction))
    total = len(queries) * bags_per_query
    indices = np.full((total, max_size), PAD, dtype=np.int64)
    inst = np.full((total, max_size), PAD, dtype=np.int64)
    qs = np.zeros(total, dtype=np.int64)
    ys = np.zeros(total, dtype=np.int64)
    sizes = sample_bag_sizes(rng, total, size_mean, size_std, min_size, max_size)
    row = 0
    for q in queries:
        q = int(q)
        if q not in pools:
            raise ValueError(f"query class {q} is not among the instance classes {classes.tolist()}")
        others = classes[classes != q]
        for j in range(bags_per_query):
            k, positive = int(sizes[row]), j < n_pos
            if positive:
                while True:  # uniform draws conditioned on containing q
                    cls = rng.choice(classes, size=k)
                    if (cls == q).any():
                        break
            else:
                if len(others) == 0:
                    raise ValueError("a negative bag needs at least one class besides the query")
                cls = rng.choice(others, size=k)
            indices[row, :k] = [pools[int(c)][rng.integers(len(pools[int(c)]))] for c in cls]
            inst[row, :k] = cls
            qs[row], ys[row] = q, int(positive)
            row += 1
    mask = indices != PAD
    return BagSet(indices, mask, qs, ys, inst)


def bag_images(images: np.ndarray, indices: np.ndarray,
               spec: PreprocessSpec = FASHION_MNIST) -> np.ndarray:
    """Gather and normalise the images of bags.

    Args:
        images: uint8 image pool (M, H, W) (grayscale) or (M, H, W, 3) (colour), already
            at the model's size.
        indices: int (..., K) image indices, ``PAD`` for padding.
        spec: preprocessing (its mean/std).

    Returns:
        float32 (..., K, C, H, W) normalised with :func:`runtime.preprocess.normalize`;
        padding slots are zero images.
    """
    valid = indices != PAD
    gathered = images[np.where(valid, indices, 0)].astype(np.float32) / 255.0
    if images.ndim == 3:
        gathered = gathered[..., None, :, :]
    else:
        gathered = np.moveaxis(gathered, -1, -3)
    x = normalize(gathered, spec)
    x[~valid] = 0.0
    return x


class BagDataset(Dataset):
    """Torch view of a :class:`BagSet` for training.

    Each item is a dict: ``images`` float32 (K_max, C, H, W), ``mask`` bool (K_max,),
    ``query`` int64 () class id, ``label`` float32 (). Instance labels are not exposed.
    """

    def __init__(self, bags: BagSet, images: np.ndarray,
                 spec: PreprocessSpec = FASHION_MNIST) -> None:
        self.bags, self.images, self.spec = bags, images, spec

    def __len__(self) -> int:
        return len(self.bags)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        b = self.bags
        return {"images": torch.from_numpy(bag_images(self.images, b.indices[i], self.spec)),
                "mask": torch.from_numpy(b.mask[i].copy()),
                "query": torch.tensor(int(b.query[i])),
                "label": torch.tensor(float(b.label[i]))}


def trim_collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack items and drop padding columns that no bag in the batch uses.

    Returns ``images`` (B, K, C, H, W), ``mask`` (B, K), ``query`` (B,), ``label`` (B,)
    with K = the largest real bag size in the batch (<= K_max).
    """
    out = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    k = int(out["mask"].sum(1).max())
    out["images"], out["mask"] = out["images"][:, :k], out["mask"][:, :k]
    return out


def iter_bag_batches(bags: BagSet, images: np.ndarray, batch_size: int = 64,
                     spec: PreprocessSpec = FASHION_MNIST):
    """Yield ``(rows, images, mask)`` over a BagSet in order, for evaluation.

    ``rows`` int64 (b,) positions in ``bags``; ``images`` float32 tensor (b, K, C, H, W)
    and ``mask`` bool tensor (b, K), trimmed to the batch's largest bag.
    """
    for start in range(0, len(bags), batch_size):
        rows = np.arange(start, min(start + batch_size, len(bags)))
        k = int(bags.mask[rows].sum(1).max())
        x = bag_images(images, bags.indices[rows, :k], spec)
        yield rows, torch.from_numpy(x), torch.from_numpy(bags.mask[rows, :k].copy())
