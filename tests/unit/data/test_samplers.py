from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from headstart.data import (
    EpochShuffleSampler,
    LengthGroupedBatchSampler,
    LengthSortedSampler,
    restore_order,
)
from headstart.errors import DataError


def _lengths(n: int = 1000, seed: int = 0) -> np.ndarray:
    """Skewed token lengths like real text: most short, a few long."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(mean=4.0, sigma=0.8, size=n), 2, 512).astype(np.int64)


def _epoch(sampler: LengthGroupedBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def _padding_waste(batches: list[list[int]], lengths: np.ndarray) -> int:
    return sum(int(lengths[b].max()) * len(b) for b in batches) - int(lengths.sum())


@pytest.mark.parametrize("n", [0, 1, 31, 32, 1000, 1001])
def test_each_index_exactly_once_and_len(n: int) -> None:
    lengths = _lengths(n)
    sampler = LengthGroupedBatchSampler(lengths, batch_size=32, seed=3, mega_batch_mult=4)
    for epoch in range(3):
        batches = _epoch(sampler, epoch)
        assert len(batches) == len(sampler) == -(-n // 32)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(n))
        assert all(isinstance(i, int) for i in flat)
        assert all(len(b) == 32 for b in batches if len(b) != n % 32)


def test_same_seed_and_epoch_repeat_other_epochs_and_seeds_differ() -> None:
    lengths = _lengths()
    a = LengthGroupedBatchSampler(lengths, batch_size=16, seed=1)
    b = LengthGroupedBatchSampler(lengths, batch_size=16, seed=1)
    assert _epoch(a, 0) == _epoch(b, 0) == list(a)  # iterating twice gives the same epoch
    assert _epoch(a, 0) != _epoch(a, 1)
    assert _epoch(a, 1) != _epoch(LengthGroupedBatchSampler(lengths, batch_size=16, seed=2), 1)


def test_resumed_sampler_reproduces_epoch() -> None:
    lengths = _lengths()
    original = LengthGroupedBatchSampler(lengths, batch_size=16, seed=7)
    epochs = [_epoch(original, e) for e in range(5)]
    resumed = LengthGroupedBatchSampler(lengths, batch_size=16, seed=7)
    assert _epoch(resumed, 3) == epochs[3]


def test_epoch_set_through_inner_sampler_like_lightning() -> None:
    # Lightning calls set_epoch on loader.sampler and loader.batch_sampler.sampler, not on the batch sampler.
    lengths = _lengths(200)
    sampler = LengthGroupedBatchSampler(lengths, batch_size=8, seed=5)
    expected = _epoch(LengthGroupedBatchSampler(lengths, batch_size=8, seed=5), 2)
    loader = DataLoader(list(range(200)), batch_sampler=sampler)
    loader.batch_sampler.sampler.set_epoch(2)
    assert sampler.epoch == 2 and list(sampler) == expected
    # The inner sampler yields the same permutation the batches are cut from.
    assert len(sampler.sampler) == 200 and sorted(sampler.sampler) == list(range(200))


def test_lightning_set_sampler_epoch_reaches_it() -> None:
    data_utils = pytest.importorskip("lightning_fabric.utilities.data")
    set_sampler_epoch = getattr(data_utils, "_set_sampler_epoch", None)
    if set_sampler_epoch is None:
        pytest.skip("lightning_fabric has no _set_sampler_epoch")
    sampler = LengthGroupedBatchSampler(_lengths(100), batch_size=8)
    set_sampler_epoch(DataLoader(list(range(100)), batch_sampler=sampler), 4)
    assert sampler.epoch == 4


def test_padding_waste_much_lower_than_plain_shuffle() -> None:
    lengths = _lengths(2000, seed=11)
    size = 16
    for epoch in range(3):
        grouped = _epoch(LengthGroupedBatchSampler(lengths, batch_size=size, seed=0), epoch)
        shuffle = EpochShuffleSampler(len(lengths), seed=0)
        shuffle.set_epoch(epoch)
        perm = list(shuffle)
        plain = [perm[i : i + size] for i in range(0, len(perm), size)]
        assert _padding_waste(grouped, lengths) < 0.5 * _padding_waste(plain, lengths)


def test_longest_item_in_first_batch() -> None:
    lengths = _lengths(1000, seed=2)
    lengths[617] = 10_000
    for seed in range(3):
        sampler = LengthGroupedBatchSampler(lengths, batch_size=16, seed=seed, mega_batch_mult=5)
        for epoch in range(4):
            batches = _epoch(sampler, epoch)
            assert 617 in batches[0]
            assert lengths[batches[0]].max() == lengths.max()
            assert sampler.batches() == batches


def test_batches_within_a_mega_batch_are_sorted_longest_first() -> None:
    lengths = _lengths(64)
    # One mega-batch covering everything: batches partition the length-sorted order.
    batches = _epoch(LengthGroupedBatchSampler(lengths, batch_size=8, mega_batch_mult=8), 0)
    for b in batches:
        assert np.all(np.diff(lengths[b]) <= 0)
    spans = sorted((int(lengths[b].min()), int(lengths[b].max())) for b in batches)
    assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(spans))


@pytest.mark.parametrize(("n", "expected_batches"), [(100, 6), (96, 6), (15, 0)])
def test_drop_last(n: int, expected_batches: int) -> None:
    sampler = LengthGroupedBatchSampler(_lengths(n), batch_size=16, drop_last=True, mega_batch_mult=2)
    for epoch in range(3):
        batches = _epoch(sampler, epoch)
        assert len(batches) == len(sampler) == expected_batches
        assert all(len(b) == 16 for b in batches)
        flat = [i for b in batches for i in b]
        assert len(set(flat)) == len(flat) == expected_batches * 16


def test_empty_lengths_gives_no_batches() -> None:
    sampler = LengthGroupedBatchSampler([], batch_size=4)
    assert len(sampler) == 0 and list(sampler) == []
    assert len(LengthSortedSampler([])) == 0 and list(LengthSortedSampler([])) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0\. Set the batch size"),
        ({"batch_size": 2.5}, r"batch_size must be an integer >= 1, got 2\.5"),
        ({"batch_size": True}, r"batch_size must be an integer >= 1, got True"),
        (
            {"batch_size": 4, "mega_batch_mult": 0},
            r"mega_batch_mult must be an integer >= 1, got 0\..*default",
        ),
    ],
)
def test_argument_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(DataError, match=r"LengthGroupedBatchSampler: " + match):
        LengthGroupedBatchSampler([3, 1, 2], **kwargs)  # type: ignore[arg-type]


def test_length_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match=r"lengths\[1\] is -2, expected lengths >= 0"):
        LengthGroupedBatchSampler([3, -2, 1], batch_size=2)
    with pytest.raises(ValueError, match=r"lengths must be a 1-D sequence of numbers.*shape \(2, 2\)"):
        LengthSortedSampler([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"dtype <U1"):
        LengthSortedSampler(["a", "b"])
    with pytest.raises(ValueError, match=r"lengths\[0\] is nan, expected a finite number"):
        LengthSortedSampler([float("nan"), 1.0])


def test_length_sorted_sampler_order() -> None:
    lengths = [3, 7, 3, 1, 7, 5]
    sampler = LengthSortedSampler(lengths)
    assert list(sampler) == [1, 4, 5, 0, 2, 3]  # longest first, ties in dataset order
    assert sampler.order.tolist() == list(sampler) and len(sampler) == 6
    assert list(LengthSortedSampler(torch.tensor(lengths))) == list(sampler)


def test_restore_order_round_trip_tensor_and_ndarray() -> None:
    lengths = _lengths(50, seed=4)
    sampler = LengthSortedSampler(lengths)
    truth = np.arange(50) * 10.0
    loader_order = truth[list(sampler)]
    assert not np.array_equal(loader_order, truth)
    assert np.array_equal(restore_order(loader_order, sampler), truth)

    logits = torch.randn(50, 3)
    restored = restore_order(logits[torch.as_tensor(sampler.order)], sampler)
    assert isinstance(restored, torch.Tensor) and torch.equal(restored, logits)


def test_restore_order_through_a_dataloader() -> None:
    lengths = _lengths(37, seed=5)
    sampler = LengthSortedSampler(lengths)
    loader = DataLoader(torch.arange(37), sampler=sampler, batch_size=8)
    collected = torch.cat(list(loader))
    assert torch.equal(restore_order(collected, sampler), torch.arange(37))


def test_restore_order_without_order_and_length_mismatch() -> None:
    values = np.arange(5)
    assert restore_order(values, EpochShuffleSampler(5)) is values
    assert restore_order(values, None) is values
    with pytest.raises(DataError, match=r"got 4 rows but the sampler ordered 5 items"):
        restore_order(np.arange(4), LengthSortedSampler([1, 2, 3, 4, 5]))


def test_dataloader_with_batch_sampler() -> None:
    lengths = _lengths(103, seed=6)
    dataset = [torch.full((int(n),), i) for i, n in enumerate(lengths)]

    def collate(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        padded = torch.nn.utils.rnn.pad_sequence(items, batch_first=True, padding_value=-1)
        return padded, torch.tensor([int(x[0]) for x in items])

    sampler = LengthGroupedBatchSampler(lengths, batch_size=10, seed=1, mega_batch_mult=3)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    assert len(loader) == 11
    batches = list(loader)
    ids = torch.cat([ids for _, ids in batches])
    assert sorted(ids.tolist()) == list(range(103))
    assert [ids.tolist() for _, ids in batches] == list(sampler)
    assert batches[0][0].shape[1] == int(lengths.max())
