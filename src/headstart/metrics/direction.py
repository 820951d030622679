"""Which way a metric improves: the one rule the plateau schedule, compare and the plots share."""

from __future__ import annotations

__all__ = ["lower_is_better"]

_LOWER_IS_BETTER = ("loss", "rmse", "mae", "fpr")


def lower_is_better(metric: str) -> bool:
    """Losses, errors (RMSE, MAE) and false-positive rates shrink as a model improves; the rest grow."""
    return any(key in metric for key in _LOWER_IS_BETTER)
