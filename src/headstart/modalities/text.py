"""Text classification (single texts or pairs) from csv / tsv / parquet / jsonl with a Hugging Face encoder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from headstart.errors import ConfigError
from headstart.modalities.base import Inputs, Modality, register_modality
from headstart.modalities.pairs import resolve_pair

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from headstart.backbones import Backbone
    from headstart.config import RunConfig

__all__ = ["TextModality", "build_text_loaders"]


def build_text_loaders(cfg: RunConfig, frames: dict[str, Any], tokenizer: Any) -> dict[str, DataLoader]:
    """Tokenize each split once; dynamic padding per batch; seeded length-grouped training batches."""
    from headstart.data import TextClassificationDataset, TextCollator
    from headstart.experiments.build import make_loader

    collate = TextCollator(pad_token_id=tokenizer.pad_token_id or 0)
    return {
        split: make_loader(cfg, TextClassificationDataset(frame, tokenizer, cfg.data.max_length,
                                                          siamese=cfg.backbone.pair == "siamese"),
                           collate, train=split == "train")
        for split, frame in frames.items() if frame is not None
    }


class TextModality(Modality):
    """Rows are frames with columns text, [text_pair], label (int64), row (the file's row number)."""

    name, task = "text", "text_classification"
    kinds = ("classification", "regression")

    def check(self, cfg: RunConfig, training: bool = True) -> None:
        if training and cfg.backbone.type != "hf":
            raise ConfigError(
                f"backbone.type '{cfg.backbone.type}' cannot be used with task '{cfg.task}' from a config: text "
                f"classification tokenizes its input, so it needs backbone.type 'hf'. Fine-tune other encoders "
                f"through the Python API (headstart.create_finetune_model + pl.Trainer); `headstart inspect` "
                f"already shows their layer map."
            )
        resolve_pair(cfg, cfg.data.text_pair_column is not None, image=False)

    def load_splits(self, cfg: RunConfig, seed: int) -> Any:
        from headstart.data import load_text_splits

        d = cfg.data
        return load_text_splits(
            train=d.train, val=d.val, test=d.test, text_column=d.text_column, label_column=d.label_column,
            text_pair_column=d.text_pair_column, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
            train_subset=d.train_subset, seed=seed, fmt=d.format, column_names=d.column_names,
            regression=cfg.is_regression, standardize=cfg.loss.standardize,
        )

    def labels(self, rows: pd.DataFrame) -> np.ndarray:
        return rows["label"].to_numpy()

    def row_ids(self, rows: pd.DataFrame) -> np.ndarray:
        return rows["row"].to_numpy().astype(np.int64)

    def take(self, rows: pd.DataFrame, idx: np.ndarray) -> pd.DataFrame:
        return rows.iloc[idx].reset_index(drop=True)

    def loaders(self, cfg: RunConfig, parts: dict[str, Any], backbone: Backbone) -> dict[str, DataLoader]:
        return build_text_loaders(cfg, parts, backbone.load_tokenizer())

    def coverage(self, cfg: RunConfig, train: pd.DataFrame, backbone: Backbone, seed: int) -> Any:
        from headstart.data.text_coverage import measure_coverage

        pairs = train["text_pair"].astype(str).tolist() if "text_pair" in train.columns else None
        return measure_coverage(backbone.load_tokenizer(), train["text"].astype(str).tolist(), pairs,
                                cfg.data.max_length, seed=seed)

    def read_inputs(self, loaded: Any, path: str | Path, require_labels: bool) -> Inputs:
        from headstart.data import TextClassificationDataset, TextCollator, load_text_frame
        from headstart.data.readers import SUFFIXES
        from headstart.experiments.build import make_loader

        d, tokenizer = loaded.cfg.data, loaded.model.backbone.load_tokenizer()
        # A file named like the training data (.txt read as tsv, say) is read the same way; others by suffix.
        fmt = "auto" if any(str(path).lower().endswith(s) for s in SUFFIXES) else d.format
        frame = load_text_frame(
            str(path), text_column=d.text_column, text_pair_column=d.text_pair_column, label_column=d.label_column,
            label_map=loaded.label_map, fmt=fmt, require_labels=require_labels, where="--data",
            column_names=d.column_names,
        )
        dataset = TextClassificationDataset(frame, tokenizer, d.max_length, siamese=loaded.cfg.backbone.pair == "siamese")
        labels = frame["label"].to_numpy() if "label" in frame else None
        loader = make_loader(loaded.cfg, dataset, TextCollator(tokenizer.pad_token_id or 0), train=False)
        return Inputs(loader, frame["row"].to_numpy(), labels)


register_modality(TextModality())
