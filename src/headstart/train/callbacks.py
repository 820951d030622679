"""Callbacks that persist a run: per-epoch metrics.csv, top-k/best safetensors, and last.ckpt after every
epoch (atomic, digest-checked, loaded without unpickling code)."""

from __future__ import annotations

import csv
import io
import math
import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from headstart.errors import CheckpointError
from headstart.fileio import atomic_write_text
from headstart.train.checkpoint import (
    atomic_checked_path,
    explain_torch_load_error,
    save_weights,
    verify_file,
)
from headstart.train.progress import lr_summary, metric_value

__all__ = ["AtomicCheckpointIO", "BestWeights", "LastCheckpoint", "MetricsCSV", "ResumeSamplerEpoch"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints streamed to a temp file and renamed: a crash never corrupts last.ckpt.

    Lightning's own writer serialises the whole checkpoint into a BytesIO and then copies it out
    (``getvalue()``), so every save holds the checkpoint twice in memory: weights + Adam state of a
    22 M-parameter MiniLM is ~270 MB, i.e. ~550 MB on top of training at each epoch end, which set the
    run's peak RSS. ``torch.save`` to the file writes tensor by tensor instead.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} writes local files and takes no storage_options.")
        meta = {"epoch": int(checkpoint.get("epoch", 0)) + 1, "global_step": int(checkpoint.get("global_step", 0)),
                "format": "lightning"}
        with atomic_checked_path(path, meta) as tmp, open(tmp, "wb") as fh:
            torch.save(checkpoint, fh)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Verify the digest in ``last.json``, then ``torch.load(weights_only=True)`` whatever the caller asked:
        a training state never needs to unpickle code, so a pickle payload is refused, not run."""
        where = "The training state being resumed (--resume)"
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"{where} '{path}' does not exist. Run without --resume to start the run.")
        verify_file(path, where, require_sidecar=True)  # only ever a run's own last.ckpt
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"{where} '{path}' cannot be loaded: {explain_torch_load_error(exc)}. headstart loads training state "
                f"with torch.load(weights_only=True) only. If this file was not written by headstart, or is "
                f"damaged, delete it (the run restarts with --overwrite) or restore the run's checkpoints/ folder."
            ) from None
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise CheckpointError(
                f"{where} '{path}' is not a Lightning training checkpoint (no state_dict). Restore the run's "
                f"checkpoints/ folder, or start again with --overwrite."
            )
        return checkpoint


class LastCheckpoint(Checkpoint):
    """``last.ckpt`` after every training epoch, whatever the monitored metric did.

    Lightning's ``ModelCheckpoint(save_top_k=0, save_last=True)`` writes ``last`` only when a top-k file is
    saved or at the end of training, so a killed run had nothing to resume. As a ``Checkpoint`` this runs
    after the LightningModule's and the other callbacks' epoch-end hooks (Lightning orders checkpoint
    callbacks last), so the saved state includes this epoch's metrics rows, best weights and early-stopping
    counters. The write is atomic: the previous file stays until the new one is complete.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # the optimizer state too: resume needs it


class ResumeSamplerEpoch(pl.Callback):
    """On resume, set the training sampler to the epoch that comes next before Lightning draws from it.

    Lightning creates (and prefetches from) the training iterator in ``setup_data`` before it calls
    ``set_epoch``, so the first epoch after a resume would replay epoch 0's batch order. ``LastCheckpoint``
    saves at epoch ends only, so the next epoch is the saved one plus one.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        from lightning_fabric.utilities.data import _set_sampler_epoch

        _set_sampler_epoch(self.loader, int(checkpoint.get("epoch", 0)) + 1)


class MetricsCSV(pl.Callback):
    """One row per epoch: epoch, train/val metrics, the LRs actually used, wall time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        self._t0 = time.perf_counter()
        if self.path.exists():  # resume: keep the rows of earlier epochs
            with self.path.open(newline="", encoding="utf-8") as fh:
                self.rows = [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(fh)]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1  # 1-based, like the progress bar and summary.json
        row: dict[str, Any] = {"epoch": epoch, "step": trainer.global_step}
        for key in ("train_loss", "train_acc"):
            row[key] = metric_value(trainer, key)
        for key in sorted(trainer.callback_metrics):
            if key.startswith("val_"):
                row[key] = metric_value(trainer, key)
        if trainer.optimizers:
            summary = lr_summary(trainer.optimizers[0].param_groups)
            row["lr_head"] = summary["lr_head"]
            if "lr_margin" in summary:  # a margin head's class weights (optim.margin_lr)
                row["lr_margin"] = summary["lr_margin"]
            row["lr_encoder_max"] = summary["lr_encoder_max"]
            row["trainable_blocks"] = len(getattr(pl_module, "trainable_blocks", ()))
        row["epoch_time_s"] = round(time.perf_counter() - self._t0, 3)
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch] + [row]
        if trainer.is_global_zero:  # one writer in a multi-process run
            self._write()

    def _write(self) -> None:
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())


def _num(value: str) -> Any:
    if value in ("", "None"):
        return None
    try:
        f = float(value)
    except ValueError:
        return value
    return int(f) if f.is_integer() and "." not in value and "e" not in value.lower() else f


class BestWeights(pl.Callback):
    """Keep the top-k epochs by ``monitor`` as safetensors, and ``best.safetensors`` (+ JSON sidecar)."""

    def __init__(self, dirpath: str | Path, monitor: str, mode: str = "max", top_k: int = 1,
                 sidecar: dict[str, Any] | None = None) -> None:
        self.dir = Path(dirpath)
        self.monitor, self.mode, self.top_k = monitor, mode, top_k
        self.sidecar = dict(sidecar or {})
        self.kept: list[tuple[float, int, str]] = []  # (value, epoch, path)
        self.best_epoch: int | None = None
        self.best_value: float | None = None

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        value = metric_value(trainer, self.monitor)
        if value is None or math.isnan(value):
            return
        epoch = trainer.current_epoch + 1  # 1-based
        is_best = self.best_value is None or self._better(value, self.best_value)
        worst = None
        if len(self.kept) >= self.top_k:
            worst = min(self.kept, key=lambda t: t[0]) if self.mode == "max" else max(self.kept, key=lambda t: t[0])
            if not self._better(value, worst[0]):
                worst = None
                if not is_best:
                    return
        state = pl_module.weights_state() if hasattr(pl_module, "weights_state") else pl_module.state_dict()
        frozen: Path | None = getattr(pl_module, "frozen_weights_file", None)
        if frozen is not None:  # stored once for the run; each file links to it
            for name in pl_module.static_weight_names():
                state.pop(name, None)

        def links(path: Path) -> list[str]:
            return [] if frozen is None else [os.path.relpath(frozen, path.parent)]

        meta = dict(self.sidecar, epoch=epoch, monitor=self.monitor, value=value, global_step=trainer.global_step)
        if self.top_k > 1:
            path = self.dir / "top" / f"epoch={epoch:03d}-{self.monitor}={value:.4f}.safetensors"
            save_weights(state, path, meta, links(path))
            self.kept.append((value, epoch, str(path)))
            if worst is not None:
                self.kept.remove(worst)
                Path(worst[2]).unlink(missing_ok=True)
                Path(worst[2]).with_suffix(".json").unlink(missing_ok=True)
        if is_best:
            self.best_value, self.best_epoch = value, epoch
            best = self.dir / "best.safetensors"
            save_weights(state, best, meta, links(best))

    def state_dict(self) -> dict[str, Any]:
        return {"kept": self.kept, "best_epoch": self.best_epoch, "best_value": self.best_value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kept = [tuple(k) for k in state.get("kept", [])]  # type: ignore[misc]
        self.best_epoch = state.get("best_epoch")
        self.best_value = state.get("best_value")

