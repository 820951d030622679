"""What a person watching (or grepping the log of) a run sees: 1-based epochs everywhere.

* :class:`EpochProgressBar` - Lightning's tqdm bar, titled ``Epoch 2/2`` instead of the 0-based ``Epoch 1``.
* :class:`EpochLine` - one plain, flushed line per epoch (losses, the monitored metric, LR, time), readable
  in a log file where the bar is only carriage returns.
* :class:`StepLR` - the LRs of every optimizer step in ``lr_steps.csv``, so the curves plot can show
  warmup and cosine, not one point per epoch.
* :func:`lr_summary` - the head / margin / encoder LR of a param-group list, as metrics.csv reports them.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from tqdm import tqdm

from headstart.fileio import atomic_write_text

__all__ = ["EpochLine", "EpochProgressBar", "StepLR", "lr_summary", "metric_value"]

_STEP_FIELDS = ("step", "epoch", "lr_head", "lr_encoder_max", "lr_margin")


def metric_value(trainer: pl.Trainer, name: str) -> float | None:
    """``name`` from the trainer's logged metrics as a float (``name_epoch`` when only that was logged)."""
    value = trainer.callback_metrics.get(name)
    if value is None:
        value = trainer.callback_metrics.get(f"{name}_epoch")
    if value is None:
        return None
    return float(value.item() if hasattr(value, "item") else value)


def lr_summary(param_groups: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The LRs a run reports: ``lr_head``, ``lr_encoder_max`` and, for a margin head, ``lr_margin``.

    Groups named ``margin`` / ``margin/...`` are a margin head's class weights (they follow
    ``optim.margin_lr``, as the schedule reads the name); ``lr_head`` is the largest LR of the other head
    groups (``is_head``), falling back to the margin LR or the last group; ``lr_encoder_max`` is the largest
    encoder-group LR (0.0 when there is none). One rule shared by metrics.csv, lr_steps.csv and the log line.
    """
    if not param_groups:
        return {}
    is_margin = [str(g.get("name", "")).split("/")[0] == "margin" for g in param_groups]
    margin = [float(g["lr"]) for g, m in zip(param_groups, is_margin, strict=True) if m]
    head = [float(g["lr"]) for g, m in zip(param_groups, is_margin, strict=True) if g.get("is_head", False) and not m]
    out = {"lr_head": max(head) if head else (max(margin) if margin else float(param_groups[-1]["lr"]))}
    if margin:
        out["lr_margin"] = max(margin)
    enc = [float(g["lr"]) for g in param_groups if not g.get("is_head", False)]
    out["lr_encoder_max"] = max(enc) if enc else 0.0
    return out


class EpochProgressBar(TQDMProgressBar):
    """The tqdm bar with a 1-based ``Epoch e/E`` title, matching metrics.csv and the epoch lines."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(_epoch_label(trainer.current_epoch + 1, trainer.max_epochs))


def _epoch_label(epoch: int, total: int | None) -> str:
    return f"Epoch {epoch}/{total}" if total is not None and total > 0 else f"Epoch {epoch}"


class EpochLine(pl.Callback):
    """Print one line per epoch, e.g. ``epoch 2/5  train_loss 0.4123  val_loss 0.3810  val_acc 0.8750 (best)
    lr 1.20e-04  12.3 s``.

    The tqdm bar rewrites itself with carriage returns, so a log file of it is unreadable; this line is
    plain and flushed at once. It goes through ``tqdm.write``, which lifts an active bar out of the way.
    ``(best)`` marks a strict improvement of ``monitor`` (by ``mode``); the best value is part of the
    callback state, so a resumed run keeps marking against the epochs before the interruption.
    """

    def __init__(self, total_epochs: int, monitor: str, mode: str = "max", stream: IO[str] | None = None) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"EpochLine: mode must be 'max' or 'min', got {mode!r}.")
        self.total_epochs = int(total_epochs)
        self.monitor, self.mode = monitor, mode
        self.stream = stream
        self.best: float | None = None
        self._t0 = time.perf_counter()

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        seconds = time.perf_counter() - self._t0
        value = metric_value(trainer, self.monitor)
        improved = value is not None and not math.isnan(value) and (
            self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        )
        if improved:
            self.best = value
        if trainer.is_global_zero:
            lr = lr_summary(trainer.optimizers[0].param_groups).get("lr_head") if trainer.optimizers else None
            self._emit(self.format(trainer.current_epoch + 1, trainer, improved, lr, seconds))

    def format(self, epoch: int, trainer: pl.Trainer, improved: bool, lr: float | None, seconds: float) -> str:
        """The line for ``epoch`` (1-based) from ``trainer.callback_metrics``; missing values are left out."""
        parts = [f"epoch {epoch}/{self.total_epochs}"]
        keys = ["train_loss", "val_loss"] + ([self.monitor] if self.monitor not in ("train_loss", "val_loss") else [])
        for key in keys:
            value = metric_value(trainer, key)
            if value is None:
                continue
            parts.append(f"{key} {value:.4f}" + (" (best)" if key == self.monitor and improved else ""))
        if lr is not None:
            parts.append(f"lr {lr:.2e}")
        parts.append(f"{seconds:.1f} s")
        return "  ".join(parts)

    def _emit(self, line: str) -> None:
        stream = self.stream if self.stream is not None else sys.stdout
        tqdm.write(line, file=stream)
        stream.flush()

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        best = state_dict.get("best")
        self.best = None if best is None else float(best)


class StepLR(pl.Callback):
    """Record the LRs of every optimizer step; ``rows`` in memory, ``path`` (lr_steps.csv) on disk.

    A row is ``{step, epoch, lr_head, lr_encoder_max[, lr_margin]}``: ``step`` counts optimizer steps from 1
    (after gradient accumulation), ``epoch`` is 1-based, and the LRs are those the step used (the schedule
    writes them into the param groups just before the step; plain floats, no device sync). The file is
    rewritten atomically at each epoch end. An existing file is read back at construction and cut at the
    restored ``global_step`` when training starts, so a resumed run's file equals an uninterrupted one's.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []
        self._last_step = 0
        if self.path.exists():
            with self.path.open(newline="", encoding="utf-8") as fh:
                self.rows = [_step_row(row) for row in csv.DictReader(fh)]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_step = trainer.global_step
        self.rows = [r for r in self.rows if r["step"] <= self._last_step]

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step <= self._last_step or not trainer.optimizers:  # accumulating: no optimizer step this batch
            return
        self._last_step = step
        self.rows.append({"step": step, "epoch": trainer.current_epoch + 1,
                          **lr_summary(trainer.optimizers[0].param_groups)})

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.write()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:  # a run stopped by max_steps mid-epoch keeps its last steps too
            self.write()

    def write(self) -> None:
        """Write ``rows`` to ``path`` atomically (columns: step, epoch, lr_head, lr_encoder_max[, lr_margin])."""
        fields = [k for k in _STEP_FIELDS if any(k in r for r in self.rows)] or list(_STEP_FIELDS[:4])
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())


def _step_row(row: Mapping[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in row.items():
        if key is None or value in (None, "", "None"):
            continue
        out[key] = int(float(value)) if key in ("step", "epoch") else float(value)
    return out
