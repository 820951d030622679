"""Losses of regression and multi-task binary targets, with missing targets (NaN) left out.

A row may lack some targets (ClinTox-style tables, several regression outputs): its NaN cells add nothing to
the loss and nothing to the count it is averaged over. Regression targets arrive standardised (the model
standardises them with the training split's mean / std), so ``huber_delta`` is in standard deviations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaskedBCE", "MaskedRegressionLoss"]


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    kept = mask.sum()
    return (values * mask).sum() / kept.clamp(min=1)  # a batch without any target gives 0, not NaN


class MaskedRegressionLoss(nn.Module):
    """Mean squared error (``mse``) or Huber loss (``huber``) over the present targets."""

    def __init__(self, kind: str = "mse", delta: float = 1.0) -> None:
        super().__init__()
        if kind not in ("mse", "huber"):
            raise ValueError(f"regression loss must be mse or huber, got {kind!r}")
        self.kind, self.delta = kind, float(delta)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.reshape(pred.shape).to(pred.dtype)
        mask = ~torch.isnan(target)
        clean = torch.where(mask, target, pred.detach())
        if self.kind == "mse":
            per = (pred - clean) ** 2
        else:
            per = F.huber_loss(pred, clean, reduction="none", delta=self.delta)
        return _masked_mean(per, mask.to(pred.dtype))


class MaskedBCE(nn.Module):
    """Binary cross-entropy per task on logits; ``pos_weight`` per task (``balanced``: negatives / positives of
    the training split)."""

    def __init__(self, pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.reshape(logits.shape).to(logits.dtype)
        mask = ~torch.isnan(target)
        clean = torch.where(mask, target, torch.zeros_like(target))
        per = F.binary_cross_entropy_with_logits(logits, clean, reduction="none", pos_weight=self.pos_weight)
        return _masked_mean(per, mask.to(logits.dtype))
