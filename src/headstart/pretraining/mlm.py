"""Masked-language-model pretraining (Devlin et al., 2019) continued on unlabelled text: domain- and task-adaptive
pretraining (DAPT / TAPT, Gururangan et al., 2020) of a Hugging Face text encoder before ``fit --pretrain``.

Documents: the text column (and text_pair column, each text its own document) of ``data.train``, plus
``objective.text_files`` (csv / tsv / jsonl / parquet: their ``data.text_column``; any other file,
``.txt`` say, is UTF-8 text with one document per line). Blank documents are dropped. When ``data.train`` holds
the label column (task-adaptive pretraining on the file fit will train on), the documents follow fit's own split
of the same config: its training rows train, its val rows validate, its test rows (data.test or
data.test_fraction) are scored, and no row fit evaluates on is ever trained on. Without labels, ``data.val``
gives the validation documents, else a seeded ``data.val_fraction`` of all documents is held out
(``data.split_seed``), and ``data.test`` is scored when set. ``data.train_subset`` samples the training
documents. Each document is tokenized once, truncated to ``data.max_length`` tokens (longer ones lose their
tail: split long texts into lines of text_files).

Masking, per document and draw: ``objective.mask_rate`` of its tokens are predicted, ``rate x tokens`` rounded
half up and at least one (special tokens are never candidates: [CLS], [SEP], [UNK], padding ...). With
``objective.masking: token`` each word piece is picked alone; BERT tokenizers split CJK text into one piece per
character, so on Chinese or Japanese this is character masking. With ``whole_word`` the pieces of a word (the
fast tokenizer's ``word_ids``) are picked together, whole words in random order while they fit the count (at
least one word). A picked token becomes the mask token (80%), a random non-special token (10%) or stays (10%);
the loss is the cross-entropy of the original tokens at the picked positions only.

Masks are drawn from ``(trainer.seed, split, epoch, document)`` (the training batches carry the epoch), never
from the process's RNG history, so a resumed run masks exactly the tokens of an uninterrupted one, whatever the
loader workers. Validation masks the same tokens every epoch, so ``val_loss`` is comparable across epochs and
monitored by default; ``val_masked_acc`` is the share of picked tokens predicted, ``val_perplexity`` is
``exp(val_loss)``. Epoch means weigh each batch by its picked tokens.

The head is BERT's: a dense transform (the model config's ``hidden_act``, LayerNorm with its ``layer_norm_eps``)
and a decoder tied to the encoder's input word embeddings (the weight is read from the encoder at each step, never
registered in the head), with its own bias. It is initialised from ``trainer.seed``, trains at ``optim.lr`` and is
not exported: ``pretrained.safetensors`` holds the encoder, which ``fit --pretrain RUN_DIR`` loads key for key.
A vocabulary extension (``backbone.extend_vocab``) is computed from the training documents and carried in the
export's data state, so fine-tuning rebuilds the same vocabulary.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from headstart.errors import ConfigError, DataError
from headstart.pretraining.engine import Prepared, SelfSupervisedObjective, check_objective_config
from headstart.pretraining.module import ObjectiveModule, StepOutput, WithEpoch
from headstart.pretraining.objectives import register_objective

if TYPE_CHECKING:
    from headstart.backbones import Backbone
    from headstart.config import OptimConfig, RunConfig

__all__ = ["METRICS", "MLMCollator", "MLMHead", "MLMModule", "MLMObjective", "MaskedDocuments", "TokenizedDocuments",
           "corrupt", "count_to_mask", "draw_positions", "load_documents"]

log = logging.getLogger("headstart")

METRICS = {"val_loss": "min", "val_masked_acc": "max", "val_perplexity": "min"}  # logged, and which way is better
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # BERT's replacement of a picked token; the rest stays unchanged


# ----- masking ------------------------------------------------------------------------------------------------
def count_to_mask(n_candidates: int, rate: float) -> int:
    """Tokens picked among ``n_candidates``: ``rate x n`` rounded half up, at least 1 when there is one."""
    n = int(n_candidates)
    return 0 if n <= 0 else min(n, max(1, int(np.floor(rate * n + 0.5))))


def draw_positions(special: np.ndarray, words: np.ndarray | None, rate: float,
                   rng: np.random.Generator) -> np.ndarray:
    """The sorted positions picked in one document: tokens alone (``words`` None) or whole words (``words``: each
    token's word index), never where ``special`` is True."""
    candidates = np.flatnonzero(~special)
    k = count_to_mask(len(candidates), rate)
    if not k:
        return candidates[:0]
    if words is None:
        return np.sort(rng.choice(candidates, size=k, replace=False))
    _, group, sizes = np.unique(words[candidates], return_inverse=True, return_counts=True)
    order = rng.permutation(len(sizes))
    chosen, total = [], 0
    for g in order:  # Google BERT's rule: whole words while they fit the count
        if total + sizes[g] <= k:
            chosen.append(g)
            total += int(sizes[g])
            if total == k:
                break
    return candidates[np.isin(group, chosen or [order[0]])]


def corrupt(ids: np.ndarray, positions: np.ndarray, rng: np.random.Generator, mask_id: int,
            pool: np.ndarray) -> np.ndarray:
    """``ids`` with the picked ``positions`` replaced 80/10/10: the mask token, a random token of ``pool``, kept."""
    u = rng.random(len(positions))
    out = ids.copy()
    out[positions[u < MASK_SHARE]] = mask_id
    random = positions[(u >= MASK_SHARE) & (u < MASK_SHARE + RANDOM_SHARE)]
    out[random] = pool[rng.integers(0, len(pool), size=len(random))]
    return out


class TokenizedDocuments:
    """Documents tokenized once (truncated to ``max_length``): token ids, special-token flags and, for whole-word
    masking, each token's word index. Documents without a maskable token are dropped (``dropped`` counts them)."""

    def __init__(self, texts: Sequence[str], tokenizer: Any, max_length: int, whole_word: bool) -> None:
        if whole_word and not getattr(tokenizer, "is_fast", False):
            raise ConfigError(f"objective.masking 'whole_word' groups word pieces by the fast tokenizer's word_ids, "
                              f"but the tokenizer of this backbone ({type(tokenizer).__name__}) is a slow one. Use "
                              f"objective.masking: token, or a model directory with a tokenizer.json.")
        specials = np.array(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
        self.ids: list[np.ndarray] = []
        self.special: list[np.ndarray] = []
        self.words: list[np.ndarray] | None = [] if whole_word else None
        self.dropped = self.truncated = 0
        for start in range(0, len(texts), 1000):
            encoding = tokenizer(list(texts[start:start + 1000]), truncation=True, max_length=int(max_length),
                                 padding=False, return_attention_mask=False, return_token_type_ids=False)
            for i, row in enumerate(encoding["input_ids"]):
                ids = np.asarray(row, dtype=np.int64)
                special = np.isin(ids, specials)
                if special.all():
                    self.dropped += 1
                    continue
                self.truncated += len(ids) >= int(max_length)
                self.ids.append(ids)
                self.special.append(special)
                if self.words is not None:
                    self.words.append(np.array([-1 if w is None else w for w in encoding.word_ids(i)], np.int64))
        self.lengths = np.array([len(ids) for ids in self.ids], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)


class MaskedDocuments(Dataset):
    """Item ``i``: document ``i``'s corrupted token ids, the picked positions and their original ids, drawn from
    ``(seed, stream, epoch, i)`` when indexed by ``(i, epoch)`` (training) or ``(seed, stream, i)`` (evaluation)."""

    def __init__(self, docs: TokenizedDocuments, rate: float, mask_id: int, pool: np.ndarray, seed: int = 0,
                 stream: int = 0) -> None:
        self.docs, self.rate, self.mask_id, self.pool = docs, float(rate), int(mask_id), pool
        self.seed, self.stream = int(seed), int(stream)
        self.lengths = docs.lengths  # length-grouped batches, longest-first evaluation

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), None)
        seeds = [self.seed, self.stream, index] if epoch is None else [self.seed, self.stream, epoch, index]
        rng = np.random.default_rng(seeds)
        ids = self.docs.ids[index]
        words = None if self.docs.words is None else self.docs.words[index]
        positions = draw_positions(self.docs.special[index], words, self.rate, rng)
        return corrupt(ids, positions, rng, self.mask_id, self.pool), positions, ids[positions]


class MLMCollator:
    """``({input_ids, attention_mask} padded to the batch's longest, picked positions flattened over [B x T],
    their original ids)``: dynamic padding as fit's ``TextCollator`` does it."""

    def __init__(self, pad_token_id: int) -> None:
        from headstart.data import TextCollator

        self.pad = TextCollator(pad_token_id)

    def __call__(self, items: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        inputs = self.pad([{"input_ids": ids} for ids, _, _ in items])
        width = int(inputs["input_ids"].shape[1])
        flat = np.concatenate([positions + row * width for row, (_, positions, _) in enumerate(items)])
        targets = np.concatenate([targets for _, _, targets in items])
        return inputs, torch.from_numpy(flat.astype(np.int64)), torch.from_numpy(targets.astype(np.int64))


# ----- model --------------------------------------------------------------------------------------------------
class MLMHead(nn.Module):
    """BERT's prediction head: dense + activation + LayerNorm, then a decoder whose weight (the tied input word
    embeddings) is passed in at each call, so it stays the encoder's parameter; its own bias."""

    def __init__(self, hidden: int, embedding_dim: int, vocab: int, activation: Any, eps: float, std: float,
                 seed: int) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        self.dense = nn.Linear(hidden, embedding_dim)
        self.act = ACT2FN[activation] if isinstance(activation, str) else activation
        self.norm = nn.LayerNorm(embedding_dim, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab))
        with torch.no_grad():  # from the seed alone: the same head whatever ran before
            self.dense.weight.copy_(torch.randn(self.dense.weight.shape, generator=torch.Generator().manual_seed(seed))
                                    * std)
            self.dense.bias.zero_()

    def forward(self, states: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(self.act(self.dense(states))), embeddings, self.bias)


class MLMModule(ObjectiveModule):
    """The Hugging Face encoder and :class:`MLMHead`, trained on the picked tokens of each batch."""

    def __init__(self, backbone: Backbone, optim: OptimConfig, seed: int = 0) -> None:
        model = getattr(backbone, "model", None)
        if model is None or not callable(getattr(model, "get_input_embeddings", None)):
            raise ConfigError(f"objective mlm predicts tokens from a Hugging Face encoder's token states and its word "
                              f"embeddings, which a {type(backbone).__name__} does not have; use backbone.type: hf "
                              f"(a single-input encoder, not backbone.pair: siamese).")
        config, weight = model.config, model.get_input_embeddings().weight
        head = MLMHead(int(config.hidden_size), int(weight.shape[1]), int(weight.shape[0]),
                       getattr(config, "hidden_act", "gelu"), float(getattr(config, "layer_norm_eps", 1e-12)),
                       float(getattr(config, "initializer_range", 0.02)), seed)
        super().__init__(backbone, optim, head=head)

    def objective_step(self, batch: Any, train: bool) -> StepOutput | None:
        inputs, flat, targets = batch
        if targets.numel() == 0:  # shape only: no device sync
            return None
        model = self.backbone.model
        hidden = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
        states = hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat)  # picked tokens only: [M, D]
        logits = self.objective_head(states, model.get_input_embeddings().weight).float()
        loss = F.cross_entropy(logits, targets)
        metrics = {} if train else {"masked_acc": float((logits.argmax(dim=1) == targets).float().mean())}
        return StepOutput(loss, int(targets.numel()), metrics)

    def _means(self, split: str) -> dict[str, float]:
        means = super()._means(split)
        if split == "val" and "loss" in means:
            means["perplexity"] = math.exp(min(means["loss"], 50.0))
        return means


# ----- data ---------------------------------------------------------------------------------------------------
def _frame_texts(path: str, cfg: RunConfig, where: str, text_column: str, pairs: bool) -> list[str]:
    from headstart.data import load_text_frame
    from headstart.data.readers import detect_format

    d = cfg.data
    fmt = d.format if where.startswith("data.") else "auto"
    names = d.column_names if detect_format(path, fmt, where) in ("csv", "tsv") else None
    frame = load_text_frame(path, text_column=text_column, text_pair_column=d.text_pair_column if pairs else None,
                            label_column=d.label_column if names else None, fmt=fmt, require_labels=False,
                            where=where, column_names=names)
    return frame["text"].tolist() + (frame["text_pair"].tolist() if "text_pair" in frame.columns else [])


def _read_lines(path: str, where: str) -> list[str]:
    from headstart.data.encodings import reencode_hint

    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{where}: the text file '{path}' does not exist (resolved to {file.resolve()}). Fix the path; "
                        f"relative paths are resolved from the current working directory ({Path.cwd()}).")
    try:
        return file.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: '{path}' is not UTF-8 text (byte {exc.start}); {reencode_hint(file)}") from None


def _labelled(cfg: RunConfig) -> bool:
    """Whether data.train holds the label column: then the documents follow fit's split of the same config."""
    from headstart.data import load_text_frame

    d = cfg.data
    if d.column_names is not None:
        return d.label_column in d.column_names
    frame = load_text_frame(d.train, text_column=d.text_column, label_column=d.label_column, fmt=d.format,
                            require_labels=False, where="data.train")
    return "label" in frame.columns and bool(frame["label"].notna().any())


def _kept(texts: list[str]) -> list[str]:
    return [t for t in texts if t.strip()]


def load_documents(cfg: RunConfig, seed: int) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The train / val / (test) documents of the module docstring, and where they came from (summary facts)."""
    from headstart.data.readers import SUFFIXES

    d, files = cfg.data, cfg.objective.text_files
    held: dict[str, list[str]] = {}
    if _labelled(cfg):  # fit's own carve: the rows fit validates and tests on are never trained on here
        from headstart.modalities import get_modality
        from headstart.modalities.text import training_texts

        fit_splits = get_modality(cfg.task).load_splits(cfg, seed)
        pooled = _kept(training_texts(fit_splits.train))
        held = {name: _kept(training_texts(rows)) for name, rows in (("val", fit_splits.val), ("test", fit_splits.test))
                if rows is not None}
    else:
        pooled = _kept(_frame_texts(d.train, cfg, "data.train", d.text_column, pairs=True))
    sources: dict[str, int] = {"data.train": len(pooled)}  # documents kept (not blank) per source
    for i, path in enumerate(files):
        where = f"objective.text_files[{i}]"
        table = any(str(path).lower().endswith(suffix) for suffix in SUFFIXES)  # else: one document per line
        texts = _kept(_frame_texts(path, cfg, where, d.text_column, pairs=False) if table
                      else _read_lines(path, where))
        sources[str(path)] = len(texts)
        pooled += texts
    if not pooled:
        read = f"data.train ('{d.train}', column '{d.text_column}')" + (f" and {len(files)} text file(s)" if files else "")
        raise DataError(f"objective mlm found no text to train on: every document of {read} is empty. Point "
                        f"data.text_column at the column holding the text, or add objective.text_files.")
    splits: dict[str, list[str]] = {}
    if held:
        splits = {"train": pooled, **held}
    elif d.val:
        splits["train"] = pooled
        splits["val"] = _kept(_frame_texts(d.val, cfg, "data.val", d.text_column, pairs=True))
    else:
        if len(pooled) < 2:
            raise DataError(f"objective mlm holds out data.val_fraction of the documents for validation, but there is "
                            f"only {len(pooled)}. Give more text (objective.text_files), or set data.val.")
        order = np.random.default_rng(seed).permutation(len(pooled))
        n_val = min(len(pooled) - 1, max(1, round(d.val_fraction * len(pooled))))
        splits["val"] = [pooled[i] for i in np.sort(order[:n_val])]
        splits["train"] = [pooled[i] for i in np.sort(order[n_val:])]
    if d.test and not held:
        splits["test"] = _kept(_frame_texts(d.test, cfg, "data.test", d.text_column, pairs=True))
    if d.train_subset is not None and d.train_subset < len(splits["train"]):
        keep = np.sort(np.random.default_rng(seed).choice(len(splits["train"]), d.train_subset, replace=False))
        splits["train"] = [splits["train"][i] for i in keep]
    for name in ("val", "test"):
        if name in splits and not splits[name]:
            raise DataError(f"data.{name} ('{getattr(d, name)}') has no text in column '{d.text_column}'; objective mlm "
                            f"needs some to score. Fix data.{name} or remove it.")
    return splits, {"sources": sources}


# ----- the objective ------------------------------------------------------------------------------------------
class MLMObjective(SelfSupervisedObjective):
    """``objective.name: mlm`` for text and Hugging Face encoders; see the module docstring."""

    name = "mlm"
    modalities = ("text",)
    settings = ("mask_rate", "masking", "text_files")

    def check(self, cfg: RunConfig) -> None:
        if cfg.backbone.type != "hf":
            raise ConfigError(f"objective mlm trains a Hugging Face text encoder, but backbone.type is "
                              f"'{cfg.backbone.type}'. Set backbone.type: hf, or use objective.name: supervised.")
        if cfg.backbone.pair == "siamese":
            raise ConfigError("objective mlm trains one encoder on single documents (each text of a pair is its own), "
                              "but backbone.pair is 'siamese'. Remove backbone.pair for pretraining; fit --pretrain "
                              "loads the export into a Siamese model's shared encoder.")
        check_objective_config(cfg, METRICS)

    def prepare(self, cfg: RunConfig, split_seed: int, verbose: bool = True) -> Prepared:
        """Documents -> (extended) vocabulary -> encoder and tokenizer -> masked datasets -> loaders, the module."""
        from headstart.experiments.build import build_configured_backbone, loader_settings, make_loader
        from headstart.modalities import get_modality

        modality, o = get_modality(cfg.task), cfg.objective
        texts, facts = load_documents(cfg, split_seed)
        data_state = modality.vocab_state(cfg, texts["train"])  # backbone.extend_vocab from the training documents
        backbone = build_configured_backbone(cfg, data_state, verbose=verbose)
        tokenizer = backbone.load_tokenizer()
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise ConfigError(f"objective mlm needs a tokenizer with a mask and a pad token; the tokenizer of "
                              f"'{cfg.backbone.name_or_path}' has mask {tokenizer.mask_token!r} and pad "
                              f"{tokenizer.pad_token!r}. Use an encoder trained with masked-language modelling "
                              f"(BERT, RoBERTa, MiniLM ...).")
        module = MLMModule(backbone, cfg.optim, seed=cfg.trainer.seed)
        rows = int(module.objective_head.bias.shape[0])  # random replacements: real, non-special tokens only
        pool = np.setdiff1d(np.arange(min(len(tokenizer), rows)), np.asarray(tokenizer.all_special_ids, np.int64))
        collate = MLMCollator(tokenizer.pad_token_id)
        loaders, sizes = {}, {}
        facts.update(mask_rate=o.mask_rate, masking=o.masking, documents={}, tokens={}, truncated={})
        for stream, name in enumerate(("train", "val", "test")):
            if name not in texts:
                continue
            docs = TokenizedDocuments(texts[name], tokenizer, cfg.data.max_length, o.masking == "whole_word")
            if not len(docs):
                raise DataError(f"The {name} documents tokenize to special tokens only ({docs.dropped} of them); "
                                f"objective mlm has nothing to predict. Check data.text_column and the text files.")
            dataset = MaskedDocuments(docs, o.mask_rate, tokenizer.mask_token_id, pool, cfg.trainer.seed, stream)
            loaders[name] = make_loader(cfg, dataset, collate, train=name == "train")
            if name == "train":  # the same batches, each index with its epoch: new masks every epoch
                loaders[name] = DataLoader(dataset, batch_sampler=WithEpoch(loaders[name].batch_sampler),
                                           collate_fn=collate, **loader_settings(cfg))
            facts["documents"][name], facts["tokens"][name] = len(docs), int(docs.lengths.sum())
            facts["truncated"][name] = int(docs.truncated)
            sizes[name] = f"{len(docs)} documents ({facts['tokens'][name]} tokens)"
        if facts["truncated"]["train"]:
            log.info("mlm: %d of %d training documents reach data.max_length=%d tokens and lose their tail; raise it "
                     "or split long texts into lines.", facts["truncated"]["train"], facts["documents"]["train"],
                     cfg.data.max_length)
        return Prepared(module, loaders, data_state, sizes, facts)


register_objective(MLMObjective())
