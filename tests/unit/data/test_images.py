"""Image readers (idx, npz, Parquet, folders) and the seeded, resume-safe augmentation."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from headstart.data import EpochShuffleSampler
from headstart.data.images import Augment, ImageArrays, ImageDataset, read_idx, read_images
from headstart.errors import DataError


def _write_idx(path: Path, arr: np.ndarray) -> Path:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def test_idx_pair_round_trip_and_truncation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 1, 0], dtype=np.uint8)
    images = _write_idx(tmp_path / "train-images-idx3-ubyte.gz", x)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y)
    arrays = read_images(images)
    assert arrays.x.shape == (5, 1, 4, 3) and np.array_equal(arrays.x[:, 0], x)
    assert arrays.y.tolist() == y.tolist()
    cut = tmp_path / "cut-images-idx3-ubyte"
    cut.write_bytes(gzip.decompress(images.read_bytes())[:-7])
    with pytest.raises(DataError, match=r"declares shape \(5, 4, 3\).*truncated"):
        read_idx(cut)
    bad = tmp_path / "bad-images-idx3-ubyte"
    bad.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(DataError, match="is not an idx file"):
        read_idx(bad)


def test_npz_singles_pairs_and_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "s.npz", x=rng.random((4, 6, 6, 3)).astype(np.float32), y=np.arange(4))
    single = read_images(tmp_path / "s.npz")
    assert single.x.shape == (4, 3, 6, 6) and not single.is_pairs  # NHWC -> NCHW
    np.savez(tmp_path / "p.npz", xa=np.zeros((3, 5, 5)), xb=np.ones((3, 5, 5)), y=[0, 1, 1])
    pairs = read_images(tmp_path / "p.npz")
    assert pairs.is_pairs and pairs.x.shape == pairs.xb.shape == (3, 1, 5, 5)
    np.savez(tmp_path / "w.npz", images=np.zeros((2, 3, 3)))
    with pytest.raises(DataError, match=r"holds arrays \['images'\]; expected 'x'"):
        read_images(tmp_path / "w.npz")
    np.savez(tmp_path / "n.npz", x=np.zeros((2, 3, 3)), y=[0, 1, 1])
    with pytest.raises(DataError, match="2 images but 3 labels"):
        read_images(tmp_path / "n.npz")


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_folder_and_parquet(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, size=(4, 6, 5), dtype=np.uint8)
    for i, cls in enumerate(["cat", "cat", "dog", "dog"]):
        (tmp_path / "f" / cls).mkdir(parents=True, exist_ok=True)
        (tmp_path / "f" / cls / f"{i}.png").write_bytes(_png(imgs[i]))
    folder = read_images(tmp_path / "f")
    assert folder.x.shape == (4, 1, 6, 5) and folder.y.tolist() == [0, 0, 1, 1]
    assert np.array_equal(folder.x[:, 0], imgs)
    pd.DataFrame({"image": [_png(i) for i in imgs], "label": [3, 1, 0, 2]}).to_parquet(tmp_path / "b.parquet")
    encoded = read_images(tmp_path / "b.parquet")
    assert np.array_equal(encoded.x[:, 0], imgs) and encoded.y.tolist() == [3, 1, 0, 2]
    pd.DataFrame({"pixels": [i.tolist() for i in imgs], "label": [0, 1, 0, 1]}).to_parquet(tmp_path / "a.parquet")
    assert np.array_equal(read_images(tmp_path / "a.parquet", image_column="pixels").x[:, 0], imgs)
    with pytest.raises(DataError, match=r"has no column 'img'. Did you mean 'image'"):
        read_images(tmp_path / "b.parquet", image_column="img")


def test_normalisation_and_seeded_augmentation() -> None:
    x = np.arange(2 * 1 * 8 * 8, dtype=np.uint8).reshape(2, 1, 8, 8)
    arrays = ImageArrays(x, np.array([0, 1]))
    mean, std = ImageDataset.channel_stats(x)
    plain = ImageDataset(arrays, mean, std)
    item = plain[1]
    expected = (x[1].astype(np.float32) / 255.0 - mean[0]) / std[0]
    np.testing.assert_allclose(item["pixel_values"].numpy(), expected, rtol=1e-6)
    assert item["labels"] == 1
    aug = ImageDataset(arrays, mean, std, augment=Augment(shift=2), seed=7)
    torch.testing.assert_close(aug[1]["pixel_values"], item["pixel_values"])  # no epoch key: no augmentation
    e0, e0_again = aug[(1, 0)]["pixel_values"], aug[(1, 0)]["pixel_values"]
    torch.testing.assert_close(e0, e0_again)  # keyed on (seed, epoch, index): resume-safe
    assert e0.shape == item["pixel_values"].shape
    draws = {aug[(1, e)]["pixel_values"].numpy().tobytes() for e in range(8)}
    assert len(draws) > 1  # epochs differ
    sampler = EpochShuffleSampler(2, seed=3, with_epoch=True)
    sampler.set_epoch(4)
    assert sorted(sampler) == [(0, 4), (1, 4)]


def test_pairs_dataset_items() -> None:
    arrays = ImageArrays(np.zeros((3, 1, 4, 4), np.uint8), np.array([1, 0, 1]), np.full((3, 1, 4, 4), 255, np.uint8))
    item = ImageDataset(arrays)[2]
    assert set(item) == {"a", "b", "labels"} and float(item["b"].max()) == 1.0
