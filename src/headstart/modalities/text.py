"""Text classification (single texts or pairs) from csv / tsv / parquet / jsonl with a Hugging Face encoder.

The run's data state is the vocabulary extension (``backbone.extend_vocab``, see
headstart.data.vocab_extension): ``{"vocab_extension": {"added": [tokens], "base_size": N, "source": "train" |
path, "min_freq": M, "max_new": K}}``, or None without one. It is decided once from the training split (or
adopted from ``cfg.pretrain``'s export), kept in ``data_state.json``, and rebuilt by :meth:`build_backbone`, so
evaluate / predict / embed read text with the same token ids. The extended tokenizer is also saved in the run's
``tokenizer/`` folder for use outside headstart.
"""

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

__all__ = ["TextModality", "build_text_loaders", "training_texts"]

VOCAB_KEY = "vocab_extension"


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
    baseline = "tfidf_logreg"  # headstart.baselines: the classic row of compare / fit --baseline

    def check(self, cfg: RunConfig, training: bool = True) -> None:
        if training and cfg.backbone.type != "hf":
            raise ConfigError(
                f"backbone.type '{cfg.backbone.type}' cannot be used with task '{cfg.task}' from a config: text "
                f"classification tokenizes its input, so it needs backbone.type 'hf'. Fine-tune other encoders "
                f"through the Python API (headstart.create_finetune_model + pl.Trainer); `headstart inspect` "
                f"already shows their layer map."
            )
        resolve_pair(cfg, cfg.data.text_pair_column is not None, image=False)

    def settle(self, cfg: RunConfig, splits: Any) -> None:
        splits.state = self.vocab_state(cfg, training_texts(splits.train))

    def vocab_state(self, cfg: RunConfig, texts: list[str]) -> dict[str, Any] | None:
        """The data state of a run on ``texts`` (the training text): the vocabulary of ``cfg.pretrain``'s export
        when it extended one (its embedding rows mean those tokens), else ``backbone.extend_vocab``'s tokens
        found in ``texts`` (or in its ``from`` file), else None. :meth:`build_backbone` builds the model for it."""
        adopted = _pretrained_vocab(cfg)
        ext = cfg.backbone.extend_vocab
        if adopted is not None:
            if ext is not None:
                print(f"backbone.extend_vocab: using the vocabulary of the pretrained encoder '{cfg.pretrain}' "
                      f"({len(adopted['added'])} added tokens) instead of extending it again.")
            return {VOCAB_KEY: adopted}
        if ext is None or cfg.backbone.type != "hf":
            return None
        from headstart.backbones.hf import load_base_tokenizer, resolve_model_path
        from headstart.data.vocab_extension import find_new_tokens

        name = resolve_model_path(cfg.backbone.name_or_path)
        tokenizer = load_base_tokenizer(name)
        source = texts if ext.from_ == "train" else _read_vocab_file(cfg, ext.from_)
        added = find_new_tokens(tokenizer, source, ext.min_freq, ext.max_new, what=f"'{name}'")
        return {VOCAB_KEY: {"added": added, "base_size": len(tokenizer), "source": ext.from_,
                            "min_freq": ext.min_freq, "max_new": ext.max_new}}

    def data_state(self, splits: Any) -> dict[str, Any] | None:
        return getattr(splits, "state", None)

    def save_state(self, run: Path, state: dict[str, Any] | None, backbone: Backbone | None = None) -> None:
        """``data_state.json``, and the extended tokenizer in ``tokenizer/`` (``AutoTokenizer.from_pretrained``
        reads it) when the vocabulary was extended."""
        super().save_state(run, state, backbone)
        if state is not None and state.get(VOCAB_KEY) and backbone is not None:
            tokenizer = backbone.load_tokenizer()
            if tokenizer is not None:
                tokenizer.save_pretrained(run / "tokenizer")

    def build_backbone(self, cfg: RunConfig, state: dict[str, Any] | None) -> Backbone:
        from headstart.backbones import HFBackbone, SiameseBackbone, build_backbone

        vocab = (state or {}).get(VOCAB_KEY)
        b = cfg.backbone
        if vocab is None or b.type != "hf":
            return build_backbone(b)
        encoder = HFBackbone(b.name_or_path, pooling=b.pooling, blocks=b.blocks, added_tokens=vocab["added"],
                             base_size=vocab["base_size"])
        return SiameseBackbone(encoder, b.fusion) if b.pair == "siamese" else encoder

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
        """Measured with the tokenizer the model reads with (extended or not); an extended one also reports the
        base tokenizer's unknown-token rate and how many tokens were added."""
        from headstart.data.text_coverage import measure_coverage

        pairs = train["text_pair"].astype(str).tolist() if "text_pair" in train.columns else None
        texts = train["text"].astype(str).tolist()
        tokenizer = backbone.load_tokenizer()
        coverage = measure_coverage(tokenizer, texts, pairs, cfg.data.max_length, seed=seed)
        added = _added_tokens(backbone)
        if coverage is not None and added is not None:
            before = measure_coverage(_encoder(backbone).base_tokenizer, texts, pairs, cfg.data.max_length,
                                      seed=seed)
            coverage.unk_rate_before_extension = None if before is None else before.unk_rate
            coverage.added_tokens = added
        return coverage

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


def training_texts(train: pd.DataFrame) -> list[str]:
    """The texts of a split a vocabulary extension counts: the text column, then the text_pair column."""
    texts = train["text"].astype(str).tolist()
    if "text_pair" in train.columns:
        texts += train["text_pair"].astype(str).tolist()
    return texts


def _read_vocab_file(cfg: RunConfig, path: str) -> list[str]:
    """``backbone.extend_vocab.from`` as texts: a table (csv / tsv / parquet / jsonl suffix) gives its
    data.text_column (and data.text_pair_column) values; any other file one text per line (UTF-8)."""
    from headstart.data.readers import SUFFIXES, read_table
    from headstart.errors import DataError

    where = "backbone.extend_vocab.from"
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{where} '{path}' is not a file. Give 'train' (the training split's text) or a text file "
                          f"(one document per line) or a csv / tsv / parquet / jsonl file with the column "
                          f"data.text_column ('{cfg.data.text_column}').")
    if any(file.name.lower().endswith(s) for s in SUFFIXES):
        d = cfg.data
        columns = [c for c in (d.text_column, d.text_pair_column) if c is not None]
        frame = read_table(file, "auto", where, text_columns=columns)
        present = [c for c in columns if c in frame.columns]
        if not present:
            raise DataError(f"{where} '{path}' has no column '{d.text_column}' (data.text_column); its columns are "
                            f"{list(frame.columns)[:10]}. Name a file with that column, or a plain text file with "
                            f"one document per line.")
        return [str(v) for c in present for v in frame[c].dropna()]
    try:
        return file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{where} '{path}' is not UTF-8 text ({exc.reason} at byte {exc.start}). Re-save it as "
                        f"UTF-8, one document per line.") from None


def _pretrained_vocab(cfg: RunConfig) -> dict[str, Any] | None:
    """The vocabulary extension ``cfg.pretrain``'s export was trained with (its record's data_state), or None."""
    if not cfg.pretrain:
        return None
    from headstart.train.pretrained import read_pretrained_record

    return ((read_pretrained_record(cfg.pretrain) or {}).get("data_state") or {}).get(VOCAB_KEY)


def _encoder(backbone: Backbone) -> Any:
    return getattr(backbone, "encoder", backbone)  # a SiameseBackbone's shared encoder


def _added_tokens(backbone: Backbone) -> int | None:
    """How many tokens the backbone's vocabulary extension added; None when it has none."""
    added = getattr(_encoder(backbone), "added_tokens", None)
    return len(added) if added else None


register_modality(TextModality())
