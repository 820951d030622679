"""Seeded samplers that depend only on (seed, epoch), so a resumed run sees the same batches.

``EpochShuffleSampler`` shuffles; ``LengthGroupedBatchSampler`` shuffles into batches of similar length
(less padding in training); ``LengthSortedSampler`` orders evaluation data longest first (less padding in
eval batches) and ``restore_order`` puts outputs collected in loader order back into dataset order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import Sampler

from headstart.errors import DataError

__all__ = ["EpochShuffleSampler", "LengthGroupedBatchSampler", "LengthSortedSampler", "restore_order"]

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


class EpochShuffleSampler(Sampler[int]):
    """A random permutation per epoch from ``seed + epoch``.

    Lightning calls ``set_epoch`` on samplers that have it at every epoch start, including after a
    resume, so epoch 3 of a resumed run shuffles exactly like epoch 3 of an uninterrupted one (a
    ``DataLoader(shuffle=True, generator=g)`` does not: its generator restarts on resume).
    """

    def __init__(self, n: int, seed: int = 0, with_epoch: bool = False) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.epoch = 0
        self.with_epoch = bool(with_epoch)  # yield (index, epoch): datasets that augment key their RNG on it

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        order = torch.randperm(self.n, generator=_epoch_generator(self.seed, self.epoch)).tolist()
        return iter([(i, self.epoch) for i in order]) if self.with_epoch else iter(order)

    def __len__(self) -> int:
        return self.n


def _lengths_array(lengths: Sequence[int] | np.ndarray | torch.Tensor, owner: str) -> np.ndarray:
    """``lengths`` as a 1-D numeric array, or a DataError saying what is wrong with it."""
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.detach().cpu().numpy()
    arr = np.asarray(lengths)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(
            f"{owner}: lengths must be a 1-D sequence of numbers (one length per dataset item), got an array "
            f"of shape {arr.shape} and dtype {arr.dtype}. Pass e.g. [len(ids) for ids in dataset.input_ids]."
        )
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise DataError(
            f"{owner}: lengths[{bad}] is {arr[bad]}, expected a finite number of tokens. "
            f"Compute lengths from the tokenized items."
        )
    if (arr < 0).any():
        bad = int(np.flatnonzero(arr < 0)[0])
        raise DataError(
            f"{owner}: lengths[{bad}] is {arr[bad]}, expected lengths >= 0. "
            f"Compute lengths as the number of tokens of each item."
        )
    return arr


def _positive_int(owner: str, name: str, value: object, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{owner}: {name} must be an integer >= 1, got {value!r}. {fix}")
    return int(value)


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Random batches of items of similar length, reproducible from ``(seed, epoch)``.

    Padding every item to the longest one in its batch wastes compute when lengths vary; grouping
    similar lengths removes most of it while keeping batches random. Per epoch: a permutation from
    ``seed * 100_003 + epoch`` (as in :class:`EpochShuffleSampler`), cut into mega-batches of
    ``batch_size * mega_batch_mult`` items, each sorted longest first and cut into batches, whose order
    is then shuffled with the same generator. A larger ``mega_batch_mult`` groups lengths more tightly
    and makes batch composition less random.

    Use it as ``DataLoader(dataset, batch_sampler=...)``. Lightning calls ``set_epoch`` on
    ``loader.sampler`` and ``loader.batch_sampler.sampler``, not on the batch sampler itself, so the
    epoch lives in ``self.sampler`` (an :class:`EpochShuffleSampler` yielding the same permutation);
    ``set_epoch`` here sets it too.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray | torch.Tensor,
        batch_size: int,
        seed: int = 0,
        mega_batch_mult: int = 50,
        drop_last: bool = False,
    ) -> None:
        owner = "LengthGroupedBatchSampler"
        self.lengths = _lengths_array(lengths, owner)
        self.batch_size = _positive_int(
            owner, "batch_size", batch_size, "Set the batch size to the number of items per batch."
        )
        self.mega_batch_mult = _positive_int(
            owner,
            "mega_batch_mult",
            mega_batch_mult,
            "It is the number of batches sorted together by length; the default is 50.",
        )
        self.drop_last = bool(drop_last)
        self.sampler = EpochShuffleSampler(len(self.lengths), seed)

    @property
    def seed(self) -> int:
        return self.sampler.seed

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def batches(self) -> list[list[int]]:
        """This epoch's batches, in the order ``__iter__`` yields them."""
        n, size = len(self.lengths), self.batch_size
        g = _epoch_generator(self.seed, self.epoch)
        perm = torch.randperm(n, generator=g).numpy()
        mega = size * self.mega_batch_mult
        batches: list[np.ndarray] = []
        for start in range(0, n, mega):
            chunk = perm[start : start + mega]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
        if self.drop_last and batches and len(batches[-1]) < size:
            batches.pop()
        if not batches:
            return []
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        # Put the batch with the longest item first, so a batch too long for memory fails on the first
        # step rather than mid-epoch. Each batch is sorted longest first, so its item 0 is its longest.
        longest = int(np.argmax([self.lengths[b[0]] for b in batches]))
        batches[0], batches[longest] = batches[longest], batches[0]
        return [b.tolist() for b in batches]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class LengthSortedSampler(Sampler[int]):
    """Evaluation order longest first, so each eval batch holds similar lengths (less padding).

    ``order`` is the array of yielded indices; outputs collected in loader order go back to dataset
    order with :func:`restore_order` (``values[np.argsort(order)]``). The order does not depend on a
    seed or an epoch.
    """

    def __init__(self, lengths: Sequence[int] | np.ndarray | torch.Tensor) -> None:
        self.lengths = _lengths_array(lengths, "LengthSortedSampler")
        self.order: np.ndarray = np.argsort(-self.lengths, kind="stable").astype(np.int64)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order.tolist())

    def __len__(self) -> int:
        return len(self.order)


def restore_order(values: ArrayT, sampler: object) -> ArrayT:
    """``values`` (rows in loader order) back in dataset order, using ``sampler.order``.

    Returns ``values`` unchanged when the sampler has no ``order`` (sequential loaders are already in
    dataset order).
    """
    order = getattr(sampler, "order", None)
    if order is None:
        return values
    if len(values) != len(order):
        raise DataError(
            f"restore_order: got {len(values)} rows but the sampler ordered {len(order)} items. "
            f"Pass all outputs of one full pass over the loader (drop_last=False), concatenated in order."
        )
    inverse = np.argsort(np.asarray(order), kind="stable")
    if isinstance(values, torch.Tensor):
        return values[torch.as_tensor(inverse, device=values.device)]
    return values[inverse]
