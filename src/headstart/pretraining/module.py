"""The Lightning module every self-supervised objective trains: the encoder (and an objective's own head) and
the objective's loss, with fine-tuning's optimisation rules.

Only :meth:`ObjectiveModule.objective_step` differs between objectives (a batch -> its loss). The rest is shared:
one param group per encoder block (plus no-decay twins) built once, the one LR schedule writing every group's LR
(optim.encoder_lr, or lr x encoder_lr_ratio, with layer_decay; an objective's head gets optim.lr), epoch means
logged as ``train_loss`` / ``val_loss`` / ``val_<metric>``, and the schedule's state in checkpoints for an
exact resume. Every block trains: a strategy belongs to fine-tuning, not here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import Sampler

from headstart.backbones import Backbone, check_layer_map
from headstart.config import OptimConfig
from headstart.metrics.direction import lower_is_better
from headstart.optim import (
    GroupInfo,
    LRSchedule,
    PlateauState,
    build_optimizer,
    build_param_groups,
    is_no_decay,
)

__all__ = ["ObjectiveModule", "StepOutput", "WithEpoch", "to_device"]

log = logging.getLogger("headstart")


@dataclass
class StepOutput:
    """One batch's objective loss, the rows it counts for (its weight in the epoch mean) and extra metrics."""

    loss: torch.Tensor
    rows: int
    metrics: dict[str, float] = field(default_factory=dict)


class ObjectiveModule(pl.LightningModule):
    """The encoder (and an objective's own head, if any) trained by an objective's loss.

    Subclasses implement :meth:`objective_step`; this class owns the param groups, the LR schedule, the epoch
    means (``train_loss``, ``val_loss``, ``val_<metric>``) and exact resume. ``n_classes`` / ``class_names``
    say "no classifier" to the export record.
    """

    n_classes = 0
    class_names: tuple[str, ...] = ()

    def __init__(self, backbone: Backbone, optim: OptimConfig, head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.objective_head = head  # trained with the encoder, never exported (fit --pretrain loads encoders)
        self._blocks = backbone.blocks()
        check_layer_map(backbone, self._blocks)
        self.block_names = [name for name, _ in self._blocks]
        self.trainable_blocks = frozenset(range(len(self._blocks)))
        self.optim = optim
        self.schedule: LRSchedule | None = None
        self._pending_schedule: dict[str, Any] | None = None
        self._sums: dict[str, list[float]] = {"train": [0.0, 0.0], "val": [0.0, 0.0]}
        self._val_metrics: dict[str, list[float]] = {}
        self._train_logged = False

    def objective_step(self, batch: Any, train: bool) -> StepOutput | None:
        """The objective's loss on ``batch``; None skips a batch it cannot score (one entity, no pairs)."""
        raise NotImplementedError

    # ----- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        o = self.optim
        total = int(self.trainer.estimated_stepping_batches)
        groups, infos = _param_groups(self._blocks, self.objective_head, o.weight_decay)
        per_epoch = total / max(1, int(self.trainer.max_epochs or 1))
        warmup = o.warmup_steps if o.warmup_steps is not None else round(o.warmup_epochs * per_epoch)
        self.schedule = LRSchedule(
            infos=infos, lr=o.lr, n_blocks=len(self._blocks), total_steps=max(1, total), warmup_steps=int(warmup),
            scheduler=o.scheduler, encoder_lr=o.encoder_lr, encoder_lr_ratio=o.encoder_lr_ratio,
            layer_decay=o.layer_decay, min_lr_ratio=o.min_lr_ratio,
            plateau=PlateauState(factor=o.plateau_factor, patience=o.plateau_patience,
                                 mode="min" if lower_is_better(o.plateau_monitor) else "max"),
        )
        if self._pending_schedule is not None:
            self.schedule.load_state_dict(self._pending_schedule)
            self._pending_schedule = None
        scaled = str(self.trainer.precision).startswith("16")  # fp16 loss scaling: Lightning clips unfused only
        optimizer = build_optimizer(groups, o.optimizer, betas=o.betas, momentum=o.momentum,
                                    fused=False if scaled else None)
        self.schedule.apply(optimizer, self.trainer.global_step, self.trainable_blocks)
        return optimizer

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        assert self.schedule is not None
        self.schedule.apply(optimizer, self.trainer.global_step, self.trainable_blocks)

    # ----- steps ----------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._sums["train"], self._train_logged = [0.0, 0.0], False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        out = self.objective_step(batch, train=True)
        if out is not None:
            self._add("train", out)
            if self.global_step % self.trainer.log_every_n_steps == 0:
                self.log("train_loss_step", out.loss.detach(), on_step=True, on_epoch=False, batch_size=out.rows)
        if batch_idx + 1 == self.trainer.num_training_batches:  # callbacks read it in on_train_epoch_end
            self._log_train_mean()
        return None if out is None else out.loss

    def on_train_epoch_end(self) -> None:
        self._log_train_mean()

    def _log_train_mean(self) -> None:
        total, rows = self._sums["train"]
        if self._train_logged or not rows:
            return
        self.log("train_loss", total / rows, on_step=False, on_epoch=True, prog_bar=True, batch_size=1)
        self._train_logged = True

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        out = self.objective_step(batch, train=False)
        if out is not None:
            self._add("val", out)

    def on_validation_epoch_end(self) -> None:
        metrics = self._means("val")
        if not metrics or self.trainer.sanity_checking:
            return
        metrics = {f"val_{key}": value for key, value in metrics.items()}
        for key, value in metrics.items():
            self.log(key, value, prog_bar=key == "val_loss")
        if self.schedule is not None and self.schedule.on_validation(metrics.get(self.optim.plateau_monitor)):
            log.info("plateau: LR scale reduced to %.3g", self.schedule.plateau.scale)

    def _add(self, split: str, out: StepOutput) -> None:
        sums = self._sums[split]
        sums[0] += float(out.loss.detach()) * out.rows  # one host read per batch: the epoch mean needs it
        sums[1] += out.rows
        if split == "val":
            for key, value in out.metrics.items():
                acc = self._val_metrics.setdefault(key, [0.0, 0.0])
                acc[0] += value * out.rows
                acc[1] += out.rows

    def _means(self, split: str) -> dict[str, float]:
        total, rows = self._sums[split]
        extra, self._val_metrics = self._val_metrics, {}
        self._sums[split] = [0.0, 0.0]
        if not rows:
            return {}
        return {"loss": total / rows, **{k: s / n for k, (s, n) in extra.items() if n}}

    @torch.inference_mode()
    def evaluate(self, loader: Any) -> dict[str, float]:
        """The objective's mean loss and metrics on ``loader`` in eval mode (the best weights on val / test)."""
        was_training = self.training
        self.eval()
        try:
            for batch in loader:
                self.validation_step(to_device(batch, self.device), 0)
        finally:
            self.train(was_training)
        return self._means("val")

    # ----- checkpoints ------------------------------------------------------------------------------
    def weights_state(self) -> dict[str, torch.Tensor]:
        return dict(self.state_dict())

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """What the export holds: the encoder's weights and buffers (``backbone.`` keys) only."""
        return {k: v for k, v in self.state_dict().items() if k.startswith("backbone.")}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["headstart"] = {"schedule": None if self.schedule is None else self.schedule.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._pending_schedule = (checkpoint.get("headstart") or {}).get("schedule")


def _param_groups(blocks: list[tuple[str, nn.Module]], head: nn.Module | None,
                  weight_decay: float) -> tuple[list[dict[str, Any]], list[GroupInfo]]:
    """Fine-tuning's groups when the objective has a head; else one group (+ no-decay twin) per block only."""
    if head is not None and any(True for _ in head.parameters()):
        return build_param_groups(blocks, head, weight_decay)
    groups: list[dict[str, Any]] = []
    infos: list[GroupInfo] = []
    seen: set[int] = set()
    for i, (name, module) in enumerate(blocks):
        parts: dict[bool, list[nn.Parameter]] = {False: [], True: []}
        for pname, p in module.named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                parts[is_no_decay(pname, p)].append(p)
        for no_decay, params in parts.items():
            if params:
                wd = 0.0 if no_decay else weight_decay
                info = GroupInfo(f"{i}:{name}" + ("/no_decay" if no_decay else ""), i, False, wd,
                                 sum(p.numel() for p in params))
                groups.append({"params": params, "lr": 0.0, "weight_decay": wd, "name": info.name, "block": i,
                               "is_head": False})
                infos.append(info)
    return groups, infos


class WithEpoch(Sampler[list[tuple[int, int]]]):
    """A training batch sampler's batches with the epoch beside each index, for datasets that draw their views /
    masks from ``(seed, epoch, index)``. Its ``sampler`` is the wrapped one's, where Lightning sets the epoch (fresh
    runs and resumes alike)."""

    def __init__(self, batches: Any) -> None:
        self.batches = batches

    @property
    def sampler(self) -> Any:
        return self.batches.sampler

    def __iter__(self) -> Any:
        epoch = int(self.batches.sampler.epoch)
        return ([(i, epoch) for i in batch] for batch in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` (a tensor, a PaddedBatch, or a tuple / list of them) on ``device``."""
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(b, device) for b in batch)
    return batch.to(device) if hasattr(batch, "to") else batch
