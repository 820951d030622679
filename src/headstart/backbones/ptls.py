"""pytorch-lifestream (ptls) sequence encoders: ``TransformerSeqEncoder``, ``RnnSeqEncoder``, ...

They take a ``PaddedBatch`` and, with ``is_reduce_sequence=True``, return ``[B, embedding_size]``.
Layer map: the transaction encoder (plus the sequence encoder's own loose parameters such as the
CLS starter) as ``stem``, each transformer layer, the final norm as ``neck``; an RNN encoder has no
layer list, so it is ``trx_encoder`` then ``seq_encoder``. An encoder built from ``backbone.sequence``
(no user code) is :mod:`headstart.backbones.ptls_build`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from headstart.backbones.base import detect_blocks, named_blocks_from_paths
from headstart.backbones.torch_module import TorchBackbone
from headstart.errors import ConfigError

__all__ = ["PtlsBackbone", "exact_attention", "is_ptls_encoder"]


def is_ptls_encoder(module: nn.Module) -> bool:
    """True for ptls ``SeqEncoderContainer`` subclasses (checked without importing ptls)."""
    return any(
        c.__module__.startswith("ptls.") and c.__name__ == "SeqEncoderContainer" for c in type(module).__mro__
    )


@contextlib.contextmanager
def exact_attention(module: nn.Module) -> Iterator[None]:
    """Run ``module`` without torch's transformer inference fast path while it holds LoRA adapters.

    In eval mode ``nn.TransformerEncoderLayer`` hands ``linear1``/``linear2`` weights straight to a fused
    kernel, so adapters wrapped around those layers are skipped: validation and predictions would come
    from the model without its fine-tuning. The switch is global in torch, so it is restored on exit.
    """
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled") or not any(
        "lora_" in name for name, _ in module.named_parameters()
    ):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


class PtlsBackbone(TorchBackbone):
    """A ptls seq encoder whose output is reduced to one vector per sequence."""

    def __init__(self, module: nn.Module, blocks: list[str] | None = None) -> None:
        try:
            size = int(module.embedding_size)
        except (AttributeError, TypeError, ValueError):
            size = None
        if size is None:
            raise ConfigError(
                f"backbone.type 'ptls' needs a ptls sequence encoder (a SeqEncoderContainer such as "
                f"ptls.nn:TransformerSeqEncoder, which has an integer embedding_size), but backbone.module built "
                f"a {type(module).__module__}.{type(module).__name__} without one. Use backbone.type: torch for a "
                f"plain nn.Module, or name a ptls encoder in backbone.module."
            )
        if hasattr(module, "is_reduce_sequence") and not module.is_reduce_sequence:
            # Fine-tuning a classifier needs one vector per sequence; ptls' own flag does that.
            module.is_reduce_sequence = True
        super().__init__(module, out_dim=size, blocks=blocks)

    def blocks(self) -> list[tuple[str, nn.Module]]:
        if self._block_paths:
            return named_blocks_from_paths(self.module, self._block_paths)
        found = detect_blocks(self.module)
        if len(found) == 1 and hasattr(self.module, "trx_encoder") and hasattr(self.module, "seq_encoder"):
            return [("trx_encoder", self.module.trx_encoder), ("seq_encoder", self.module.seq_encoder)]
        return found

    def forward(self, inputs: Any) -> torch.Tensor:
        with exact_attention(self.module):
            return self.module(inputs)
