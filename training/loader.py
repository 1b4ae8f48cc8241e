"""The training DataLoader: worker processes, pinned memory, exact resume.

With ``train.num_workers: 0`` (the default) items are made in the training process and
draw from its global RNGs, which the checkpoints capture: a resumed run is identical to an
uninterrupted one.

With workers, each worker has its own RNG stream, which a resumed run cannot continue
(the batch a run resumes at goes to another worker, at another point of its stream). So
every item is made with its random generators seeded from (``run.seed``, epoch, the item's
index) (:class:`SeededItems`): Python's ``random``, numpy's global ``RandomState`` and
torch's global generator. An item's random draws (augmentation inside the data set) are
then the same whichever worker makes it, so a run with workers is exactly resumable and
the same for any number of workers (tested). It differs from the ``num_workers: 0`` run
(whose items draw from the one global stream). Random draws a method makes in its
``loss`` (on the training process) are captured by the checkpoints.

``train.pin_memory`` pins the batches in page-locked memory on CUDA (faster, asynchronous
host-to-device copies); it has no effect on the CPU.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for item ``index`` of ``epoch`` in a run seeded ``seed``."""
    return int(np.random.SeedSequence([seed % 2**32, epoch, index]).generate_state(1)[0])


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields (index, item seed) for the indices of ``sampler``, for :class:`SeededItems`."""

    def __init__(self, sampler: Sampler[int], seed: int, epoch: int) -> None:
        self.sampler, self.seed, self.epoch = sampler, seed, epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.sampler:
            yield i, item_seed(self.seed, self.epoch, int(i))

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


class SeededItems(Dataset):
    """``dataset`` indexed by (index, seed): seeds ``random``, numpy's global RandomState
    and torch's global generator with ``seed``, then returns ``dataset[index]``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        return self.dataset[index]


def train_loader(dataset: Dataset, sampler: Sampler[int], batch_size: int, *,
                 collate_fn: Callable | None, num_workers: int, pin_memory: bool,
                 seed: int, epoch: int) -> DataLoader:
    """The loader of one training epoch.

    Args:
        dataset: the method's training set.
        sampler: this process's indices of the epoch (from the resume position on).
        batch_size: items per batch (the micro-batch under gradient accumulation).
        collate_fn: the method's collate function (None: torch's default).
        num_workers: 0 = items made in this process; else worker processes with items
            seeded per (seed, epoch, index).
        pin_memory: pin batches (used by the caller only on CUDA).
        seed: the run's seed.
        epoch: the epoch (0-based).
    """
    if num_workers:
        dataset, sampler = SeededItems(dataset), SeededSampler(sampler, seed, epoch)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
                      collate_fn=collate_fn, num_workers=num_workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed + epoch))
