"""The MLP classification head: ``[B, D] -> [B, n_classes]`` logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from headstart.errors import ConfigError, did_you_mean

__all__ = ["ACTIVATIONS", "MLPHead"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


class MLPHead(nn.Module):
    """Dropout -> (Linear -> activation -> dropout) per hidden layer -> Linear."""

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (),
        n_classes: int = 2,
        dropout: float = 0.1,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"head.activation '{activation}' is unknown.{did_you_mean(activation, ACTIVATIONS)} "
                f"Valid: {', '.join(ACTIVATIONS)}."
            )
        if n_classes < 1:
            raise ConfigError(f"the head needs at least one output (classes, targets or tasks), got {n_classes}.")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"head.dropout must be in [0, 1), got {dropout}.")
        self.input_dim = int(input_dim)
        self.n_classes = int(n_classes)
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        prev = self.input_dim
        for width in hidden_dims:
            layers += [nn.Linear(prev, int(width)), ACTIVATIONS[activation](), nn.Dropout(dropout)]
            prev = int(width)
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(prev, self.n_classes)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """The last hidden representation before the classifier (the features when no hidden layer)."""
        return self.layers(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layers(features))
