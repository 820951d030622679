"""Text classification data: files -> checked, encoded splits -> tokenized dataset -> padded batches.

All checks run before any model is built, so a wrong column name or an unseen label fails in a second
with a message naming the file and the config key, not after an hour of training. Every frame keeps a
``row`` column (0-based row in its source file) so predictions and errors can point back at the data.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from headstart.data.labels import LabelMap
from headstart.data.readers import read_table
from headstart.data.splits import stratified_split, stratified_subset
from headstart.data.targets import RegressionTargets, strata
from headstart.errors import ConfigError, DataError, did_you_mean, format_choices

__all__ = [
    "TextClassificationDataset",
    "TextCollator",
    "TextSplits",
    "load_text_frame",
    "load_text_splits",
    "tokenizer_settings",
]

_TOKENIZE_CHUNK = 1024


@dataclass
class TextSplits:
    """Encoded train/val/(test) frames with columns text, [text_pair], label (int64), row."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame | None
    label_map: LabelMap | RegressionTargets
    # the run's data state, settled by TextModality.settle (backbone.extend_vocab's added tokens) or None
    state: dict[str, Any] | None = None


def load_text_splits(
    *,
    train: str | os.PathLike[str],
    val: str | os.PathLike[str] | None,
    test: str | os.PathLike[str] | None,
    text_column: str,
    label_column: str,
    text_pair_column: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    train_subset: int | None = None,
    seed: int = 42,
    fmt: str = "auto",
    column_names: Sequence[str] | None = None,
    regression: bool = False,
    standardize: bool = True,
) -> TextSplits:
    """Read, split, subsample and label-encode the data of a text classification (or regression) run.

    Carved fractions are fractions of the whole training file (0.1 + 0.1 gives 80/10/10), taken with a
    stratified, seeded split; ``train_subset`` then subsamples the remaining training rows only. The label
    map is built from the final training rows, so a validation label unseen in training is an error. With
    ``regression`` the labels are numbers (float32; splits stratified by quantile bins of the target) and the
    map holds the training split's mean / std (:class:`~headstart.data.targets.RegressionTargets`).
    """
    _check_settings(val, test, val_fraction, test_fraction, train_subset)
    columns = {"data.text_column": text_column, "data.label_column": label_column}
    if text_pair_column is not None:
        columns["data.text_pair_column"] = text_pair_column
    _check_distinct_columns(columns)

    pool = _read_split(train, fmt, "data.train", columns, column_names)
    train_where = f"data.train ({train}), column '{label_column}'"

    def label_map_of(frame: pd.DataFrame) -> LabelMap | RegressionTargets:
        rows = frame["row"].to_numpy()
        if regression:
            return RegressionTargets.from_labels(frame["label"], label_column, train_where, rows, standardize)
        return LabelMap.from_labels(frame["label"], train_where, rows=rows)

    label_map_of(pool)  # empty (or, for regression, non-numeric) labels anywhere in the file
    n_file = len(pool)

    if test is not None:
        test_raw: pd.DataFrame | None = _read_split(test, fmt, "data.test", columns, column_names)
        test_where = f"data.test ({test}), column '{label_column}'"
    elif test_fraction > 0:
        pool, test_raw = _carve(pool, test_fraction, n_file, seed, "test", train, regression)
        test_where = (
            f"the test split carved from data.train ({train}) with data.test_fraction={test_fraction}"
        )
    else:
        test_raw, test_where = None, ""

    if val is not None:
        val_raw = _read_split(val, fmt, "data.val", columns, column_names)
        val_where = f"data.val ({val}), column '{label_column}'"
    else:
        pool, val_raw = _carve(pool, val_fraction, n_file, seed + 1, "val", train, regression)
        val_where = f"the val split carved from data.train ({train}) with data.val_fraction={val_fraction}"

    if train_subset is not None and train_subset < len(pool):
        keep = stratified_subset(strata(pool["label"], regression), train_subset, seed + 2)
        pool = pool.iloc[keep].reset_index(drop=True)

    label_map = label_map_of(pool)
    if isinstance(label_map, LabelMap) and label_map.n_classes < 2:
        raise DataError(
            f"{train_where} has only one class ({label_map.classes[0]!r}) in its {len(pool)} training rows: "
            f"cannot train a classifier on one class. Check that data.label_column names the label column, "
            f"and use training data with at least two classes (or a larger data.train_subset)."
        )
    splits = {"train": (pool, train_where, False), "val": (val_raw, val_where, val is None)}
    if test_raw is not None:
        splits["test"] = (test_raw, test_where, test is None)
    encoded: dict[str, pd.DataFrame] = {}
    for name, (frame, where, carved) in splits.items():
        frame = frame.copy()
        frame["label"] = label_map.encode(frame["label"], where, rows=frame["row"].to_numpy())
        if name != "train" and isinstance(label_map, LabelMap):
            _check_two_classes(frame, name, where, carved, label_map)
        encoded[name] = frame.reset_index(drop=True)
    return TextSplits(encoded["train"], encoded["val"], encoded.get("test"), label_map)


def load_text_frame(
    path: str | os.PathLike[str],
    *,
    text_column: str,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    label_map: LabelMap | RegressionTargets | None = None,
    fmt: str = "auto",
    require_labels: bool = False,
    where: str = "data.path",
    column_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read a new file for evaluate/predict/embed: columns text, [text_pair], [label], row.

    Labels are optional unless ``require_labels``; when the label column is present and ``label_map`` is
    given they are encoded to int64 (unseen labels are an error), otherwise kept as read.
    """
    if require_labels and label_column is None:
        raise ConfigError(
            f"Labels are required to score {where} ({path}), but no label column is configured. Set "
            f"data.label_column to the column holding the true labels."
        )
    columns = {"data.text_column": text_column}
    if text_pair_column is not None:
        columns["data.text_pair_column"] = text_pair_column
    frame = read_table(path, fmt, where, text_columns=[c for c in (text_column, text_pair_column) if c],
                       column_names=column_names,
                       optional_columns=(label_column,) if label_column and not require_labels else ())
    if label_column is not None and (require_labels or label_column in frame.columns):
        columns["data.label_column"] = label_column
    _check_distinct_columns(columns)
    frame = _select_columns(frame, columns, path, where)
    if "label" in frame.columns and label_map is not None:
        frame["label"] = label_map.encode(
            frame["label"], f"{where} ({path}), column '{label_column}'", rows=frame["row"].to_numpy()
        )
    return frame


class TextClassificationDataset(Dataset):
    """Tokenizes every row once up front (fast tokenizers batch well); items are unpadded token lists.

    Text pairs (a ``text_pair`` column) go into one input by default (cross-encoder: ``[CLS] a [SEP] b``);
    with ``siamese`` each side is tokenized alone and items are ``{"a": {...}, "b": {...}}`` for a
    shared encoder (:class:`~headstart.backbones.SiameseBackbone`).
    """

    def __init__(self, frame: pd.DataFrame, tokenizer: Any, max_length: int, siamese: bool = False) -> None:
        if "text" not in frame.columns:
            raise DataError(
                f"The frame given to TextClassificationDataset has no 'text' column (columns: "
                f"{format_choices(frame.columns)}). Build it with load_text_splits or load_text_frame."
            )
        if int(max_length) < 1:
            raise ConfigError(f"max_length must be a positive number of tokens, got {max_length!r}.")
        texts = _texts(frame, "text")
        pairs = _texts(frame, "text_pair") if "text_pair" in frame.columns else None
        if siamese and pairs is None:
            raise DataError("A Siamese text model needs pairs: the frame has no 'text_pair' column. Set "
                            "data.text_pair_column to the column holding the second text.")
        self.siamese = bool(siamese)
        if self.siamese:
            self.input_ids, self.token_type_ids = _tokenize(tokenizer, texts, None, max_length)
            self.input_ids_b, self.token_type_ids_b = _tokenize(tokenizer, pairs, None, max_length)
        else:
            self.input_ids, self.token_type_ids = _tokenize(tokenizer, texts, pairs, max_length)
            self.input_ids_b, self.token_type_ids_b = None, None
        self.labels: list[int] | list[float] | None = None
        if "label" in frame.columns:
            if pd.api.types.is_float_dtype(frame["label"]):  # regression targets (RegressionTargets.encode)
                self.labels = frame["label"].to_numpy(dtype=np.float32).tolist()
            elif not pd.api.types.is_integer_dtype(frame["label"]):
                raise DataError(
                    f"The 'label' column given to TextClassificationDataset holds {frame['label'].dtype} values, "
                    f"not class indices. Encode it first with LabelMap.encode (load_text_splits does this)."
                )
            else:
                self.labels = frame["label"].to_numpy(dtype=np.int64).tolist()
        self.lengths = np.array([len(ids) for ids in self.input_ids], dtype=np.int64)
        if self.input_ids_b is not None:  # a pair batch costs its longer side
            self.lengths = np.maximum(self.lengths, [len(ids) for ids in self.input_ids_b])
        self.preprocessing = tokenizer_settings(tokenizer, int(max_length), pairs is not None)
        if self.siamese:
            self.preprocessing["siamese"] = True

    def fingerprint(self) -> str:
        """Hash of exactly what the encoder sees (token ids and types): the data part of a cache key."""
        from headstart.cache.key import array_digest

        parts = [_flat(self.input_ids), _flat(self.token_type_ids)]
        if self.input_ids_b is not None:  # both sides' own lengths keep the row boundaries in the hash
            side_lengths = np.array([[len(a), len(b)] for a, b in zip(self.input_ids, self.input_ids_b, strict=True)])
            parts += [side_lengths, _flat(self.input_ids_b), _flat(self.token_type_ids_b)]
        return array_digest(self.lengths, *parts)

    def __len__(self) -> int:
        return len(self.input_ids)

    def _side(self, ids: list[list[int]], types: list[list[int]] | None, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"input_ids": ids[index]}
        if types is not None:
            item["token_type_ids"] = types[index]
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.input_ids_b is not None:
            item = {"a": self._side(self.input_ids, self.token_type_ids, index),
                    "b": self._side(self.input_ids_b, self.token_type_ids_b, index)}
        else:
            item = self._side(self.input_ids, self.token_type_ids, index)
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item


def _texts(frame: pd.DataFrame, column: str) -> list[str]:
    """One string per row; a missing value is a DataError naming the rows (the tokenizer would crash on it)."""
    values = frame[column].to_numpy(dtype=object)
    missing = np.flatnonzero(pd.isna(values))
    if len(missing):
        if "row" in frame.columns:
            where = "data rows " + ", ".join(str(int(r) + 1) for r in frame["row"].to_numpy()[missing[:5]])
            where += " of the file, counting from 1 after the header"
        else:
            where = "positions " + ", ".join(str(int(r)) for r in missing[:5]) + " (0-based)"
        raise DataError(
            f"The '{column}' column given to TextClassificationDataset has {len(missing)} missing value(s) "
            f"({where}{', ...' if len(missing) > 5 else ''}), but the tokenizer needs a string for every row. "
            f"Fill them (frame['{column}'] = frame['{column}'].fillna('')) or drop those rows; load_text_splits "
            f"and load_text_frame do this for you (a missing text becomes '' with a warning)."
        )
    return [v if isinstance(v, str) else str(v) for v in values]


def _tokenize(tokenizer: Any, texts: list[str], pairs: list[str] | None,
              max_length: int) -> tuple[list[list[int]], list[list[int]] | None]:
    input_ids: list[list[int]] = []
    token_type_ids: list[list[int]] = []
    for start in range(0, len(texts), _TOKENIZE_CHUNK):
        stop = start + _TOKENIZE_CHUNK
        encoding = tokenizer(
            texts[start:stop],
            pairs[start:stop] if pairs is not None else None,
            truncation=True,
            max_length=int(max_length),
            padding=False,
            return_attention_mask=False,
        )
        input_ids.extend(list(ids) for ids in encoding["input_ids"])
        if "token_type_ids" in encoding:
            token_type_ids.extend(list(ids) for ids in encoding["token_type_ids"])
    return input_ids, token_type_ids or None


def _flat(rows: list[list[int]] | None) -> np.ndarray | None:
    if rows is None:
        return None
    return np.fromiter((t for ids in rows for t in ids), dtype=np.int64, count=sum(len(ids) for ids in rows))


def tokenizer_settings(tokenizer: Any, max_length: int, pairs: bool) -> dict[str, Any]:
    """What decides the token ids besides the text: recorded in feature-cache keys."""
    from headstart.cache.key import array_digest

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        spec = backend.to_str()
    else:  # slow tokenizers: the vocabulary and the class say most of it
        spec = repr(sorted(tokenizer.get_vocab().items())) if hasattr(tokenizer, "get_vocab") else repr(tokenizer)
    return {
        "tokenizer": type(tokenizer).__name__,
        "tokenizer_digest": array_digest(np.frombuffer(spec.encode(), dtype=np.uint8)),
        "max_length": int(max_length),
        "truncation": True,
        "pairs": bool(pairs),
    }


class TextCollator:
    """Pads a batch to its longest item (right padding), so short batches cost short compute."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        if pad_token_id is None:
            raise ConfigError(
                "The tokenizer has no pad token, so batches cannot be padded. Give it one before building "
                "the collator, e.g. tokenizer.pad_token = tokenizer.eos_token."
            )
        if pad_to_multiple_of is not None and int(pad_to_multiple_of) < 1:
            raise ConfigError(
                f"pad_to_multiple_of must be a positive integer or None, got {pad_to_multiple_of!r}."
            )
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = int(pad_to_multiple_of) if pad_to_multiple_of else None

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if features and "a" in features[0]:  # Siamese pairs: each side padded to its own longest item
            batch: dict[str, Any] = {side: self._pad([f[side] for f in features]) for side in ("a", "b")}
            if "labels" in features[0]:
                batch["labels"] = _label_tensor([f["labels"] for f in features])
            return batch
        batch = self._pad(features)
        if features and "labels" in features[0]:
            batch["labels"] = _label_tensor([f["labels"] for f in features])
        return batch

    def _pad(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        width = max(lengths, default=0)
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = np.full((len(features), width), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(features), width), dtype=np.int64)
        with_types = bool(features) and "token_type_ids" in features[0]
        token_type_ids = np.zeros((len(features), width), dtype=np.int64)
        for i, (feature, length) in enumerate(zip(features, lengths, strict=True)):
            input_ids[i, :length] = feature["input_ids"]
            attention_mask[i, :length] = 1
            if with_types:
                token_type_ids[i, :length] = feature["token_type_ids"]
        batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
        if with_types:
            batch["token_type_ids"] = torch.from_numpy(token_type_ids)
        return batch


def _check_settings(
    val: object, test: object, val_fraction: float, test_fraction: float, train_subset: int | None
) -> None:
    """Fraction and subset settings, all problems reported together."""
    problems = []
    if val is None and not 0.0 < val_fraction < 1.0:
        problems.append(
            f"data.val_fraction is {val_fraction!r} but must be between 0 and 1 (exclusive) when "
            f"data.val is not set, e.g. 0.1"
        )
    if test is None and not 0.0 <= test_fraction < 1.0:
        problems.append(
            f"data.test_fraction is {test_fraction!r} but must be in [0, 1), e.g. 0.1 or 0 for no test split"
        )
    carved = (val_fraction if val is None else 0.0) + (test_fraction if test is None else 0.0)
    if not problems and carved >= 1.0:
        problems.append(
            f"data.val_fraction + data.test_fraction is {carved:g}, which leaves no training rows; "
            f"keep the sum below 1, e.g. 0.1 + 0.1"
        )
    if train_subset is not None and (isinstance(train_subset, bool) or int(train_subset) < 1):
        problems.append(
            f"data.train_subset is {train_subset!r} but must be a positive number of rows (or unset)"
        )
    if problems:
        raise ConfigError("; ".join(problems) + ".")


def _check_distinct_columns(columns: dict[str, str]) -> None:
    """One column configured as two roles (text and label) would silently train on the labels as text."""
    keys = list(columns)
    for i, key in enumerate(keys):
        for other in keys[i + 1:]:
            if str(columns[key]) == str(columns[other]):
                raise ConfigError(
                    f"{key} and {other} are both {columns[key]!r}, but each must name its own column of the data "
                    f"file. Set {other} (or {key}) to the column that holds its values."
                )


def _read_split(path: str | os.PathLike[str], fmt: str, where: str, columns: dict[str, str],
                column_names: Sequence[str] | None = None) -> pd.DataFrame:
    text_columns = [c for key, c in columns.items() if key != "data.label_column"]
    frame = read_table(path, fmt, where, text_columns=text_columns, column_names=column_names)
    return _select_columns(frame, columns, path, where)


def _select_columns(
    frame: pd.DataFrame, columns: dict[str, str], path: str | os.PathLike[str], where: str
) -> pd.DataFrame:
    """Check the configured columns exist, then build text/[text_pair]/[label]/row with clean text."""
    available = [str(c) for c in frame.columns]
    missing = {key: name for key, name in columns.items() if str(name) not in available}
    if missing:
        what = " and ".join(f"no column '{name}' ({key})" for key, name in missing.items())
        hints = "".join(dict.fromkeys(did_you_mean(name, available) for name in missing.values()))
        headerless = any(len(c) > 40 or _is_number(c) for c in available)
        header_hint = (
            " The column names look like data, so the file may have no header line: add one naming the columns, "
                "or name them in data.column_names (e.g. [text, text_pair, label])."
            if headerless
            else ""
        )
        if where.startswith("data."):
            fix = f"Set {' / '.join(missing)} to one of the available columns."
        else:  # a new file for a finished run: the run's config fixes the column names
            fix = (
                f"The run was trained with {', '.join(f'{k}={v!r}' for k, v in missing.items())} (its config.yaml); "
                f"rename the column{'s' if len(missing) > 1 else ''} in {path} to match."
            )
        raise DataError(
            f"{where} ({path}) has {what}. Available columns: {format_choices(_short(c) for c in available)}."
            f"{hints}{header_hint} {fix}"
        )
    frame = frame.set_axis(available, axis=1)
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    # Positional (.to_numpy()): the frame's own index must never be aligned against the output rows.
    out["text"] = _clean_text(frame[columns["data.text_column"]], where, columns["data.text_column"]).to_numpy()
    if "data.text_pair_column" in columns:
        out["text_pair"] = _clean_text(
            frame[columns["data.text_pair_column"]], where, columns["data.text_pair_column"]
        ).to_numpy()
    if "data.label_column" in columns:
        out["label"] = frame[columns["data.label_column"]].to_numpy()
    out["row"] = np.arange(len(frame), dtype=np.int64)
    return out


def _clean_text(series: pd.Series, where: str, column: str) -> pd.Series:
    """Missing text becomes "" (with a warning naming the rows); anything else becomes its string form."""
    missing = series.isna().to_numpy()
    if missing.any():
        rows = ", ".join(str(r + 1) for r in np.flatnonzero(missing)[:5])
        warnings.warn(
            f"{where}: {int(missing.sum())} row(s) have an empty '{column}' (data rows {rows}"
            f"{', ...' if missing.sum() > 5 else ''}); they are kept as empty text.",
            UserWarning,
            stacklevel=4,
        )
    values = series.astype(object).where(~missing, "")
    return pd.Series([v if isinstance(v, str) else str(v) for v in values], index=series.index, dtype=str)


def _label_tensor(values: Sequence[Any]) -> torch.Tensor:
    """Class indices as int64, regression targets as float32."""
    if values and isinstance(values[0], float):
        return torch.tensor(values, dtype=torch.float32)
    return torch.tensor([int(v) for v in values], dtype=torch.long)


def _carve(
    pool: pd.DataFrame, fraction: float, n_file: int, seed: int, name: str, train: object, regression: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Take ``round(fraction * n_file)`` stratified rows out of ``pool``; both parts must stay non-empty."""
    count = int(np.floor(fraction * n_file + 0.5))
    key = f"data.{name}_fraction"
    if count == 0:
        raise DataError(
            f"The {name} split carved from data.train ({train}) is empty: {key}={fraction} of {n_file} rows "
            f"rounds to 0 rows. Raise {key} (at least {1 / n_file:.3g}), or give a separate file in data.{name}."
        )
    if count >= len(pool):
        raise DataError(
            f"Carving the {name} split ({key}={fraction}, {count} rows) from data.train ({train}) would leave "
            f"no training rows out of {len(pool)}. Lower {key}, or give a separate file in data.{name}."
        )
    rest, split = stratified_split(strata(pool["label"], regression), count / len(pool), seed)
    return pool.iloc[rest].reset_index(drop=True), pool.iloc[split].reset_index(drop=True)


def _check_two_classes(frame: pd.DataFrame, name: str, where: str, carved: bool, label_map: LabelMap) -> None:
    present = np.unique(frame["label"].to_numpy())
    if len(present) >= 2:
        return
    only = label_map.decode(present)[0]
    fix = (
        f"raise data.{name}_fraction so the stratified split can hold every class"
        if carved
        else f"use a bigger data.{name} file that contains at least two classes"
    )
    raise DataError(
        f"{where} has only one class ({only!r}) in its {len(frame)} rows; metrics such as AUC and F1 need at "
        f"least two classes. Fix: {fix}."
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _short(text: str, limit: int = 60) -> str:
    """Column names of a headerless file are whole sentences; keep messages readable."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
