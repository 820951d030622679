"""Train / val / test image splits of a run: seeded stratified carving, subsets, and mixing in dataset A.

The same rules as text runs (``load_text_splits``): carved fractions are fractions of the whole training
file, taken with a stratified seeded split, so e.g. ``test_fraction: 0.2`` + ``val_fraction: 0.1`` +
``train_subset: 1000`` on a 10,000-image file gives 2,000 test, 1,000 val and 1,000 training images,
disjoint, the same for every run with that seed. ``mix`` appends ``ratio x n_train`` rows of another
dataset (A) to the *training* split only; validation and test stay pure B.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from headstart.data.images import ImageArrays, read_images
from headstart.data.labels import LabelMap
from headstart.data.splits import stratified_split, stratified_subset
from headstart.data.targets import RegressionTargets, strata
from headstart.errors import DataError

__all__ = ["ImageSplits", "load_image_splits", "take_rows"]


@dataclass
class ImageSplits:
    train: ImageArrays
    val: ImageArrays
    test: ImageArrays | None
    label_map: LabelMap | RegressionTargets
    mixed_rows: int = 0  # rows of dataset A appended to train (mix)
    train_rows_b: int = 0  # rows of B in train


def take_rows(arrays: ImageArrays, idx: np.ndarray) -> ImageArrays:
    """The rows ``idx`` of every array (labels, both pair sides)."""
    return replace(arrays, x=arrays.x[idx], y=None if arrays.y is None else arrays.y[idx],
                   xb=None if arrays.xb is None else arrays.xb[idx])


def _labelled(arrays: ImageArrays, where: str) -> ImageArrays:
    if arrays.y is None:
        raise DataError(f"{where} has no labels: idx images need their labels file beside them "
                        f"(…-labels-idx1-ubyte[.gz]), .npz a 'y' array, Parquet a label column, folders class "
                        f"subfolders.")
    return arrays


def _carve(pool: ImageArrays, fraction: float, n_file: int, seed: int, name: str,
           train: object, regression: bool = False) -> tuple[ImageArrays, ImageArrays]:
    count = int(np.floor(fraction * n_file + 0.5))
    key = f"data.{name}_fraction"
    if count == 0 or count >= len(pool.x):
        raise DataError(f"Carving the {name} split ({key}={fraction} of {n_file} images = {count}) from data.train "
                        f"({train}) leaves an empty split. Change {key}, or give a separate file in data.{name}.")
    rest, split = stratified_split(strata(pool.y, regression), count / len(pool.x), seed)
    return take_rows(pool, rest), take_rows(pool, split)


def load_image_splits(d: Any, seed: int, regression: bool = False, standardize: bool = True) -> ImageSplits:
    """Read and split the image data of a run from a validated ``DataConfig`` (``regression``: numeric labels,
    splits stratified by their quantile bins, the map holding the training split's mean / std)."""
    pool = _labelled(read_images(d.train, image_column=d.image_column, label_column=d.label_column,
                                 where="data.train"), f"data.train ({d.train})")
    n_file = len(pool.x)
    if d.test is not None:
        test: ImageArrays | None = _labelled(read_images(d.test, image_column=d.image_column,
                                                         label_column=d.label_column, where="data.test"),
                                             f"data.test ({d.test})")
    elif d.test_fraction > 0:
        pool, test = _carve(pool, d.test_fraction, n_file, seed, "test", d.train, regression)
    else:
        test = None
    if d.val is not None:
        val = _labelled(read_images(d.val, image_column=d.image_column, label_column=d.label_column,
                                    where="data.val"), f"data.val ({d.val})")
    else:
        pool, val = _carve(pool, d.val_fraction, n_file, seed + 1, "val", d.train, regression)
    if d.train_subset is not None and d.train_subset < len(pool.x):
        pool = take_rows(pool, stratified_subset(strata(pool.y, regression), d.train_subset, seed + 2))
    n_b, mixed = len(pool.x), 0
    if d.mix is not None:
        pool, mixed = _mix(pool, d.mix, d, seed + 3)
    label_map: LabelMap | RegressionTargets
    if regression:
        label_map = RegressionTargets.from_labels(pool.y.tolist(), d.label_column, f"data.train ({d.train})",
                                                  standardize=standardize)
    else:
        label_map = LabelMap.from_labels(pool.y.tolist(), f"data.train ({d.train})")
    if label_map.n_classes < 2 and not regression:
        raise DataError(f"data.train ({d.train}) has one class in its {len(pool.x)} training images; a classifier "
                        f"needs two or more.")
    encoded = {}
    for name, arrays in (("train", pool), ("val", val), ("test", test)):
        if arrays is None:
            continue
        codes = label_map.encode(arrays.y.tolist(), f"data.{name}")
        encoded[name] = replace(arrays, y=np.asarray(codes, dtype=np.float32 if regression else np.int64))
    return ImageSplits(encoded["train"], encoded["val"], encoded.get("test"), label_map, mixed, n_b)


def _mix(pool: ImageArrays, mix: Any, d: Any, seed: int) -> tuple[ImageArrays, int]:
    other = _labelled(read_images(mix.path, image_column=d.image_column, label_column=d.label_column,
                                  where="data.mix.path"), f"data.mix.path ({mix.path})")
    if other.x.shape[1:] != pool.x.shape[1:] or other.is_pairs != pool.is_pairs:
        raise DataError(f"data.mix.path ({mix.path}) holds images of shape {other.x.shape[1:]}, but data.train has "
                        f"{pool.x.shape[1:]}: mixed datasets must share the image shape (resize one of them).")
    unseen = sorted(set(np.unique(other.y).tolist()) - set(np.unique(pool.y).tolist()))
    if unseen:
        raise DataError(f"data.mix.path ({mix.path}) has labels {unseen[:10]} that data.train does not: mixing "
                        f"needs a shared label space (map A's labels to B's first).")
    n = min(len(other.x), max(1, round(mix.ratio * len(pool.x))))
    extra = take_rows(other, stratified_subset(other.y, n, seed))
    if pool.x.dtype != extra.x.dtype:  # e.g. uint8 0-255 and float 0-1: both to float in [0, 1]
        pool, extra = _unit_float(pool), _unit_float(extra)
    merged = ImageArrays(np.concatenate([pool.x, extra.x]), np.concatenate([pool.y, extra.y]),
                         None if pool.xb is None else np.concatenate([pool.xb, extra.xb]))
    return merged, n


def _unit_float(arrays: ImageArrays) -> ImageArrays:
    def conv(x: np.ndarray | None) -> np.ndarray | None:
        if x is None:
            return None
        return x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)

    return replace(arrays, x=conv(arrays.x), xb=conv(arrays.xb))
