"""Image data: MNIST-format idx(.gz), ``.npz`` (singles and pairs), Parquet, folders of image files.

Everything becomes ``uint8``/float arrays ``[N, C, H, W]`` plus integer labels, so the readers are small
and the dataset does the rest: scaling to [0, 1], per-channel normalisation (statistics from the
*training* split, recorded in the run) and seeded augmentation. Augmentation draws from a generator keyed
by ``(seed, epoch, index)``, never from global state, so it is identical in fresh and resumed runs and
whatever the number of loader workers; the sampler passes ``(index, epoch)`` keys (``EpochShuffleSampler
(..., with_epoch=True)``).
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from headstart.data.augment import Augment
from headstart.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "Augment", "ImageArrays", "ImageDataset", "read_idx", "read_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


@dataclass
class ImageArrays:
    """Images ``x [N, C, H, W]`` (or pairs ``xa``/``xb``) and labels ``y [N]`` as read from disk."""

    x: np.ndarray | None
    y: np.ndarray | None
    xb: np.ndarray | None = None  # second side of pairs (x is then the first side)

    @property
    def is_pairs(self) -> bool:
        return self.xb is not None

    def __len__(self) -> int:
        return 0 if self.x is None else len(self.x)


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (MNIST format, optionally gzipped) as an array of its declared shape and type."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"Cannot read idx file '{path}': {exc}. Check the path, or copy the file again "
                        f"(a truncated download?).") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"'{path}' is not an idx file (MNIST format): its first bytes are {raw[:4].hex()}, "
                        f"expected 0000 + a type code (08 = ubyte) + the number of dimensions.")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"idx file '{path}' declares shape {shape} ({expected} bytes) but holds {len(raw)} "
                        f"bytes: the file is truncated or not what its header says. Copy it again.")
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(shape).astype(dtype.newbyteorder("="))


def _as_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:  # [N, H, W] grayscale
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):  # [N, H, W, C]
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.ndim == 4:
        return x
    raise DataError(f"{where}: images must be [N, H, W], [N, H, W, C] or [N, C, H, W]; got shape {x.shape}.")


def _idx_labels_for(images: Path) -> Path | None:
    name = images.name
    for a, b in (("images-idx3", "labels-idx1"), ("images", "labels")):
        if a in name:
            candidate = images.with_name(name.replace(a, b))
            if candidate.exists():
                return candidate
    return None


def read_images(path: str | Path, *, labels: str | Path | None = None, image_column: str = "image",
                label_column: str = "label", where: str = "data.train") -> ImageArrays:
    """Read images (+ labels) from an idx pair, ``.npz``, Parquet, or a folder with one subfolder per class."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{where} '{path}' does not exist (resolved to {path.resolve()}). Check the path.")
    name = path.name.lower()
    if path.is_dir():
        return _read_folder(path, where)
    if "idx" in name or name.endswith("-ubyte") or name.endswith("-ubyte.gz"):
        x = _as_nchw(read_idx(path), where)
        label_path = Path(labels) if labels is not None else _idx_labels_for(path)
        y = read_idx(label_path).astype(np.int64) if label_path is not None else None
        if y is not None and len(y) != len(x):
            raise DataError(f"{where}: {len(x)} images in '{path.name}' but {len(y)} labels in '{label_path}'.")
        return ImageArrays(x, y)
    if name.endswith(".npz"):
        return _read_npz(path, where)
    if name.endswith((".parquet", ".pq")):
        return _read_parquet(path, image_column, label_column, where)
    raise DataError(f"{where} '{path}': unknown image data format. Use MNIST idx(.gz) files, .npz (x, y or "
                    f"xa, xb, y), Parquet (an image column of arrays or encoded bytes) or a folder of class "
                    f"subfolders of image files.")


def label_values(values: np.ndarray) -> np.ndarray:
    """Labels as stored: whole numbers as int64 (class ids saved as floats included), other numbers (regression
    targets, or NaN for a missing label, which the label map reports) and text as they are."""
    array = np.asarray(values)
    if array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.round(array)).all():
        return array.astype(np.int64)
    return array.astype(np.int64) if array.dtype.kind in "iub" else array


def _read_npz(path: Path, where: str) -> ImageArrays:
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        y = label_values(data["y"]) if "y" in keys else None
        if {"xa", "xb"} <= keys:
            xa, xb = _as_nchw(data["xa"], f"{where} xa"), _as_nchw(data["xb"], f"{where} xb")
            if xa.shape != xb.shape:
                raise DataError(f"{where} '{path}': xa {xa.shape} and xb {xb.shape} must have the same shape.")
            arrays = ImageArrays(xa, y, xb)
        elif "x" in keys:
            arrays = ImageArrays(_as_nchw(data["x"], where), y)
        else:
            raise DataError(f"{where} '{path}' holds arrays {sorted(keys)}; expected 'x' (+ 'y') for images or "
                            f"'xa', 'xb' (+ 'y') for pairs.")
    n = len(arrays.x)
    if y is not None and len(y) != n:
        raise DataError(f"{where} '{path}': {n} images but {len(y)} labels in 'y'.")
    return arrays


def _decode(blob: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as img:
            return np.asarray(img.convert("L") if img.mode in ("L", "1", "P", "I;16") else img.convert("RGB"))
    except Exception as exc:
        raise DataError(f"{where}: an image could not be decoded ({exc}).") from None


def _read_parquet(path: Path, image_column: str, label_column: str, where: str) -> ImageArrays:
    import pandas as pd

    from headstart.errors import did_you_mean

    frame = pd.read_parquet(path)
    if image_column not in frame.columns:
        raise DataError(f"{where} '{path}' has no column '{image_column}'.{did_you_mean(image_column, frame.columns)}"
                        f" Columns: {list(frame.columns)}. Set data.image_column.")
    cells = frame[image_column].tolist()
    if cells and isinstance(cells[0], dict) and "bytes" in cells[0]:  # Hugging Face datasets' Image feature
        cells = [c["bytes"] for c in cells]
    images = [_decode(c, where) if isinstance(c, bytes | bytearray) else np.asarray(c) for c in cells]
    images = [np.stack(list(i)) if i.dtype == object else i for i in images]  # nested lists of rows
    y = label_values(frame[label_column].to_numpy()) if label_column in frame.columns else None
    return ImageArrays(_stack(images, path, where), y)


def _read_folder(path: Path, where: str) -> ImageArrays:
    classes = sorted(d.name for d in path.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{where} '{path}' is a folder without class subfolders; expected <folder>/<class>/"
                        f"<image files>.")
    images, labels = [], []
    for k, cls in enumerate(classes):
        files = sorted(f for f in (path / cls).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            images.append(_decode(f.read_bytes(), f"{where} '{f}'"))
            labels.append(k)
    if not images:
        raise DataError(f"{where} '{path}': no image files ({', '.join(IMAGE_SUFFIXES)}) in its class folders.")
    return ImageArrays(_stack(images, path, where), np.asarray(labels, dtype=np.int64))


def _stack(images: list[np.ndarray], path: Path, where: str) -> np.ndarray:
    """Decoded images of one size as ``[N, C, H, W]``; differing sizes are an error naming them."""
    shapes = {i.shape for i in images}
    if len(shapes) != 1:
        raise DataError(f"{where} '{path}': images have different shapes {sorted(shapes)[:4]}; resize them to one "
                        f"size first.")
    return _as_nchw(np.stack(images), where)


class ImageDataset(Dataset):
    """``{"pixel_values": float [C, H, W], "labels": int}`` items (pairs: ``{"a": ..., "b": ...}``)."""

    def __init__(self, arrays: ImageArrays, mean: Sequence | None = None, std: Sequence | None = None,
                 augment: Augment | None = None, seed: int = 0) -> None:
        self.arrays = arrays
        x = arrays.x
        self.scale = 255.0 if x.dtype == np.uint8 else 1.0
        channels = x.shape[1]
        self.mean = np.asarray(mean if mean is not None else [0.0] * channels, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std if std is not None else [1.0] * channels, dtype=np.float32).reshape(-1, 1, 1)
        if self.mean.shape[0] != channels or self.std.shape[0] != channels or (self.std <= 0).any():
            raise DataError(f"Image normalisation needs {channels} mean and {channels} positive std values, got "
                            f"mean={list(self.mean.ravel())} std={list(self.std.ravel())}.")
        self.augment = augment if augment is not None and augment.active else None
        self.seed = int(seed)
        self.labels = arrays.y
        self.lengths = None  # no per-row sizes: the feature cache stores pooled rows for images
        # What decides the pixels the encoder sees besides the arrays (part of a feature-cache key).
        self.preprocessing = {"kind": "image", "scale": self.scale, "mean": self.mean.ravel().tolist(),
                              "std": self.std.ravel().tolist(), "pairs": arrays.is_pairs}

    def fingerprint(self) -> str:
        """Hash of the images (both sides of pairs): the data part of a feature-cache key. Augmented
        datasets draw new pixels every epoch, so they have no stable features to cache."""
        from headstart.cache.key import array_digest

        if self.augment is not None:
            raise ValueError("An augmented image dataset has no fixed inputs to cache; build it without augment.")
        return array_digest(self.arrays.x, self.arrays.xb)

    def __len__(self) -> int:
        return len(self.arrays.x)

    @staticmethod
    def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
        """Per-channel mean and std in [0, 1] units (computed on the training split only)."""
        scale = 255.0 if x.dtype == np.uint8 else 1.0
        flat = x.reshape(x.shape[0], x.shape[1], -1).astype(np.float64) / scale
        mean = flat.mean(axis=(0, 2))
        std = flat.std(axis=(0, 2))
        return mean.tolist(), np.where(std > 0, std, 1.0).tolist()

    def _image(self, x: np.ndarray, index: int, epoch: int | None, side: int) -> torch.Tensor:
        img = x[index]
        if self.augment is not None and epoch is not None:
            img = self.augment(img, np.random.default_rng((self.seed, epoch, index, side)))
        out = (img.astype(np.float32) / self.scale - self.mean) / self.std
        return torch.from_numpy(out)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), None)
        a = self.arrays
        item: dict[str, Any] = (
            {"a": self._image(a.x, index, epoch, 0), "b": self._image(a.xb, index, epoch, 1)} if a.is_pairs
            else {"pixel_values": self._image(a.x, index, epoch, 0)}
        )
        if self.labels is not None:
            item["labels"] = self.labels[index].item()  # int class index, or float number (regression)
        return item
