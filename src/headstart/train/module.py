"""``FinetuneModule``: backbone + head + strategy + one LR schedule, as a LightningModule.

The training path reads top to bottom:

1. ``__init__`` wraps the encoder in a backbone adapter, builds the head and fixes the layer map. Every
   other constructor argument is saved as plain data (hyper-parameters), so
   ``FinetuneModule.load_from_checkpoint(path, seq_encoder=encoder)`` rebuilds the module from a checkpoint.
2. ``configure_optimizers`` builds every param group once and the schedule that owns their LRs.
3. ``on_train_epoch_start`` asks the strategy which blocks train this epoch and applies it
   (requires_grad, train/eval mode, LR mask), logging each phase change.
4. ``on_before_optimizer_step`` writes each group's LR for this optimizer step.
5. Validation collects probabilities and computes metrics once per epoch (no per-step sync).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from headstart.backbones import Backbone, as_backbone, check_layer_map
from headstart.heads import MarginHead, MLPHead
from headstart.losses import resolve_class_weights
from headstart.metrics import fisher_ratio
from headstart.metrics.direction import lower_is_better
from headstart.optim import GroupInfo, LRSchedule, PlateauState, build_optimizer, build_param_groups
from headstart.strategies import LoraSpec, Strategy, apply_lora
from headstart.train.batches import labels_of, split_batch, to_device
from headstart.train.checkpoint import KeyReport, load_encoder_weights, read_linked
from headstart.train.distributed import gather_eval, reduce_sum
from headstart.train.hparams import lora_spec, plain
from headstart.train.targets import make_target

__all__ = ["FinetuneModule", "split_batch"]

log = logging.getLogger("headstart")


class FinetuneModule(pl.LightningModule):
    """Fine-tune ``backbone`` (alias ``seq_encoder``) with an MLP head on ``n_classes`` classes (or, with
    ``target``, ``n_classes`` regression outputs / binary tasks: see :mod:`headstart.train.targets`).

    Checkpoints keep the encoder's weights but not how to build it: reload one with
    ``FinetuneModule.load_from_checkpoint(path, seq_encoder=encoder)`` (or ``backbone=encoder``), ``encoder``
    being a freshly built module of the same architecture; every other argument comes from the checkpoint.
    """

    # Constructor arguments that are modules (the encoder), or data only needed to resolve another argument
    # (train_labels -> "balanced" class weights): never saved as hyper-parameters.
    NOT_HPARAMS = ("backbone", "seq_encoder", "train_labels")

    def __init__(
        self,
        backbone: nn.Module | None = None,
        n_classes: int = 2,
        *,
        seq_encoder: nn.Module | None = None,
        out_dim: int | None = None,
        head_hidden_dims: Sequence[int] = (),
        dropout: float = 0.1,
        activation: str = "gelu",
        head_type: str = "mlp",
        margin_scale: float = 30.0,
        margin: float | None = None,
        margin_lr: float | None = None,
        embedding_metrics: bool = False,
        strategy: Strategy | str | dict[str, Any] | None = None,
        freeze_encoder: bool = False,
        freeze_epochs: int = 0,
        unfreeze_every: int | None = None,
        lora: LoraSpec | dict[str, Any] | None = None,
        lr: float = 1e-3,
        encoder_lr: float | None = None,
        encoder_lr_ratio: float = 1.0,
        layer_decay: float = 1.0,
        weight_decay: float = 0.01,
        optimizer_type: str = "adamw",
        betas: tuple[float, float] = (0.9, 0.999),
        momentum: float = 0.9,
        scheduler_type: str | None = "cosine",
        warmup_epochs: float = 0.0,
        warmup_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        plateau_factor: float = 0.1,
        plateau_patience: int = 2,
        plateau_monitor: str = "val_loss",
        loss: str = "ce",
        class_weights: str | Sequence[float] | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
        huber_delta: float = 1.0,
        train_labels: Sequence[int] | np.ndarray | None = None,
        class_names: Sequence[str] | None = None,
        target: Mapping[str, Any] | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        encoder = backbone if backbone is not None else seq_encoder
        if encoder is None:
            raise TypeError(
                "FinetuneModule needs the encoder: pass backbone=<module> (alias seq_encoder=<module>). Checkpoints do "
                "not store how to build it, so FinetuneModule.load_from_checkpoint(path, seq_encoder=<module>) needs "
                "it too: a freshly built encoder of the same architecture (its weights come from the checkpoint)."
            )
        if backbone is not None and seq_encoder is not None and backbone is not seq_encoder:
            raise TypeError("FinetuneModule got both backbone= and seq_encoder= (aliases of one argument): pass one.")
        # Every other argument, as plain data (dicts, lists, str, numbers): Lightning stores them in checkpoints,
        # load_from_checkpoint passes them back, and torch.load(weights_only=True) reads them without unpickling.
        self.save_hyperparameters(ignore=list(self.NOT_HPARAMS), logger=False)
        self.hparams.update({key: plain(value, key) for key, value in self.hparams.items()})
        self.backbone: Backbone = as_backbone(encoder, out_dim=out_dim)
        self.n_classes = int(n_classes)
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
        # classes (softmax), numbers (standardised regression) or binary tasks: loss, outputs and metrics
        self.target = make_target(target, self.n_classes)
        if head_type == "mlp":
            self.head: nn.Module = MLPHead(self.backbone.out_dim, head_hidden_dims, self.n_classes, dropout,
                                           activation)
        else:  # cosface / arcface (MarginHead validates the kind)
            self.head = MarginHead(self.backbone.out_dim, self.n_classes, kind=head_type, scale=margin_scale,
                                   margin=margin, hidden_dims=head_hidden_dims, dropout=dropout,
                                   activation=activation)
        # Validation embeddings -> Fisher ratio each epoch (val_fisher): costs N x D floats of memory.
        self.embedding_metrics = bool(embedding_metrics)
        self.strategy = self._resolve_strategy(strategy, freeze_encoder, freeze_epochs, unfreeze_every, lora)
        if self.strategy.uses_lora:
            apply_lora(self.backbone, self.strategy.lora)
        self._blocks = self.backbone.blocks()
        check_layer_map(self.backbone, self._blocks)
        self.block_names = [name for name, _ in self._blocks]
        n = len(self._blocks)
        self.static_frozen = self.strategy.static_frozen(n, self.block_names)
        for i in self.static_frozen:
            self._blocks[i][1].requires_grad_(False)
        # Computing epoch 0's set also validates block ranges now, not mid-run.
        self.trainable_blocks: frozenset[int] = frozenset(self.strategy.trainable(0, n, self.block_names))
        # Recompute the training blocks' activations in backward (less memory, more time); follows the trainable set.
        self.gradient_checkpointing = bool(gradient_checkpointing)
        if self.gradient_checkpointing:
            self.backbone.check_gradient_checkpointing()
        self._apply_requires_grad()
        self.optim_args = dict(
            lr=float(lr), encoder_lr=encoder_lr, encoder_lr_ratio=float(encoder_lr_ratio),
            layer_decay=float(layer_decay), weight_decay=float(weight_decay), optimizer=optimizer_type,
            betas=tuple(betas), momentum=float(momentum), scheduler=scheduler_type or "none",
            warmup_epochs=float(warmup_epochs), warmup_steps=warmup_steps, min_lr_ratio=float(min_lr_ratio),
            plateau_factor=float(plateau_factor), plateau_patience=int(plateau_patience),
            plateau_monitor=plateau_monitor, margin_lr=margin_lr,
        )
        self.loss_args = dict(name=loss, class_weights=class_weights, label_smoothing=float(label_smoothing),
                              focal_gamma=float(focal_gamma), huber_delta=float(huber_delta))
        self.criterion: nn.Module | None = None
        if not (isinstance(class_weights, str) and train_labels is None):
            self.criterion = self.target.build_loss(self.loss_args, train_labels)
            self._record_class_weights(train_labels)
        self.schedule: LRSchedule | None = None
        self.group_infos: list[GroupInfo] = []
        self._pending_schedule_state: dict[str, Any] | None = None
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._val_embeddings: list[torch.Tensor] = []
        # Epoch sums of (loss * n, correct, n), kept on the device: one self.log call per epoch instead
        # of two per step (each costs ~2 ms of Lightning bookkeeping, more than a cached probe's step).
        self._train_sums: torch.Tensor | None = None
        self._pending_train_sums: list[float] | None = None
        self._train_logged = False
        self._test_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.last_test_metrics: dict[str, float] = {}
        # Set by run_fit: where this run keeps the weights no step changes (Lightning checkpoints skip them).
        self.frozen_weights_file: Path | None = None
        # Multi-process runs (headstart.train.distributed): run_fit sets ddp_register_all when blocks unfreeze
        # later, so DDP registers them when it wraps the model; a resumed run learns the earlier process count.
        self.ddp_register_all = False
        self.resumed_world_size: int | None = None
        self.train(True)  # pretrained models load in eval mode; set each block's mode by the strategy

    # ----- construction helpers ----------------------------------------------------------------
    @staticmethod
    def _resolve_strategy(strategy, freeze_encoder, freeze_epochs, unfreeze_every, lora) -> Strategy:
        if isinstance(strategy, Strategy):
            return strategy
        if isinstance(strategy, Mapping):  # a saved Strategy (hyper-parameters are plain dicts)
            fields = dict(strategy)
            saved_lora = lora_spec(fields.pop("lora", None))
            return Strategy(**fields, lora=saved_lora)
        spec = lora_spec(lora)
        if isinstance(strategy, str):
            return Strategy(name=strategy, freeze_epochs=freeze_epochs, unfreeze_every=unfreeze_every, lora=spec)
        if freeze_encoder:
            return Strategy(name="linear_probe")
        if freeze_epochs:
            return Strategy(name="gradual", freeze_epochs=int(freeze_epochs), unfreeze_every=unfreeze_every)
        return Strategy(name="full")

    def _apply_requires_grad(self) -> None:
        for i, (_, block) in enumerate(self._blocks):
            if i in self.static_frozen:
                continue
            on = i in self.trainable_blocks
            for name, p in block.named_parameters():
                p.requires_grad_(on and (not self.strategy.uses_lora or "lora_" in name))
        if self.gradient_checkpointing:  # frozen blocks keep no activations for backward: nothing to recompute
            self.backbone.set_gradient_checkpointing(self.trainable_blocks - set(self.static_frozen))

    def train(self, mode: bool = True) -> FinetuneModule:
        """Trainable blocks in train mode, frozen ones in eval mode (DESIGN rule 6), whoever calls train()."""
        super().train(mode)
        if mode and hasattr(self, "trainable_blocks"):
            for i, (_, block) in enumerate(self._blocks):
                # every block, views (BlockGroup) included: a group's own flag follows its modules'
                block.train(i in self.trainable_blocks)
        return self

    # ----- forward ------------------------------------------------------------------------------
    def forward(self, inputs: Any, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits; ``labels`` only matter to margin heads in training (the margin applies to the target)."""
        features = self.features(inputs)
        if labels is not None and getattr(self.head, "needs_labels", False):
            return self.head(features, labels)
        return self.head(features)

    def features(self, inputs: Any) -> torch.Tensor:
        """Backbone features of raw inputs, or of feature-cache batches (only the trainable rest runs)."""
        if isinstance(inputs, dict):
            if "cached_features" in inputs:
                return inputs["cached_features"]
            if "cached_hidden" in inputs:
                state = {"hidden": inputs["cached_hidden"], "attention_mask": inputs["attention_mask"]}
                return self.backbone.forward_suffix(state, int(inputs["cache_cut"]))
        return self.backbone(inputs)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.criterion is None:
            self._build_balanced_loss()
        assert self.criterion is not None
        return self.criterion(logits.float(), self.target.prepare(labels))

    def _build_balanced_loss(self) -> None:
        labels = None
        if self._trainer is not None:
            loader = self.trainer.train_dataloader
            if loader is None and self.trainer.datamodule is not None:
                loader = self.trainer.datamodule.train_dataloader()
            labels = labels_of(loader) if loader is not None else None
        self.criterion = self.target.build_loss(self.loss_args, labels)
        self.criterion.to(self.device)
        self._record_class_weights(labels)

    def _record_class_weights(self, train_labels: Sequence[int] | np.ndarray | None) -> None:
        """Save "balanced" class weights as the values they resolved to: a reload has no training labels."""
        spec = self.loss_args["class_weights"]
        if isinstance(spec, str) and train_labels is not None and self.target.kind == "classification":
            self.hparams["class_weights"] = resolve_class_weights(spec, self.n_classes, train_labels).tolist()

    # ----- optimisation -------------------------------------------------------------------------
    def build_schedule(self, total_steps: int, steps_per_epoch: float) -> tuple[list[dict[str, Any]], LRSchedule]:
        """Param groups and schedule for a run of ``total_steps`` optimizer steps."""
        a = self.optim_args
        parts = [("margin", self.head.classifier)] if isinstance(self.head, MarginHead) else None
        static = {id(self.get_parameter(name)) for name in self.static_weight_names()}
        groups, infos = build_param_groups(self._blocks, self.head, a["weight_decay"], parts, exclude=static)
        warmup = a["warmup_steps"] if a["warmup_steps"] is not None else round(a["warmup_epochs"] * steps_per_epoch)
        schedule = LRSchedule(
            infos=infos, lr=a["lr"], n_blocks=len(self._blocks), total_steps=max(1, int(total_steps)),
            warmup_steps=int(warmup), scheduler=a["scheduler"], encoder_lr=a["encoder_lr"],
            encoder_lr_ratio=a["encoder_lr_ratio"], layer_decay=a["layer_decay"], min_lr_ratio=a["min_lr_ratio"],
            plateau=PlateauState(factor=a["plateau_factor"], patience=a["plateau_patience"],
                                 mode="min" if lower_is_better(a["plateau_monitor"]) else "max"),
            margin_lr=a["margin_lr"],
        )
        return groups, schedule

    def configure_optimizers(self) -> torch.optim.Optimizer:
        total = self.trainer.estimated_stepping_batches
        max_epochs = self.trainer.max_epochs
        if not np.isfinite(total) or not max_epochs or max_epochs < 1:
            raise ValueError("headstart's LR schedule needs a finite run: set max_epochs on the Trainer.")
        groups, self.schedule = self.build_schedule(int(total), float(total) / max_epochs)
        self.group_infos = list(self.schedule.infos)
        if self._pending_schedule_state is not None:
            self.schedule.load_state_dict(self._pending_schedule_state)
            self._pending_schedule_state = None
        a = self.optim_args
        # Lightning's mixed-precision plugin (bf16 and fp16) refuses to clip the gradients of a fused optimizer.
        scaled = "mixed" in str(self.trainer.precision)
        optimizer = build_optimizer(groups, a["optimizer"], betas=a["betas"], momentum=a["momentum"],
                                    fused=False if scaled else None)
        self.schedule.apply(optimizer, self.trainer.global_step, self.trainable_blocks)
        return optimizer

    def setup(self, stage: str) -> None:
        """Before DDP wraps the model: every block that trains in some epoch requires gradients, so DDP
        registers it (the first epoch's ``on_train_epoch_start`` sets the real flags again)."""
        if stage == "fit":
            self._register_for_ddp()

    def _register_for_ddp(self) -> None:
        if not self.ddp_register_all:
            return
        n = len(self._blocks)
        ever = set().union(*(self.strategy.trainable(e, n, self.block_names)
                             for e in range(self.trainer.max_epochs or 1)))
        saved = self.trainable_blocks
        self.trainable_blocks = frozenset(ever)
        self._apply_requires_grad()
        self.trainable_blocks = saved

    def on_train_epoch_start(self) -> None:
        n = len(self._blocks)
        wanted = frozenset(self.strategy.trainable(self.current_epoch, n, self.block_names))
        changed = wanted != self.trainable_blocks
        self.trainable_blocks = wanted
        self._apply_requires_grad()
        self.train(True)
        self._train_sums, self._train_logged = None, False
        if self._pending_train_sums is not None:  # resumed mid-epoch: the steps before the checkpoint count
            self._train_sums = torch.tensor(self._pending_train_sums, device=self.device)
            self._pending_train_sums = None
        if (changed or self.current_epoch == 0) and self.trainer.is_global_zero:
            train_names = [self.block_names[i] for i in sorted(wanted)]
            log.info(
                "epoch %d: %d/%d blocks trainable (train mode: %s); frozen blocks in eval mode",
                self.current_epoch + 1, len(wanted), n, ", ".join(train_names) or "head only",
            )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        assert self.schedule is not None
        self.schedule.apply(optimizer, self.trainer.global_step, self.trainable_blocks)

    # ----- steps --------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, labels = split_batch(batch)
        if labels is None:
            raise ValueError("Training batches must carry labels ((x, y) pairs or a dict with 'labels').")
        logits = self(inputs, labels)
        loss = self._loss(logits, labels)
        n = len(labels)
        loss_d = loss.detach().float()
        correct = self.target.correct(logits.detach(), labels)
        step = torch.stack([loss_d * n, loss_d.new_zeros(()) if correct is None else correct,
                            torch.full((), float(n), device=loss_d.device)])  # a fill, not a host copy
        self._train_sums = step if self._train_sums is None else self._train_sums + step
        trainer = self._trainer
        if trainer is None:
            return loss
        if batch_idx + 1 == trainer.num_training_batches:  # last batch: log the epoch means now, so
            self._log_train_means()  # callbacks see them in on_train_epoch_end like any epoch metric
        # The step loss goes to the logger only, every log_every_n_steps steps: a per-step value in the
        # progress bar is read back to the host at every step (a GPU sync).
        if self.global_step % trainer.log_every_n_steps == 0:
            self.log("train_loss_step", loss.detach(), on_step=True, on_epoch=False, batch_size=n)
        return loss

    def on_train_epoch_end(self) -> None:
        if not self._train_logged:  # loaders without a length: log after the last batch
            self._log_train_means()

    def _log_train_means(self) -> None:
        if self._train_sums is None:
            return
        loss_sum, correct, n = reduce_sum(self.trainer, self._train_sums)  # over all ranks' rows
        sync = self.trainer.world_size > 1  # equal on every rank already: the mean of equal values, no warning
        self.log("train_loss", (loss_sum / n).float(), on_step=False, on_epoch=True, prog_bar=True, batch_size=1,
                 sync_dist=sync)
        if self.target.has_accuracy:
            self.log("train_acc", (correct / n).float(), on_step=False, on_epoch=True, batch_size=1, sync_dist=sync)
        self._train_logged = True

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        inputs, labels = split_batch(batch)
        features = self.features(inputs)
        logits = self.head(features)
        if labels is not None:
            self._val_outputs.append((logits.detach().float(), labels.detach()))
            if self.embedding_metrics:
                self._val_embeddings.append(self.head.embed(features).detach().float().cpu())

    def on_validation_epoch_end(self) -> None:
        outputs, self._val_outputs = self._val_outputs, []
        embeddings, self._val_embeddings = self._val_embeddings, []
        if self.trainer.sanity_checking:
            return
        if self.trainer.world_size > 1:  # every rank saw its piece: metrics over the whole split, each row once
            outputs, embeddings = self._gather_val(outputs, embeddings)
        if not outputs:
            return
        metrics = self._metrics(outputs, "val_")
        if embeddings and self.target.kind == "classification":
            metrics["val_fisher"] = fisher_ratio(torch.cat(embeddings), torch.cat([o[1] for o in outputs]))
        for key, value in metrics.items():
            self.log(key, value, prog_bar=key in ("val_acc", "val_loss", "val_rmse", "val_auc"),
                     sync_dist=self.trainer.world_size > 1)
        if self.schedule is not None and self.schedule.on_validation(metrics.get(self.optim_args["plateau_monitor"])):
            log.info("plateau: LR scale reduced to %.3g", self.schedule.plateau.scale)

    def _gather_val(self, outputs: list[tuple[torch.Tensor, torch.Tensor]], embeddings: list[torch.Tensor]
                    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor]]:
        loader = self.trainer.val_dataloaders
        logits = torch.cat([o[0] for o in outputs]) if outputs else None
        labels = torch.cat([o[1] for o in outputs]) if outputs else None
        emb = torch.cat(embeddings) if embeddings else None
        logits, labels, emb = gather_eval(self.trainer, loader, [logits, labels, emb])
        if logits is None or labels is None:
            return [], []
        return [(logits.to(self.device), labels.to(self.device))], ([] if emb is None else [emb])

    def test_step(self, batch: Any, batch_idx: int) -> None:
        inputs, labels = split_batch(batch)
        logits = self(inputs)
        if labels is not None:
            self._test_outputs.append((logits.detach().float(), labels.detach()))

    def on_test_epoch_end(self) -> None:
        outputs, self._test_outputs = self._test_outputs, []
        if outputs:
            self.last_test_metrics = self._metrics(outputs, "test_")
            self.log_dict(self.last_test_metrics)

    def _metrics(self, outputs: list[tuple[torch.Tensor, torch.Tensor]], prefix: str) -> dict[str, float]:
        logits = torch.cat([o[0] for o in outputs])
        labels = torch.cat([o[1] for o in outputs])
        return self.target.metrics(labels.cpu().numpy(), self.decode(logits).cpu().numpy(), prefix=prefix)

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """What the outputs mean to a user: class probabilities, numbers in the data's unit, task probabilities."""
        return self.target.decode(logits)

    # ----- checkpoint state (exact resume) ------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.frozen_weights_file is not None and "state_dict" in checkpoint:
            state = checkpoint["state_dict"]
            for name in self.static_weight_names():
                state.pop(name, None)
        checkpoint["headstart"] = {
            "frozen_weights": None if self.frozen_weights_file is None else str(self.frozen_weights_file),
            "schedule": self.schedule.state_dict() if self.schedule is not None else None,
            "trainable_blocks": sorted(self.trainable_blocks),
            "n_groups": len(self.group_infos),
            "world_size": self.trainer.world_size if self._trainer is not None else 1,
            # Mid-epoch only: at an epoch end the sums are logged and belong to the finished epoch.
            "train_sums": None if self._train_sums is None or self._train_logged else self._train_sums.tolist(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("headstart") or {}
        if state.get("frozen_weights") and "state_dict" in checkpoint:
            # This run's file (run_fit sets it, so a moved run dir still resumes), else the recorded path.
            linked = self.frozen_weights_file or Path(state["frozen_weights"])
            checkpoint["state_dict"] = read_linked(checkpoint["state_dict"], linked,
                                                   where="The Lightning checkpoint being resumed")
        weight = checkpoint.get("state_dict", {}).get("criterion.weight")
        if self.criterion is None and weight is not None:  # "balanced" weights resolved during the saved run
            self.criterion = self.target.build_loss({**self.loss_args, "class_weights": weight}, None)
        self._pending_schedule_state = state.get("schedule")
        self._pending_train_sums = state.get("train_sums")
        self.resumed_world_size = int(state.get("world_size", 1))
        now = self.trainer.world_size if self._trainer is not None else 1
        if self.resumed_world_size != now:
            # data.batch_size is the global batch and the epoch order does not depend on the process count,
            # so the resumed epochs see the same batches, split differently.
            log.info("resuming a run trained with %d process(es) with %d: the global batches are unchanged",
                     self.resumed_world_size, now)
        if "trainable_blocks" in state:
            self.trainable_blocks = frozenset(state["trainable_blocks"])
            self._apply_requires_grad()
            self._register_for_ddp()  # restored before DDP wraps the model

    # ----- user API -----------------------------------------------------------------------------
    def load_pretrained_encoder(self, path: str | Path, strict: bool = False, verbose: bool = True) -> KeyReport:
        """Load encoder weights from another model's checkpoint and print the key report."""
        report = load_encoder_weights(self.backbone, path, strict=strict)
        if verbose:
            print(report.format())
        return report

    def get_embeddings(self, dataloader: Iterable[Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Backbone features ``[N, D]`` (eval mode) and labels ``[N]`` (None when batches have none)."""
        return self._infer(dataloader, self.features)

    def predict_logits(self, dataloader: Iterable[Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``[N, C]`` in eval mode, and labels when the batches carry them."""
        return self._infer(dataloader, self)

    @torch.inference_mode()
    def _infer(
        self, dataloader: Iterable[Any], fn: Callable[[Any], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Outputs in dataset order (eval loaders may batch longest-first; that order is undone)."""
        from headstart.data.samplers import restore_order

        was_training = self.training
        self.eval()
        out, labels = [], []
        try:
            for batch in dataloader:
                inputs, y = split_batch(batch)
                out.append(fn(to_device(inputs, self.device)).float().cpu())
                if y is not None:
                    labels.append(y.cpu())
        finally:
            self.train(was_training)
        loader = getattr(dataloader, "iterable", dataloader)  # a progress bar wraps the loader
        sampler = getattr(loader, "sampler", None)
        values = restore_order(torch.cat(out), sampler)
        return values, (restore_order(torch.cat(labels), sampler) if labels else None)

    def weights_state(self) -> dict[str, torch.Tensor]:
        """Everything needed to rebuild the model's outputs (backbone incl. adapters, head, buffers)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("criterion.")}

    def static_weight_names(self) -> list[str]:
        """State-dict names of the parameters no step of this run can change: static-frozen blocks and, under
        LoRA, the base weights. A run stores them once instead of in every checkpoint."""
        names: dict[int, list[str]] = {}
        for name, p in self.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), []).append(name)
        out: list[str] = []
        for i, (_, block) in enumerate(self._blocks):
            for name, p in block.named_parameters():
                if i in self.static_frozen or (self.strategy.uses_lora and "lora_" not in name):
                    out.extend(names.get(id(p), []))
        return sorted(set(out))

    def param_count(self) -> tuple[int, int]:
        """(trainable at any point of the run, total)."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.head.parameters())
        for i, (_, block) in enumerate(self._blocks):
            if i not in self.static_frozen:
                trainable += sum(p.numel() for name, p in block.named_parameters()
                                 if not self.strategy.uses_lora or "lora_" in name)
        return trainable, total
