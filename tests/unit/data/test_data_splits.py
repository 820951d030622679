from __future__ import annotations

import numpy as np
import pytest

from headstart.data.splits import stratified_split, stratified_subset

LABELS = np.array([0] * 80 + [1] * 15 + [2] * 4 + [3] * 1)


def test_split_sizes_proportions_and_partition() -> None:
    rest, split = stratified_split(LABELS, 0.2, seed=0)
    assert len(split) == 20 and len(rest) == 80
    assert np.array_equal(np.sort(np.concatenate([rest, split])), np.arange(100))
    assert np.all(np.diff(rest) > 0) and np.all(np.diff(split) > 0)
    assert np.bincount(LABELS[split], minlength=4).tolist() == [16, 3, 1, 0]
    assert rest.dtype == np.int64 and split.dtype == np.int64


def test_split_is_deterministic_per_seed() -> None:
    first = stratified_split(LABELS, 0.2, seed=7)
    again = stratified_split(LABELS, 0.2, seed=7)
    other = stratified_split(LABELS, 0.2, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[1], other[1])


def test_small_split_keeps_rare_classes_on_both_sides() -> None:
    rest, split = stratified_split(LABELS, 0.05, seed=1)
    assert len(split) == 5
    split_counts = np.bincount(LABELS[split], minlength=4)
    rest_counts = np.bincount(LABELS[rest], minlength=4)
    assert split_counts[:3].min() >= 1 and rest_counts[:3].min() >= 1
    assert rest_counts[3] == 1  # the single-row class stays on the training side


def test_large_fraction_keeps_one_row_per_class_in_rest() -> None:
    rest, split = stratified_split(np.array([0, 0, 1, 1, 1]), 0.6, seed=0)
    assert set(np.array([0, 0, 1, 1, 1])[rest].tolist()) == {0, 1}
    assert len(rest) == 2 and len(split) == 3


def test_string_labels_and_edge_fractions() -> None:
    labels = np.array(["pos", "neg"] * 10)
    _rest, split = stratified_split(labels, 0.5, seed=3)
    assert sorted(labels[split].tolist()) == ["neg"] * 5 + ["pos"] * 5
    assert len(stratified_split(labels, 0.0, seed=3)[1]) == 0
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(labels, 1.5, seed=3)


def test_subset_keeps_proportions_and_every_class() -> None:
    subset = stratified_subset(LABELS, 20, seed=0)
    assert len(subset) == 20 and np.all(np.diff(subset) > 0)
    counts = np.bincount(LABELS[subset], minlength=4)
    assert counts.min() >= 1
    assert counts[0] >= 13  # roughly 80% of the subset


def test_subset_all_rows_and_determinism() -> None:
    assert np.array_equal(stratified_subset(LABELS, 100, seed=0), np.arange(100))
    assert np.array_equal(stratified_subset(LABELS, 500, seed=0), np.arange(100))
    assert np.array_equal(stratified_subset(LABELS, 30, seed=4), stratified_subset(LABELS, 30, seed=4))
    assert len(stratified_subset(LABELS, 2, seed=4)) == 2
