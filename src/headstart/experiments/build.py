"""Builders: validated config -> plain constructor arguments (backbone, module, loaders, trainer)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from headstart.backbones import Backbone, build_backbone
from headstart.config import RunConfig
from headstart.strategies import LoraSpec, Strategy
from headstart.train.checkpoint import load_encoder_weights
from headstart.train.module import FinetuneModule

__all__ = [
    "EpochSeed",
    "build_cached_loaders",
    "build_image_loaders",
    "build_model",
    "build_strategy",
    "build_text_loaders",
    "build_trainer_kwargs",
    "configure_threads",
    "make_loader",
    "resolve_device",
    "resolve_image_settings",
    "resolve_pair",
    "resolve_precision",
    "seed_everything",
]


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """``auto``: bf16-mixed on CUDA with bf16, fp16-mixed on older CUDA, fp32 on CPU.

    On CPU, fp32 even where the CPU reports bf16 (measured 2-4x slower on our CI CPUs); pass
    ``bf16-mixed`` explicitly to try it.
    """
    if precision == "32":
        return "32-true"
    if precision != "auto":
        return precision
    if accelerator != "cpu" and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def configure_threads(threads: int | None) -> int:
    """Intra-op threads: the configured count, else the cores this process may use (not the host's)."""
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, int(threads)))
    return torch.get_num_threads()


def build_strategy(cfg: RunConfig) -> Strategy:
    s = cfg.strategy
    lora = LoraSpec(r=s.lora.r, alpha=s.lora.alpha, dropout=s.lora.dropout,
                    target_modules=tuple(s.lora.target_modules) if s.lora.target_modules else None)
    return Strategy(name=s.name, freeze=s.freeze, train_last=s.train_last, freeze_epochs=s.freeze_epochs,
                    unfreeze_every=s.unfreeze_every, lora=lora)


def build_model(
    cfg: RunConfig,
    n_classes: int,
    class_names: list[str] | None = None,
    train_labels: np.ndarray | None = None,
    backbone: Backbone | None = None,
    verbose: bool = True,
) -> FinetuneModule:
    """The FinetuneModule a config describes (backbone weights from backbone.checkpoint if set)."""
    if backbone is None:
        backbone = build_backbone(cfg.backbone)
        if cfg.backbone.checkpoint:
            report = load_encoder_weights(backbone, cfg.backbone.checkpoint, strict=False)
            if verbose:
                print(report.format())
    o, h, loss = cfg.optim, cfg.head, cfg.loss
    return FinetuneModule(
        backbone, n_classes, head_hidden_dims=h.hidden_dims, dropout=h.dropout, activation=h.activation,
        head_type=h.type, margin_scale=h.scale, margin=h.margin, margin_lr=o.margin_lr,
        embedding_metrics=bool(cfg.embedding_metrics),
        strategy=build_strategy(cfg), lr=o.lr, encoder_lr=o.encoder_lr, encoder_lr_ratio=o.encoder_lr_ratio,
        layer_decay=o.layer_decay, weight_decay=o.weight_decay, optimizer_type=o.optimizer, betas=o.betas,
        momentum=o.momentum, scheduler_type=o.scheduler, warmup_epochs=o.warmup_epochs,
        warmup_steps=o.warmup_steps, min_lr_ratio=o.min_lr_ratio, plateau_factor=o.plateau_factor,
        plateau_patience=o.plateau_patience, plateau_monitor=o.plateau_monitor, loss=loss.type,
        class_weights=loss.class_weights, label_smoothing=loss.label_smoothing, focal_gamma=loss.focal_gamma,
        train_labels=train_labels, class_names=class_names,
    )


def build_text_loaders(cfg: RunConfig, frames: dict[str, Any], tokenizer: Any) -> dict[str, DataLoader]:
    """Tokenize each split once; dynamic padding per batch; seeded length-grouped training batches."""
    from headstart.data import TextClassificationDataset, TextCollator

    collate = TextCollator(pad_token_id=tokenizer.pad_token_id or 0)
    return {
        split: make_loader(cfg, TextClassificationDataset(frame, tokenizer, cfg.data.max_length,
                                                          siamese=cfg.backbone.pair == "siamese"),
                           collate, train=split == "train")
        for split, frame in frames.items() if frame is not None
    }


def resolve_pair(cfg: RunConfig, pairs: bool, image: bool) -> None:
    """Settle ``backbone.pair`` from the data (auto: cross-encoder for text pairs, Siamese for image pairs)
    and reject what cannot work, before any model is built."""
    from headstart.errors import ConfigError

    b = cfg.backbone
    if not pairs:
        if b.pair == "siamese":
            where = "an .npz with 'xa', 'xb' (and 'y')" if image else "data.text_pair_column (the second text)"
            raise ConfigError(f"backbone.pair is 'siamese' but data.train holds single inputs, not pairs. Give pairs "
                              f"({where}) or remove backbone.pair.")
        return
    if image and b.pair == "cross":
        raise ConfigError("backbone.pair is 'cross' but a cross-encoder reads both texts as one token sequence; image "
                          "pairs need backbone.pair: siamese (one shared ResNet per side + backbone.fusion).")
    if b.pair == "auto":
        b.pair = "siamese" if image else "cross"


def resolve_image_settings(cfg: RunConfig, train: Any) -> None:
    """Fill what the images decide into the config (so the saved config.yaml rebuilds the run exactly):
    the backbone's input channels and the training split's per-channel mean / std."""
    from headstart.data.images import ImageDataset
    from headstart.errors import ConfigError

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
    from headstart.data import EpochShuffleSampler
    from headstart.data.images import Augment, ImageDataset

    d = cfg.data
    mean, std = (d.mean, d.std) if d.normalize else (None, None)
    augment = Augment(**d.augment.model_dump()) if d.augment is not None else None
    common = dict(num_workers=d.num_workers, persistent_workers=d.num_workers > 0)
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


def make_loader(cfg: RunConfig, dataset: Any, collate: Any, train: bool) -> DataLoader:
    """Training: a seeded shuffle (length-grouped when the dataset has lengths and data.group_by_length);
    evaluation: longest first, so eval batches carry little padding (``restore_order`` undoes it).

    Raw and cached datasets of the same split get the same batches, which keeps cached runs exact.
    """
    from headstart.data import EpochShuffleSampler, LengthGroupedBatchSampler, LengthSortedSampler

    d = cfg.data
    lengths = getattr(dataset, "lengths", None)
    common = dict(collate_fn=collate, num_workers=d.num_workers, persistent_workers=d.num_workers > 0)
    if not train:
        sampler = LengthSortedSampler(lengths) if lengths is not None else None
        return DataLoader(dataset, batch_size=d.eval_batch_size, sampler=sampler, **common)
    if d.group_by_length and lengths is not None:
        batches = LengthGroupedBatchSampler(lengths, d.batch_size, seed=cfg.trainer.seed)
        return DataLoader(dataset, batch_sampler=batches, **common)
    sampler = EpochShuffleSampler(len(dataset), cfg.trainer.seed)
    return DataLoader(dataset, batch_size=d.batch_size, sampler=sampler, **common)


def resolve_device(accelerator: str) -> torch.device:
    """Where the trainer will run (the feature cache is computed there too)."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def build_cached_loaders(
    cfg: RunConfig, model: FinetuneModule, loaders: dict[str, DataLoader], plan: Any, precision: str
) -> tuple[dict[str, DataLoader], dict[str, Any]]:
    """Loaders over cache entries of every split (looked up by content key, built when missing)."""
    from headstart.cache import CachedCollator, CachedFeatureDataset, FeatureCache, cached_features

    cache = FeatureCache(cfg.cache.dir)
    device = resolve_device(cfg.trainer.accelerator)
    out: dict[str, DataLoader] = {}
    entries: dict[str, Any] = {}
    for split, loader in loaders.items():
        raw = loader.dataset
        entry, facts = cached_features(
            cache, model.backbone, raw, loader.collate_fn, plan, batch_size=cfg.data.eval_batch_size,
            precision=precision, dtype=cfg.cache.dtype, device=device,
        )
        entries[split] = facts
        dataset = CachedFeatureDataset(entry, raw.labels, raw.lengths)
        out[split] = make_loader(cfg, dataset, CachedCollator(plan), train=split == "train")
    info = {"used": True, "plan": plan.describe(), "cut": plan.cut, "kind": plan.kind, "dir": str(cache.root),
            "dtype": cfg.cache.dtype, "entries": entries}
    return out, info


def build_trainer_kwargs(cfg: RunConfig) -> dict[str, Any]:
    t, o = cfg.trainer, cfg.optim
    kwargs: dict[str, Any] = dict(
        max_epochs=t.epochs, precision=resolve_precision(t.precision, t.accelerator), accelerator=t.accelerator,
        devices=t.devices, gradient_clip_val=o.grad_clip, accumulate_grad_batches=o.accumulate,
        deterministic=t.deterministic, log_every_n_steps=t.log_every_n_steps, num_sanity_val_steps=0,
        enable_progress_bar=t.progress_bar, enable_model_summary=False,
    )
    if t.limit_train_batches is not None:
        kwargs["limit_train_batches"] = t.limit_train_batches
    if t.val_check_interval is not None:
        kwargs["val_check_interval"] = t.val_check_interval
    return kwargs


def seed_everything(seed: int) -> None:
    pl.seed_everything(seed, workers=True, verbose=False)


class EpochSeed(pl.Callback):
    """Reseed every RNG from the seed and the epoch at each epoch's first batch: dropout draws no longer
    depend on the process history, so a resumed run continues exactly like an uninterrupted one."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        # At the first batch, not at epoch start: Lightning creates the loader iterator (which draws
        # from the global RNG) at different points in fresh and resumed runs.
        if batch_idx == 0:
            pl.seed_everything(self.seed + 1_000 * (trainer.current_epoch + 1), workers=True, verbose=False)
