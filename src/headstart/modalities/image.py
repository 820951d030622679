"""Image classification (single images or pairs) from idx / npz / parquet / class folders, plain-torch ResNets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.errors import ConfigError, DataError
from headstart.modalities.base import Inputs, Modality, register_modality
from headstart.modalities.pairs import resolve_pair

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from headstart.backbones import Backbone
    from headstart.config import RunConfig

__all__ = ["ImageModality", "build_image_loaders", "resolve_image_settings"]


def resolve_image_settings(cfg: RunConfig, train: Any) -> None:
    """Fill what the images decide into the config (so the saved config.yaml rebuilds the run exactly):
    the backbone's input channels and the training split's per-channel mean / std."""
    from headstart.data.images import ImageDataset

    channels = int(train.x.shape[1])
    if cfg.backbone.type == "resnet":
        if cfg.backbone.in_channels is None:
            cfg.backbone.in_channels = channels
        elif cfg.backbone.in_channels != channels:
            raise ConfigError(f"backbone.in_channels is {cfg.backbone.in_channels} but the images of data.train "
                              f"have {channels} channel(s) (shape {tuple(train.x.shape[1:])}). Remove "
                              f"backbone.in_channels (it is read from the data) or convert the images.")
    if cfg.data.normalize and cfg.data.mean is None:
        mean, std = ImageDataset.channel_stats(train.x)
        cfg.data.mean, cfg.data.std = [round(v, 6) for v in mean], [round(v, 6) for v in std]


def build_image_loaders(cfg: RunConfig, splits: dict[str, Any]) -> dict[str, DataLoader]:
    """Image datasets per split (augmentation on train only, keyed on seed/epoch/row); default collation."""
    from torch.utils.data import DataLoader

    from headstart.data import EpochShuffleSampler
    from headstart.data.images import Augment, ImageDataset
    from headstart.experiments.build import loader_settings

    d = cfg.data
    mean, std = (d.mean, d.std) if d.normalize else (None, None)
    augment = Augment(**d.augment.model_dump()) if d.augment is not None else None
    common = loader_settings(cfg)
    out: dict[str, DataLoader] = {}
    for split, arrays in splits.items():
        if arrays is None:
            continue
        train = split == "train"
        dataset = ImageDataset(arrays, mean, std, augment=augment if train else None, seed=cfg.trainer.seed)
        if train:
            sampler = EpochShuffleSampler(len(dataset), cfg.trainer.seed, with_epoch=dataset.augment is not None)
            out[split] = DataLoader(dataset, batch_size=d.batch_size, sampler=sampler, **common)
        else:
            out[split] = DataLoader(dataset, batch_size=d.eval_batch_size, **common)
    return out


class ImageModality(Modality):
    """Rows are ``ImageArrays`` (x [N, C, H, W] or pairs xa / xb, y)."""

    name, task = "image", "image_classification"
    kinds = ("classification", "regression")
    baseline = "pixels_logreg"  # headstart.baselines: the classic row of compare / fit --baseline

    def load_splits(self, cfg: RunConfig, seed: int) -> Any:
        from headstart.data.image_splits import load_image_splits

        return load_image_splits(cfg.data, seed, regression=cfg.is_regression, standardize=cfg.loss.standardize)

    def settle(self, cfg: RunConfig, splits: Any) -> None:
        resolve_pair(cfg, splits.train.is_pairs, image=True)
        resolve_image_settings(cfg, splits.train)  # in_channels, mean/std -> the saved config

    def labels(self, rows: Any) -> np.ndarray:
        return np.asarray(rows.y)

    def take(self, rows: Any, idx: np.ndarray) -> Any:
        from headstart.data.image_splits import take_rows

        return take_rows(rows, idx)

    def loaders(self, cfg: RunConfig, parts: dict[str, Any], backbone: Backbone) -> dict[str, DataLoader]:
        return build_image_loaders(cfg, parts)

    def cache_blocker(self, cfg: RunConfig, loaders: dict[str, DataLoader]) -> str | None:
        if getattr(loaders["train"].dataset, "augment", None) is not None:
            return "data.augment draws new training images every epoch, so no encoder output repeats"
        return None

    def export_record(self, cfg: RunConfig) -> dict[str, Any]:
        return {"normalization": {"mean": cfg.data.mean, "std": cfg.data.std}}

    def read_inputs(self, loaded: Any, path: str | Path, require_labels: bool) -> Inputs:
        """Images read like the training data and normalised with the run's training-split statistics."""
        from torch.utils.data import DataLoader

        from headstart.data.images import ImageDataset, read_images
        from headstart.experiments.build import loader_settings

        d = loaded.cfg.data
        arrays = read_images(path, image_column=d.image_column, label_column=d.label_column, where="--data")
        pairs = loaded.cfg.backbone.pair == "siamese"
        channels = loaded.cfg.backbone.in_channels or arrays.x.shape[1]
        if arrays.is_pairs != pairs or arrays.x.shape[1] != channels:
            def kind(is_pairs: bool) -> str:
                return "image pairs (xa, xb)" if is_pairs else "single images"

            raise DataError(f"--data '{path}' holds {kind(arrays.is_pairs)} with {arrays.x.shape[1]} channel(s), "
                            f"but the run was trained on {kind(pairs)} with {channels} channel(s); give data shaped "
                            f"like its training data ({loaded.cfg.data.train}).")
        labels = None
        if arrays.y is not None:
            labels = np.asarray(loaded.label_map.encode(arrays.y.tolist(), f"--data ({path})"))
            arrays = replace(arrays, y=labels)
        elif require_labels:
            raise DataError(f"--data '{path}' has no labels, so it cannot be scored: idx images need their labels "
                            f"file beside them, .npz a 'y' array, Parquet a '{d.label_column}' column. Use `predict` "
                            f"for unlabelled images.")
        mean, std = (d.mean, d.std) if d.normalize else (None, None)
        loader = DataLoader(ImageDataset(arrays, mean, std), batch_size=d.eval_batch_size,
                            **loader_settings(loaded.cfg))
        return Inputs(loader, np.arange(len(arrays.x)), labels)


register_modality(ImageModality())
