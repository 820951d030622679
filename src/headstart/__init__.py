"""headstart: fine-tune pretrained PyTorch encoders on downstream tasks.

Python API::

    model = headstart.create_finetune_model(seq_encoder=encoder, n_classes=2, head_hidden_dims=[256, 128],
                                            dropout=0.3, lr=1e-4, freeze_epochs=5)
    pl.Trainer(max_epochs=50).fit(model, train_dl, val_dl)
    embeddings, labels = model.get_embeddings(dl)

The model API (``FinetuneModule``, ``create_finetune_model``, ``Strategy``, ``LoraSpec``) is imported on
first use (PEP 562), so ``import headstart`` and the CLI's ``--help`` do not pay for torch; the error
classes are plain Python and load eagerly.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from headstart.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    HeadstartError,
    LayerMapError,
    RunDirError,
)

if TYPE_CHECKING:  # what type checkers and IDEs see; at runtime __getattr__ imports these on first use
    from headstart.strategies import LoraSpec, Strategy
    from headstart.train.api import create_finetune_model
    from headstart.train.module import FinetuneModule

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "FinetuneModule",
    "HeadstartError",
    "LayerMapError",
    "LoraSpec",
    "RunDirError",
    "Strategy",
    "__version__",
    "create_finetune_model",
]

# Public name -> module that defines it; these import torch, so they load when first asked for.
_LAZY = {
    "FinetuneModule": "headstart.train.module",
    "create_finetune_model": "headstart.train.api",
    "LoraSpec": "headstart.strategies",
    "Strategy": "headstart.strategies",
}


def __getattr__(name: str) -> Any:
    """Import a torch-backed public name on first access and keep it as a module attribute."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'headstart' has no attribute '{name}'")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
