"""Classification heads: an MLP, or a cosine classifier with a CosFace / ArcFace margin."""

from __future__ import annotations

from headstart.heads.margin import MARGIN_KINDS, MarginHead
from headstart.heads.mlp import ACTIVATIONS, MLPHead

__all__ = ["ACTIVATIONS", "MARGIN_KINDS", "MLPHead", "MarginHead"]
