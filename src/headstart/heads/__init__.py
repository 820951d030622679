"""Classification heads."""

from __future__ import annotations

from headstart.heads.mlp import ACTIVATIONS, MLPHead

__all__ = ["ACTIVATIONS", "MLPHead"]
