"""Siamese pairs: one shared encoder on both inputs, a parameter-free fusion of the two embeddings.

``SiameseBackbone`` is itself a backbone: its layer map is the shared encoder's, so every strategy
(linear probe, partial, gradual, LoRA), the param groups and the feature cache work on pairs unchanged,
and the MLP / margin head sees the fused vector. Inputs are ``{"a": ..., "b": ...}`` where each side is
whatever the encoder takes (a token dict, an image tensor).

Fusion operations (any combination, in this order in the output):

=========  ==============  =========  =================================================
name       output          symmetric  why
=========  ==============  =========  =================================================
concat     ``[a, b]``      no         the head may learn any function of the pair
diff       ``a - b``       no         ordered comparisons (before / after)
absdiff    ``|a - b|``     yes        InferSent / SBERT-style paraphrase features
product    ``a * b``       yes        per-dimension agreement
cosine     ``cos(a, b)``   yes        one scalar, the usual similarity
l2         ``||a - b||``   yes        one scalar, the usual distance
=========  ==============  =========  =================================================
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from headstart.backbones.base import Backbone
from headstart.errors import ConfigError, did_you_mean

__all__ = ["FUSION_OPS", "PairFusion", "SiameseBackbone"]

FUSION_OPS = ("concat", "diff", "absdiff", "product", "cosine", "l2")
_SCALAR = ("cosine", "l2")


class PairFusion(nn.Module):
    """``(a [B, D], b [B, D]) -> [B, out_dim]`` by the chosen operations, concatenated."""

    def __init__(self, dim: int, ops: Sequence[str] = ("concat", "absdiff", "product")) -> None:
        super().__init__()
        ops = list(ops)
        bad = [op for op in ops if op not in FUSION_OPS]
        if not ops or bad:
            hint = did_you_mean(bad[0], FUSION_OPS) if bad else ""
            raise ConfigError(f"pair fusion needs one or more of {', '.join(FUSION_OPS)}; got {ops}.{hint}")
        if len(set(ops)) != len(ops):
            raise ConfigError(f"pair fusion lists an operation twice: {ops}.")
        self.ops = [op for op in FUSION_OPS if op in ops]  # canonical order: the output layout is stable
        self.dim = int(dim)
        self.out_dim = sum(1 if op in _SCALAR else (2 * self.dim if op == "concat" else self.dim)
                           for op in self.ops)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        for op in self.ops:
            if op == "concat":
                parts += [a, b]
            elif op == "diff":
                parts.append(a - b)
            elif op == "absdiff":
                parts.append((a - b).abs())
            elif op == "product":
                parts.append(a * b)
            elif op == "cosine":
                parts.append(F.cosine_similarity(a, b, dim=-1, eps=1e-8).unsqueeze(-1))
            else:  # l2; the epsilon keeps the gradient finite when a == b
                parts.append(torch.sqrt(((a - b) ** 2).sum(-1, keepdim=True) + 1e-12))
        return torch.cat(parts, dim=-1)


class SiameseBackbone(Backbone):
    """Encode ``inputs["a"]`` and ``inputs["b"]`` with the same ``encoder``, then fuse."""

    def __init__(self, encoder: Backbone, ops: Sequence[str] = ("concat", "absdiff", "product")) -> None:
        super().__init__()
        self.encoder = encoder
        self.fusion = PairFusion(encoder.out_dim, ops)
        self.out_dim = self.fusion.out_dim
        self.supports_gradient_checkpointing = encoder.supports_gradient_checkpointing

    def blocks(self) -> list[tuple[str, nn.Module]]:
        return self.encoder.blocks()

    def set_gradient_checkpointing(self, blocks: Collection[int]) -> None:
        self.encoder.set_gradient_checkpointing(blocks)  # the encoder's own switch (transformers' for hf)

    def load_tokenizer(self) -> object | None:
        return self.encoder.load_tokenizer()

    def embed_pair(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The two embeddings from one encoder pass over both sides (same BN statistics, one kernel launch
        per layer): image tensors are stacked, token dicts are right-padded to a common width first."""
        a, b = inputs["a"], inputs["b"]
        both = _stack_sides(a, b)
        if both is None:
            return self.encoder(a), self.encoder(b)
        out = self.encoder(both)
        n = len(a) if isinstance(a, torch.Tensor) else len(a["input_ids"])
        return out[:n], out[n:]

    def forward(self, inputs: Any) -> torch.Tensor:
        if not isinstance(inputs, dict) or not {"a", "b"} <= set(inputs):
            found = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise ValueError(f"A Siamese model takes {{'a': ..., 'b': ...}} inputs (one per side of the pair), "
                             f"got {found}.")
        return self.fusion(*self.embed_pair(inputs))

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "encoder": self.encoder.describe(), "fusion": self.fusion.ops}

    def architecture(self) -> dict[str, object]:
        return {"type": "SiameseBackbone", "encoder": self.encoder.architecture(), "fusion": self.fusion.ops}


def _stack_sides(a: Any, b: Any) -> Any:
    """``a`` and ``b`` as one batch, or None when they cannot share one (other shapes or types)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.cat([a, b]) if a.shape[1:] == b.shape[1:] else None
    if not (isinstance(a, dict) and isinstance(b, dict) and set(a) == set(b) and "attention_mask" in a):
        return None
    width = max(a["attention_mask"].shape[1], b["attention_mask"].shape[1])
    # Right padding with 0 is safe: padded positions have attention_mask 0, and pooling ignores them.
    return {k: torch.cat([F.pad(a[k], (0, width - a[k].shape[1])), F.pad(b[k], (0, width - b[k].shape[1]))])
            for k in a}
