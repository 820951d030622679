"""Does the tokenizer read this text? The ``[UNK]`` rate and the truncation rate of the training rows.

An English word-piece vocabulary maps most Chinese characters to ``[UNK]`` (``太慢了，差评`` becomes
``太 [UNK] [UNK] ， [UNK] [UNK]``): the model then trains on noise and nothing says so. ``measure_coverage``
tokenizes a seeded sample of the training rows without truncation and counts the unknown pieces (special
tokens excluded), the rows longer than ``data.max_length`` and the length that would cover 95% of the rows.
``coverage_error`` turns a rate above ``data.max_unk_rate`` into an error with the rate, two examples and the
fixes, unless ``data.accept_unk`` says the risk is taken.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["TokenizerCoverage", "coverage_error", "measure_coverage"]

SAMPLE_ROWS = 2_000


@dataclass
class TokenizerCoverage:
    rows: int  # rows measured (a seeded sample of the training split)
    tokens: int  # their word pieces, special tokens excluded
    unk_rate: float  # share of those pieces that are the unknown token
    rows_with_unk: float  # share of rows with at least one
    truncated_rate: float  # share of rows longer than max_length (special tokens included)
    max_length: int
    length_p95: int  # the max_length that would keep 95% of the rows whole
    examples: list[dict[str, str]] = field(default_factory=list)  # the rows with the most unknown pieces
    # backbone.extend_vocab: the base tokenizer's unknown-token rate, and how many tokens were added to it
    unk_rate_before_extension: float | None = None
    added_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for the console: the two rates and what would cover 95% of the rows."""
        extended = ("" if self.added_tokens is None else
                    f" with {self.added_tokens} added tokens (backbone.extend_vocab; "
                    f"{self.unk_rate_before_extension or 0.0:.1%} before)")
        return (f"Tokenizer coverage ({self.rows} training rows): {self.unk_rate:.1%} of word pieces are unknown"
                f"{extended} ({self.rows_with_unk:.0%} of rows have one); {self.truncated_rate:.1%} of rows are cut "
                f"at data.max_length {self.max_length} (95% fit in {self.length_p95}).")


def measure_coverage(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int,
                     sample: int = SAMPLE_ROWS, seed: int = 0) -> TokenizerCoverage | None:
    """Coverage of ``texts`` (and ``pairs``) by ``tokenizer``; None when it has no unknown token to count."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if not texts:
        return None
    pick = np.sort(np.random.default_rng(seed).permutation(len(texts))[:sample])
    chosen = [texts[i] for i in pick]
    chosen_pairs = [pairs[i] for i in pick] if pairs is not None else None
    encoding = tokenizer(chosen, chosen_pairs, truncation=False, padding=False, return_attention_mask=False,
                         return_special_tokens_mask=True, verbose=False)
    lengths = np.array([len(ids) for ids in encoding["input_ids"]])
    unk_counts, pieces = [], 0
    for ids, special in zip(encoding["input_ids"], encoding["special_tokens_mask"], strict=True):
        real = [t for t, s in zip(ids, special, strict=True) if not s]
        pieces += len(real)
        unk_counts.append(sum(1 for t in real if unk is not None and t == unk))
    counts = np.array(unk_counts)
    worst = [int(i) for i in np.argsort(-counts, kind="stable")[:2] if counts[i] > 0]
    examples = [{"text": _short(chosen[i]),
                 "read_as": _short(" ".join(tokenizer.convert_ids_to_tokens(
                     [t for t, s in zip(encoding["input_ids"][i], encoding["special_tokens_mask"][i], strict=True)
                      if not s])))}
                for i in worst]
    return TokenizerCoverage(
        rows=len(chosen), tokens=int(pieces), unk_rate=round(float(counts.sum()) / max(1, pieces), 5),
        rows_with_unk=round(float((counts > 0).mean()), 5), truncated_rate=round(float((lengths > max_length).mean()), 5),
        max_length=int(max_length), length_p95=int(np.ceil(np.percentile(lengths, 95))), examples=examples,
    )


def coverage_error(coverage: TokenizerCoverage, max_unk_rate: float, model: str) -> str | None:
    """The error message when too many pieces are unknown (None: the tokenizer reads the text)."""
    if coverage.unk_rate <= max_unk_rate:
        return None
    shown = "; ".join(f"'{e['text']}' is read as '{e['read_as']}'" for e in coverage.examples)
    return (
        f"The tokenizer of '{model}' does not know {coverage.unk_rate:.1%} of the word pieces of the training text "
        f"(limit data.max_unk_rate = {max_unk_rate:.1%}; {coverage.rows_with_unk:.0%} of {coverage.rows} sampled "
        f"rows have one): {shown}. The model would learn from unknown-token noise. Fixes: (1) a model whose "
        f"vocabulary covers this language (backbone.name_or_path, a local Hugging Face model directory); (2) extend "
        f"the vocabulary with the missing characters or words: backbone.extend_vocab: {{from: train, min_freq: 2}} "
        f"(new embedding rows, trained during fine-tuning; use strategy full or partial); (3) continue pretraining the encoder on unlabelled text of this domain (headstart pretrain). To "
        f"train anyway, set data.accept_unk: true."
    )


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
