"""Builders: validated config -> plain constructor arguments (backbone, module, loaders, trainer)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from headstart.backbones import Backbone
from headstart.config import RunConfig
from headstart.strategies import LoraSpec, Strategy
from headstart.train.checkpoint import load_encoder_weights
from headstart.train.module import FinetuneModule

__all__ = [
    "EpochSeed",
    "build_cached_loaders",
    "build_configured_backbone",
    "build_model",
    "build_strategy",
    "build_trainer_kwargs",
    "configure_threads",
    "loader_settings",
    "make_loader",
    "resolve_device",
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


def configure_threads(threads: int | None, local_processes: int = 1) -> int:
    """Intra-op threads: the configured count, else the cores this process may use (not the host's), shared
    among the training processes of this machine (``local_processes``)."""
    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores // max(1, local_processes))
    torch.set_num_threads(max(1, int(threads)))
    return torch.get_num_threads()


def build_strategy(cfg: RunConfig) -> Strategy:
    s = cfg.strategy
    lora = LoraSpec(r=s.lora.r, alpha=s.lora.alpha, dropout=s.lora.dropout,
                    target_modules=tuple(s.lora.target_modules) if s.lora.target_modules else None)
    return Strategy(name=s.name, freeze=s.freeze, train_last=s.train_last, freeze_epochs=s.freeze_epochs,
                    unfreeze_every=s.unfreeze_every, lora=lora)


def build_configured_backbone(cfg: RunConfig, data_state: dict[str, Any] | None, verbose: bool = True) -> Backbone:
    """The encoder of ``cfg`` as its modality builds it (``data_state``: what the modality needs from the data,
    e.g. vocabularies), with ``backbone.checkpoint``'s weights loaded when set."""
    from headstart.modalities import get_modality

    backbone = get_modality(cfg.task).build_backbone(cfg, data_state)
    if cfg.backbone.checkpoint:
        report = load_encoder_weights(backbone, cfg.backbone.checkpoint, strict=False)
        if verbose:
            print(report.format())
    return backbone


def build_model(
    cfg: RunConfig,
    n_classes: int,
    class_names: list[str] | None = None,
    train_labels: np.ndarray | None = None,
    backbone: Backbone | None = None,
    verbose: bool = True,
    target: dict[str, Any] | None = None,
) -> FinetuneModule:
    """The FinetuneModule a config describes (backbone weights from backbone.checkpoint if set); ``target``:
    the label map's ``spec()`` (None: classes; else regression / multi-task, see headstart.train.targets)."""
    if backbone is None:
        backbone = build_configured_backbone(cfg, None, verbose=verbose)
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
        huber_delta=loss.huber_delta, train_labels=train_labels, class_names=class_names, target=target,
        gradient_checkpointing=cfg.trainer.gradient_checkpointing,
    )


def loader_settings(cfg: RunConfig) -> dict[str, Any]:
    """Worker processes, and pinned host memory when batches go to a GPU (faster, asynchronous copies)."""
    d = cfg.data
    return dict(num_workers=d.num_workers, persistent_workers=d.num_workers > 0,
                pin_memory=resolve_device(cfg.trainer.accelerator).type == "cuda")


def make_loader(cfg: RunConfig, dataset: Any, collate: Any, train: bool) -> DataLoader:
    """Training: a seeded shuffle (length-grouped when the dataset has lengths and data.group_by_length);
    evaluation: longest first, so eval batches carry little padding (``restore_order`` undoes it).

    Raw and cached datasets of the same split get the same batches, which keeps cached runs exact.
    """
    from headstart.data import EpochShuffleSampler, LengthGroupedBatchSampler, LengthSortedSampler

    d = cfg.data
    lengths = getattr(dataset, "lengths", None)
    common = dict(collate_fn=collate, **loader_settings(cfg))
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
        devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        # Loaders are sharded by headstart (global batches split per rank, see headstart.train.distributed):
        # Lightning's DistributedSampler would reshuffle them and ignore the length grouping.
        use_distributed_sampler=False, gradient_clip_val=o.grad_clip, accumulate_grad_batches=o.accumulate,
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
        if batch_idx == 0:  # each rank its own dropout draws (rank 0: as in one process)
            pl.seed_everything(self.seed + 1_000 * (trainer.current_epoch + 1) + 7_919 * trainer.global_rank,
                               workers=True, verbose=False)
