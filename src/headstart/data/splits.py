"""Seeded, stratified row selection in plain numpy (no scikit-learn at runtime).

Stratification keeps validation metrics meaningful on small or imbalanced data: a random 10% of a file
with a 3% minority class can easily hold none of it, and then AUC is undefined. Every class with at
least two rows keeps at least one row on each side whenever the requested size allows it, and a class
with a single row stays in the training side, so the label map built from training data covers it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["stratified_kfold", "stratified_split", "stratified_subset"]


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into (rest_idx, split_idx), both sorted; the split gets ``round(fraction * n)`` rows.

    Class proportions are kept (largest-remainder rounding per class); the result depends only on the
    labels, the fraction and the seed.
    """
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    codes = _class_codes(labels)
    k = int(np.floor(float(fraction) * len(codes) + 0.5))
    return _split_by_count(codes, k, seed)


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` rows with the class proportions of ``labels``; all rows when ``n >= len``.

    Implemented as "split off the rows to drop", so single-row classes are kept and every class with two
    or more rows keeps at least one row whenever ``n`` is at least the number of classes.
    """
    if int(n) < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    codes = _class_codes(labels)
    if int(n) >= len(codes):
        return np.arange(len(codes), dtype=np.int64)
    keep, _drop = _split_by_count(codes, len(codes) - int(n), seed)
    return keep


def stratified_kfold(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold id (0..k-1) of every row: each class dealt round-robin over the folds after a seeded shuffle,
    so fold sizes differ by at most one row per class and every fold keeps the class proportions."""
    codes = _class_codes(labels)
    if int(k) < 2:
        raise ValueError(f"k must be >= 2, got {k!r}")
    rng = np.random.default_rng(seed)
    folds = np.empty(len(codes), dtype=np.int64)
    offset = 0
    for cls in range(int(codes.max()) + 1 if len(codes) else 0):
        members = rng.permutation(np.flatnonzero(codes == cls))
        folds[members] = (np.arange(len(members)) + offset) % k
        offset += len(members)  # the next class starts where this one stopped: folds stay balanced
    return folds


def _class_codes(labels: np.ndarray) -> np.ndarray:
    """Labels of any type to class codes 0..C-1 (sorted classes when they are comparable)."""
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {array.shape}")
    try:
        _, codes = np.unique(array, return_inverse=True)
    except TypeError:  # mixed types (e.g. 1 and "a") cannot be sorted; first-appearance order is stable too
        codes, _ = pd.factorize(pd.Series(array, dtype=object))
    return np.asarray(codes, dtype=np.int64).reshape(-1)


def _split_by_count(codes: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Move exactly ``k`` rows (0 <= k <= n) to the split side, class by class."""
    rng = np.random.default_rng(seed)
    n_classes = int(codes.max()) + 1 if len(codes) else 0
    counts = np.bincount(codes, minlength=n_classes)
    alloc = _allocate(counts, k, rng)
    split_parts = []
    for cls in range(n_classes):
        members = np.flatnonzero(codes == cls)
        split_parts.append(rng.permutation(members)[: alloc[cls]])
    split = np.sort(np.concatenate(split_parts)) if split_parts else np.zeros(0, dtype=np.int64)
    is_split = np.zeros(len(codes), dtype=bool)
    is_split[split] = True
    return np.flatnonzero(~is_split).astype(np.int64), split.astype(np.int64)


def _allocate(counts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Rows per class for the split side: proportional, summing to ``k``, within per-class bounds.

    Preferred bounds keep one row of each class with >= 2 rows on both sides and single-row classes on the
    rest side; a bound is relaxed only when ``k`` cannot be met otherwise.
    """
    n = int(counts.sum())
    if n == 0:
        return counts.copy()
    quota = k * counts / n
    lo = (counts >= 2).astype(np.int64)
    hi = np.where(counts >= 2, counts - 1, 0).astype(np.int64)
    if k < lo.sum():
        lo = np.zeros_like(counts)
    if k > hi.sum():
        hi = counts.astype(np.int64)
    alloc = np.clip(np.floor(quota).astype(np.int64), lo, hi)
    jitter = rng.random(len(counts))  # seeded tie-break between classes with equal remainders
    while alloc.sum() < k:
        gap = np.where(alloc < hi, quota - alloc, -np.inf)
        alloc[np.lexsort((jitter, gap))[-1]] += 1
    while alloc.sum() > k:
        excess = np.where(alloc > lo, alloc - quota, -np.inf)
        alloc[np.lexsort((jitter, excess))[-1]] -= 1
    return alloc
