"""Classification losses.

Class weights may be a tensor, a list, or ``"balanced"``; balanced weights are computed from the
*training* labels as ``n_samples / (n_classes * count_c)`` (scikit-learn's formula), never from
validation data (DESIGN rule 7).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from headstart.errors import ConfigError, DataError
from headstart.registry import Registry

__all__ = ["LOSSES", "FocalLoss", "build_loss", "resolve_class_weights"]

LOSSES: Registry[Any] = Registry("loss")


def resolve_class_weights(
    spec: str | Sequence[float] | torch.Tensor | None,
    n_classes: int,
    train_labels: Sequence[int] | np.ndarray | None = None,
) -> torch.Tensor | None:
    """Turn a class-weight spec into a float tensor of length ``n_classes`` (or None)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec != "balanced":
            raise ConfigError(f"loss.class_weights '{spec}' is not understood: use 'balanced' or a list of numbers.")
        if train_labels is None:
            raise ConfigError(
                "class_weights='balanced' needs the training labels; pass train_labels (the Python API computes "
                "them from the training dataloader's dataset when it can)."
            )
        labels = np.asarray(train_labels, dtype=np.int64)
        counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
        if (counts == 0).any():
            empty = [int(i) for i in np.flatnonzero(counts == 0)]
            raise DataError(
                f"class_weights='balanced': class index(es) {empty} have no training rows, so their weight is "
                f"undefined. Give explicit weights or add training rows for those classes."
            )
        return torch.tensor(len(labels) / (n_classes * counts), dtype=torch.float32)
    weights = torch.as_tensor(spec, dtype=torch.float32).flatten()
    if weights.numel() != n_classes:
        raise ConfigError(f"loss.class_weights has {weights.numel()} values but there are {n_classes} classes.")
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ConfigError(f"loss.class_weights must be finite and non-negative, got {weights.tolist()}.")
    return weights


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): ``-alpha_y (1 - p_y)^gamma log p_y``, mean over the batch."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma = float(gamma)
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("weight", weight if weight is not None else None, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=-1)
        n = logits.shape[-1]
        one_hot = F.one_hot(target, n).to(logp.dtype)
        if self.label_smoothing:
            one_hot = one_hot * (1 - self.label_smoothing) + self.label_smoothing / n
        focal = (1 - logp.exp()).pow(self.gamma)
        per_class = -one_hot * focal * logp
        if self.weight is not None:
            per_class = per_class * self.weight.to(per_class.dtype)
        return per_class.sum(dim=-1).mean()


@LOSSES.register("ce")
def _ce(weight: torch.Tensor | None, label_smoothing: float, gamma: float) -> nn.Module:
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)


@LOSSES.register("focal")
def _focal(weight: torch.Tensor | None, label_smoothing: float, gamma: float) -> nn.Module:
    return FocalLoss(gamma=gamma, weight=weight, label_smoothing=label_smoothing)


def build_loss(
    name: str,
    n_classes: int,
    class_weights: str | Sequence[float] | torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    focal_gamma: float = 2.0,
    train_labels: Sequence[int] | np.ndarray | None = None,
) -> nn.Module:
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {label_smoothing}.")
    weight = resolve_class_weights(class_weights, n_classes, train_labels)
    return LOSSES.get(name, where="loss.type")(weight, label_smoothing, focal_gamma)
