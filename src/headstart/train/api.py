"""The Python API entry point, mirroring how ptls/Lightning users write fine-tuning code."""

from __future__ import annotations

from typing import Any

from torch import nn

from headstart.train.module import FinetuneModule

__all__ = ["create_finetune_model"]


def create_finetune_model(
    seq_encoder: nn.Module | None = None,
    n_classes: int = 2,
    *,
    backbone: nn.Module | None = None,
    head_hidden_dims: list[int] | tuple[int, ...] = (),
    dropout: float = 0.1,
    lr: float = 1e-3,
    freeze_epochs: int = 0,
    **kwargs: Any,
) -> FinetuneModule:
    """A ready-to-fit :class:`FinetuneModule` around ``seq_encoder`` (any encoder module).

    ``freeze_epochs=k`` trains only the head for k epochs, then the whole encoder (gradual);
    ``freeze_encoder=True`` is a linear probe; ``strategy=Strategy(...)`` gives full control. Every
    other keyword is a :class:`FinetuneModule` argument (optimizer_type, scheduler_type, warmup_epochs,
    encoder_lr_ratio, layer_decay, class_weights, label_smoothing, loss, ...).

    Checkpoints store every argument but the encoder: reload one with
    ``FinetuneModule.load_from_checkpoint(path, seq_encoder=encoder)``, ``encoder`` built as it was here.
    """
    encoder = backbone if backbone is not None else seq_encoder
    return FinetuneModule(
        encoder, n_classes, head_hidden_dims=head_hidden_dims, dropout=dropout, lr=lr,
        freeze_epochs=freeze_epochs, **kwargs,
    )
