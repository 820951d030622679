"""Additive-margin heads on the unit hypersphere: CosFace and ArcFace.

Both classify by the cosine between the L2-normalised embedding and each class's L2-normalised weight,
scaled by ``s``. In training, with the labels at hand, the target class's logit is penalised so classes
must be separated by a margin ``m``:

* CosFace (Wang et al., 2018, "CosFace: Large Margin Cosine Loss"): ``s * (cos(theta_y) - m)``.
* ArcFace (Deng et al., 2019, "ArcFace: Additive Angular Margin Loss"): ``s * cos(theta_y + m)``; where
  ``theta_y + m`` would pass pi the logit continues as ``s * (cos(theta_y) - m * sin(m))`` so it stays
  monotonic (the reference implementation's ``th`` / ``mm`` rule).

The margin is a training-time device only: evaluation, prediction and embeddings use the plain scaled
cosines ``s * cos(theta)``, so validation metrics are comparable across margins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from headstart.errors import ConfigError
from headstart.heads.mlp import ACTIVATIONS

__all__ = ["MARGIN_KINDS", "MarginHead"]

MARGIN_KINDS = ("cosface", "arcface")


class MarginHead(nn.Module):
    """(optional MLP) -> cosine classifier with an additive cosine (CosFace) or angular (ArcFace) margin."""

    needs_labels = True  # the training step passes labels to forward()

    def __init__(
        self,
        input_dim: int,
        n_classes: int,
        kind: str = "cosface",
        scale: float = 30.0,
        margin: float | None = None,
        hidden_dims: Sequence[int] = (),
        dropout: float = 0.0,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        if kind not in MARGIN_KINDS:
            from headstart.errors import did_you_mean

            raise ConfigError(f"head.type '{kind}' is not a margin head.{did_you_mean(kind, MARGIN_KINDS)} "
                              f"Valid: {', '.join(MARGIN_KINDS)}.")
        margin = (0.35 if kind == "cosface" else 0.5) if margin is None else float(margin)
        if scale <= 0:
            raise ConfigError(f"head.scale must be > 0 (typical 16-64), got {scale}.")
        limit = 1.0 if kind == "cosface" else math.pi / 2
        if not 0.0 <= margin < limit:
            raise ConfigError(f"head.margin for {kind} must be in [0, {limit:.3g}) (typical "
                              f"{'0.2-0.4' if kind == 'cosface' else '0.3-0.5 rad'}), got {margin}.")
        if n_classes < 2:
            raise ConfigError(f"n_classes must be at least 2 for classification, got {n_classes}.")
        self.kind, self.scale, self.margin = kind, float(scale), margin
        self.input_dim, self.n_classes = int(input_dim), int(n_classes)
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
        prev = self.input_dim
        for width in hidden_dims:
            layers += [nn.Linear(prev, int(width)), ACTIVATIONS[activation]()]
            prev = int(width)
        self.layers = nn.Sequential(*layers)
        # The class weights (rows are normalised in use); a module of its own so it gets its own LR group
        # (optim.margin_lr) and the same state-dict name as the MLP head's classifier.
        self.classifier = nn.Linear(prev, self.n_classes, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)
        self._cos_m, self._sin_m = math.cos(margin), math.sin(margin)
        self._th = math.cos(math.pi - margin)  # theta + m > pi beyond this cosine
        self._mm = math.sin(math.pi - margin) * margin

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """The representation the cosines are taken of (before normalisation)."""
        return self.layers(features)

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, n_classes]`` cosines between the embeddings and the class weights."""
        return F.linear(F.normalize(self.embed(features), dim=-1), F.normalize(self.classifier.weight, dim=-1))

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosine(features)
        if not self.training or labels is None or self.margin == 0.0:
            return self.scale * cos
        onehot = F.one_hot(labels.long(), self.n_classes).to(cos.dtype)
        if self.kind == "cosface":
            target = cos - self.margin
        else:
            sin = torch.sqrt((1.0 - cos * cos).clamp_min(1e-12))
            phi = cos * self._cos_m - sin * self._sin_m
            target = torch.where(cos > self._th, phi, cos - self._mm)
        return self.scale * (onehot * target + (1.0 - onehot) * cos)
