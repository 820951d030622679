"""Param groups (built once) and the schedule that owns every group's LR."""

from __future__ import annotations

from headstart.optim.groups import OPTIMIZERS, GroupInfo, build_optimizer, build_param_groups, is_no_decay
from headstart.optim.schedule import SCHEDULERS, LRSchedule, PlateauState

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "GroupInfo",
    "LRSchedule",
    "PlateauState",
    "build_optimizer",
    "build_param_groups",
    "is_no_decay",
]
