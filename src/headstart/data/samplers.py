"""Seeded shuffling that depends only on (seed, epoch), so a resumed run sees the same batches."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["EpochShuffleSampler"]


class EpochShuffleSampler(Sampler[int]):
    """A random permutation per epoch from ``seed + epoch``.

    Lightning calls ``set_epoch`` on samplers that have it at every epoch start, including after a
    resume, so epoch 3 of a resumed run shuffles exactly like epoch 3 of an uninterrupted one (a
    ``DataLoader(shuffle=True, generator=g)`` does not: its generator restarts on resume).
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n
