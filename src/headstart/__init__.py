"""headstart: fine-tune pretrained PyTorch encoders on downstream tasks.

Python API::

    model = headstart.create_finetune_model(seq_encoder=encoder, n_classes=2, head_hidden_dims=[256, 128],
                                            dropout=0.3, lr=1e-4, freeze_epochs=5)
    pl.Trainer(max_epochs=50).fit(model, train_dl, val_dl)
    embeddings, labels = model.get_embeddings(dl)
"""

from __future__ import annotations

from headstart.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    HeadstartError,
    LayerMapError,
    RunDirError,
)
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
