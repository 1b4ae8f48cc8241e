"""A seeded, resumable, DDP-aware batch order.

Each epoch uses the permutation ``randperm(n, seed + epoch)``. Global batch g holds
positions ``[g*B, (g+1)*B)`` of the permutation; under DDP rank r takes the contiguous
slice ``[g*B + r*b, g*B + (r+1)*b)`` with b = B / world. So one process with batch B and
W processes with batch B/W see exactly the same global batches, and a run resumed at
global step s continues with batch s of the same permutation.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Yields this rank's indices for one epoch, starting at a given global batch."""

    def __init__(self, n: int, global_batch: int, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world: int = 1) -> None:
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} is not divisible by {world} processes")
        if n < global_batch:
            raise ValueError(f"data set of {n} samples is smaller than one batch ({global_batch})")
        self.n, self.global_batch, self.seed, self.shuffle = n, global_batch, seed, shuffle
        self.rank, self.world = rank, world
        self.local_batch = global_batch // world
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
        else:
            perm = list(range(self.n))
        B, b = self.global_batch, self.local_batch
        for gb in range(self.start_batch, self.batches_per_epoch):
            base = gb * B + self.rank * b
            yield from perm[base : base + b]

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.local_batch
