"""The one schedule that owns every group's learning rate (DESIGN rule 2).

For group ``g`` (block ``i_g`` of ``n`` encoder blocks, or the head) at optimizer step ``t`` and
epoch ``e``::

    lr_g(t, e) = base_g * s(t) * p * m_g(e)
    base_g     = lr                                               (head; a margin head's class weights:
                                                                   optim.margin_lr when set)
               = encoder_lr * layer_decay ** (n - 1 - i_g)        (encoder block i_g; top block = encoder_lr)
    encoder_lr = optim.encoder_lr if set, else lr * encoder_lr_ratio

    s(t) = (t + 1) / W                                            for t < W (linear warmup, W steps)
         = min_ratio + (1 - min_ratio) * (1 + cos(pi * q)) / 2     cosine,   q = (t - W) / max(1, T - W)
         = min_ratio + (1 - min_ratio) * (1 - q)                   linear
         = 1                                                      none, plateau
    p    = product of plateau reductions (factor each time the monitored metric stalls for
           ``patience`` validations); 1 for other schedulers
    m_g  = 1 if the group's block is trainable in epoch e (strategy), else 0; the head is always 1

``t`` counts optimizer steps (after gradient accumulation), ``T`` is the run's total. The values are
written straight into ``optimizer.param_groups[k]["lr"]`` before every step, so any optimizer works
and there is no second scheduler to disagree with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from headstart.errors import ConfigError, did_you_mean
from headstart.optim.groups import GroupInfo

__all__ = ["SCHEDULERS", "LRSchedule", "PlateauState"]

SCHEDULERS = ("cosine", "linear", "plateau", "none")


@dataclass
class PlateauState:
    factor: float = 0.1
    patience: int = 2
    mode: str = "min"
    threshold: float = 1e-4
    min_scale: float = 0.0
    scale: float = 1.0
    best: float | None = None
    bad_epochs: int = 0


@dataclass
class LRSchedule:
    infos: Sequence[GroupInfo]
    lr: float
    n_blocks: int
    total_steps: int
    warmup_steps: int = 0
    scheduler: str = "cosine"
    encoder_lr: float | None = None
    encoder_lr_ratio: float = 1.0
    layer_decay: float = 1.0
    min_lr_ratio: float = 0.0
    plateau: PlateauState = field(default_factory=PlateauState)
    margin_lr: float | None = None

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(
                f"optim.scheduler '{self.scheduler}' is unknown.{did_you_mean(self.scheduler, SCHEDULERS)} "
                f"Valid: {', '.join(SCHEDULERS)}."
            )
        if self.warmup_steps < 0 or self.total_steps < 1:
            raise ConfigError(f"Invalid schedule: warmup_steps={self.warmup_steps}, total_steps={self.total_steps}.")

    # ----- the formula -------------------------------------------------------------------------
    def base_lr(self, info: GroupInfo) -> float:
        if info.is_head:
            is_margin = info.name.split("/")[0] == "margin"
            return self.margin_lr if is_margin and self.margin_lr is not None else self.lr
        enc = self.encoder_lr if self.encoder_lr is not None else self.lr * self.encoder_lr_ratio
        return enc * self.layer_decay ** (self.n_blocks - 1 - info.block)

    def factor(self, step: int) -> float:
        w = self.warmup_steps
        if step < w:
            return (step + 1) / w
        if self.scheduler in ("none", "plateau"):
            return 1.0
        q = min(1.0, (step - w) / max(1, self.total_steps - w))
        shape = 0.5 * (1.0 + math.cos(math.pi * q)) if self.scheduler == "cosine" else 1.0 - q
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape

    def lr_at(self, index: int, step: int, trainable_blocks: set[int] | frozenset[int]) -> float:
        info = self.infos[index]
        mask = 1.0 if info.is_head or info.block in trainable_blocks else 0.0
        scale = self.plateau.scale if self.scheduler == "plateau" else 1.0
        return self.base_lr(info) * self.factor(step) * scale * mask

    def apply(self, optimizer: torch.optim.Optimizer, step: int, trainable_blocks: set[int] | frozenset[int]) -> None:
        groups = optimizer.param_groups
        if len(groups) != len(self.infos):
            raise RuntimeError(
                f"The optimizer has {len(groups)} param groups but the schedule was built for {len(self.infos)}; "
                f"groups must be built once at the start and never added (DESIGN rule 1)."
            )
        for k, group in enumerate(groups):
            group["lr"] = self.lr_at(k, step, trainable_blocks)

    # ----- plateau -------------------------------------------------------------------------------
    def on_validation(self, value: float) -> bool:
        """Feed the monitored metric; returns True when the LR was just reduced."""
        if self.scheduler != "plateau" or value is None or not math.isfinite(value):
            return False
        st = self.plateau
        if st.best is None:
            st.best = value
            return False
        better = value < st.best - st.threshold if st.mode == "min" else value > st.best + st.threshold
        if better:
            st.best, st.bad_epochs = value, 0
            return False
        st.bad_epochs += 1
        if st.bad_epochs > st.patience:
            st.scale = max(st.min_scale, st.scale * st.factor)
            st.bad_epochs = 0
            return True
        return False

    # ----- resume --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        st = self.plateau
        return {"plateau_scale": st.scale, "plateau_best": st.best, "plateau_bad_epochs": st.bad_epochs,
                "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau.scale = float(state["plateau_scale"])
        self.plateau.best = state["plateau_best"]
        self.plateau.bad_epochs = int(state["plateau_bad_epochs"])
        self.total_steps = int(state["total_steps"])
        self.warmup_steps = int(state["warmup_steps"])
