"""Event sequences (transactions): events tables -> per-entity splits -> encoded datasets -> ``PaddedBatch``.

Splits are per entity (an entity is never in two splits), stratified by label and seeded. Encoders are
fitted on the training split only and saved with the run, so evaluate / predict / embed encode new files
exactly like the training data: categorical values unseen in training map to index 1 (OOV), index 0 is
padding. Reading and checking the files is :mod:`headstart.data.event_tables`' job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from headstart.data.event_tables import (
    EventTable,
    attach_label_table,
    read_event_table,
    read_label_table,
    take_entities,
)
from headstart.data.labels import LabelMap
from headstart.data.splits import stratified_split, stratified_subset
from headstart.data.targets import RegressionTargets, strata
from headstart.errors import ConfigError, DataError, format_choices
from headstart.fileio import atomic_write_text

if TYPE_CHECKING:
    from ptls.data_load.padded_batch import PaddedBatch

    from headstart.config import DataConfig, EventsConfig

__all__ = [
    "OOV_INDEX",
    "PAD_INDEX",
    "TIME_DELTA_FIELD",
    "EventEncoders",
    "EventFields",
    "EventSet",
    "EventSplits",
    "NumericTransform",
    "collate_events",
    "load_event_splits",
    "read_events",
]

PAD_INDEX = 0  # categorical padding (ptls pads with zeros)
OOV_INDEX = 1  # categorical values never seen in training
TIME_DELTA_FIELD = "event_time_delta"  # the numeric field holding the time since the previous event
_FORMAT = "headstart.events/1"


@dataclass(frozen=True)
class NumericTransform:
    """How one numeric field is scaled: identity, log1p, or standardize with the training mean and std."""

    kind: str
    mean: float = 0.0
    std: float = 1.0


@dataclass(frozen=True)
class EventFields:
    """What an encoder builder needs: vocabulary size per categorical field (padding and OOV included) and
    the names of the numeric fields (the time delta among them when ``time_feature`` is delta)."""

    categorical: dict[str, int]
    numeric: list[str]


@dataclass
class EventEncoders:
    """Vocabularies and scalers fitted on the training split, plus the column and time settings to read new
    files the same way; JSON round-trips via :meth:`to_dict` / :meth:`from_dict`."""

    id_column: str
    time_column: str
    time_format: str  # resolved on the training file: number, date or datetime
    time_feature: str  # delta or none
    max_events: int
    vocabularies: dict[str, list[str]]  # field -> values at indices 2, 3, ... (most frequent first)
    numeric: dict[str, NumericTransform]
    _index: dict[str, pd.Index] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index = {name: pd.Index(values, dtype=object) for name, values in self.vocabularies.items()}

    @classmethod
    def fit(cls, table: EventTable, events: EventsConfig) -> EventEncoders:
        """Fit on the (already truncated) training events: what the model sees is what the encoders describe."""
        vocabularies = {}
        for name in events.categorical:
            counts = pd.Series(table.columns[name], dtype=object).value_counts(sort=False)
            vocabularies[name] = [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        numeric = {}
        for name, kind in events.numeric.items():
            if kind == "standardize":
                values = table.columns[name]
                std = float(values.std())  # population std; a constant field keeps its values (std 1)
                numeric[name] = NumericTransform(kind, float(values.mean()), std if np.isfinite(std) and std > 0 else 1.0)
            else:
                numeric[name] = NumericTransform(kind)
        return cls(events.id_column, events.time_column, table.time_format, events.time_feature,
                   int(events.max_events), vocabularies, numeric)

    @property
    def fields(self) -> EventFields:
        numeric = list(self.numeric) + ([TIME_DELTA_FIELD] if self.time_feature == "delta" else [])
        return EventFields({name: len(v) + 2 for name, v in self.vocabularies.items()}, numeric)

    def encode(self, table: EventTable) -> dict[str, np.ndarray]:
        """Flat per-event arrays: int64 indices for categorical fields, float32 for numeric ones."""
        out: dict[str, np.ndarray] = {}
        for name, index in self._index.items():
            found = index.get_indexer(table.columns[name])
            out[name] = np.where(found < 0, OOV_INDEX, found + 2).astype(np.int64)
        for name, transform in self.numeric.items():
            values = table.columns[name]
            if transform.kind == "log1p":
                bad = np.flatnonzero(values <= -1)
                if len(bad):
                    seen = ", ".join(f"{v:g}" for v in values[bad[:5]])
                    raise DataError(
                        f"{table.where} ('{table.path}'): the numeric field '{name}' is scaled with log1p "
                        f"(data.events.numeric), which needs values above -1, but {len(bad)} event(s) have "
                        f"{seen} at {table.name_rows(table.rows[bad])}. Use standardize (or identity) for fields "
                        f"with large negative values such as refunds, or fix the values."
                    )
                values = np.log1p(values)
            elif transform.kind == "standardize":
                values = (values - transform.mean) / transform.std
            out[name] = values.astype(np.float32)
        if self.time_feature == "delta":
            out[TIME_DELTA_FIELD] = table.delta.astype(np.float32)
        return out

    def columns(self) -> dict[str, Any]:
        """Arguments for :func:`read_event_table` (the columns a new file must have)."""
        return {"id_column": self.id_column, "time_column": self.time_column, "categorical": list(self.vocabularies),
                "numeric": list(self.numeric), "max_events": self.max_events, "time_format": self.time_format}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT, "id_column": self.id_column, "time_column": self.time_column,
            "time_format": self.time_format, "time_feature": self.time_feature, "max_events": self.max_events,
            "vocabularies": {k: list(v) for k, v in self.vocabularies.items()},
            "numeric": {k: {"kind": t.kind, "mean": t.mean, "std": t.std} for k, t in self.numeric.items()},
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any], source: str = "the event encoders") -> EventEncoders:
        """Rebuild encoders written by :meth:`to_dict`; a damaged payload is a DataError naming what is wrong."""
        try:
            if payload.get("format") != _FORMAT:
                raise ValueError(f"format is {payload.get('format')!r}, expected {_FORMAT!r}")
            numeric = {str(k): NumericTransform(str(t["kind"]), float(t["mean"]), float(t["std"]))
                       for k, t in dict(payload["numeric"]).items()}
            vocabularies = {str(k): [str(v) for v in values] for k, values in dict(payload["vocabularies"]).items()}
            return cls(str(payload["id_column"]), str(payload["time_column"]), str(payload["time_format"]),
                       str(payload["time_feature"]), int(payload["max_events"]), vocabularies, numeric)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(
                f"{source} cannot be read: {type(exc).__name__}: {exc}. Expected the JSON written by "
                f"EventEncoders.to_dict (keys format, id_column, time_column, time_format, time_feature, max_events, "
                f"vocabularies, numeric); restore it from the run directory the checkpoint came from."
            ) from None

    def to_json(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n")

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> EventEncoders:
        source = Path(path)
        try:
            payload = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"The event encoders file '{source}' cannot be read ({' '.join(str(exc).split())}). It is "
                            f"saved in the run directory; point to the run the checkpoint came from.") from None
        if not isinstance(payload, dict):
            raise DataError(f"The event encoders file '{source}' holds a JSON {type(payload).__name__}, expected an "
                            f"object; restore it from the run directory.")
        return cls.from_dict(payload, f"The event encoders file '{source}'")


class EventSet(Dataset):
    """One item per entity: ``{"events": {field: 1-D tensor}, "label": int | None, "id": str}``.

    Events are stored as flat arrays plus offsets (one tensor per field per item would cost far more
    memory on millions of events); items are views into them. ``lengths`` (events per entity) feeds
    length-grouped batching; ``labels`` is None for unlabelled sets; ``preprocessing`` describes the encoding
    for feature-cache keys (with :meth:`fingerprint`).
    """

    def __init__(self, ids: Sequence[str], offsets: np.ndarray, columns: Mapping[str, np.ndarray],
                 fields: EventFields, labels: np.ndarray | None = None,
                 preprocessing: Mapping[str, Any] | None = None, rows: np.ndarray | None = None,
                 times: np.ndarray | None = None) -> None:
        self.ids = [str(i) for i in ids]
        # an int id per entity that survives subsets (predictions files, stack folds): the file row of its
        # earliest event; positions when not given
        self.rows = np.arange(len(self.ids), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        if len(self.offsets) != len(self.ids) + 1:
            raise DataError(f"EventSet got {len(self.ids)} ids but {len(self.offsets)} offsets; expected one more "
                            f"offset than ids. Build it with load_event_splits or read_events.")
        self.columns = dict(columns)
        self.fields = fields
        # class indices (int64), or numbers of a regression run (float32)
        self.labels = None if labels is None else np.asarray(
            labels, dtype=np.float32 if np.asarray(labels).dtype.kind == "f" else np.int64)
        self.lengths = np.diff(self.offsets)
        self.preprocessing = dict(preprocessing) if preprocessing is not None else {"events": _FORMAT}
        # each event's time as read (float64: the column's units, days for dates), for features the encoder does
        # not see (the classic RFM baseline's recency and tenure); None when unknown. Not part of fingerprint().
        self.times = None if times is None else np.asarray(times, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
        events = {name: torch.from_numpy(values[start:stop]) for name, values in self.columns.items()}
        label = None if self.labels is None else self.labels[index].item()  # int class index, or float number
        return {"events": events, "label": label, "id": self.ids[index]}

    def subset(self, idx: np.ndarray | Sequence[int]) -> EventSet:
        """The entities at positions ``idx`` (in that order), e.g. a stack fold."""
        idx = np.asarray(idx, dtype=np.int64)
        offsets, events = take_entities(self.offsets, idx)
        return EventSet([self.ids[i] for i in idx], offsets, {k: v[events] for k, v in self.columns.items()},
                        self.fields,
                        None if self.labels is None else self.labels[idx], self.preprocessing, self.rows[idx],
                        None if self.times is None else self.times[events])

    def fingerprint(self) -> str:
        """Hash of exactly what the encoder sees: the data part of a feature-cache key."""
        from headstart.cache.key import array_digest

        names = json.dumps(sorted(self.columns)).encode()
        return array_digest(np.frombuffer(names, dtype=np.uint8), self.offsets,
                            *(self.columns[k] for k in sorted(self.columns)))


def collate_events(items: Sequence[Mapping[str, Any]]) -> tuple[PaddedBatch, torch.Tensor | None]:
    """Pad a batch to its longest sequence with 0: ``(PaddedBatch(payload {field: [B, T]}, seq_lens), labels)``;
    labels are a long tensor (a float one for regression), or None when the items are unlabelled."""
    try:
        from ptls.data_load.padded_batch import PaddedBatch
    except ImportError:  # pragma: no cover - ptls is the 'sequences' extra
        raise ConfigError("Event sequences are batched as ptls PaddedBatch, but pytorch-lifestream is not "
                          "installed. Install it with: pip install 'headstart[sequences]'.") from None
    if not items:
        raise DataError("collate_events got an empty batch; a DataLoader never sends one, check the sampler.")
    lengths = [len(next(iter(item["events"].values()))) for item in items]
    width = max(lengths)
    payload = {}
    for name, first in items[0]["events"].items():
        padded = torch.zeros((len(items), width), dtype=first.dtype)
        for row, (item, length) in enumerate(zip(items, lengths, strict=True)):
            padded[row, :length] = item["events"][name]
        payload[name] = padded
    labels = [item.get("label") for item in items]
    if all(v is None for v in labels):
        return PaddedBatch(payload, torch.tensor(lengths, dtype=torch.long)), None
    if any(v is None for v in labels):
        raise DataError("collate_events got a batch mixing labelled and unlabelled entities; a dataset is either "
                        "labelled or not. Build it with load_event_splits or read_events(labelled=...).")
    dtype = torch.float32 if isinstance(labels[0], float | np.floating) else torch.long
    return PaddedBatch(payload, torch.tensor(lengths, dtype=torch.long)), torch.tensor(labels, dtype=dtype)


@dataclass
class EventSplits:
    """Encoded per-entity splits of a sequence-classification run; ``encoders`` and ``label_map`` are saved
    with the run (``label_map`` is None for unlabelled splits)."""

    train: EventSet
    val: EventSet
    test: EventSet | None
    label_map: LabelMap | None
    encoders: EventEncoders


def load_event_splits(data: DataConfig, seed: int, *, labelled: bool = True,
                      encoders: EventEncoders | None = None, regression: bool = False,
                      standardize: bool = True) -> EventSplits:
    """Read, split, subsample, label-encode and encode the events of a run from a validated ``DataConfig``.

    Carved fractions are fractions of all training entities (test with ``seed``, val with ``seed + 1``,
    ``train_subset`` with ``seed + 2``, as for text runs); encoders and the label map come from the final
    training entities only. ``labelled`` False (self-supervised pretraining): no label is read or required,
    splits are carved at random and ``label_map`` is None. ``encoders`` (a pretrained encoder's) replace the
    ones fitted on the training split: its embedding rows mean their values, so the data must be encoded so.
    ``regression``: the per-entity labels are numbers (splits stratified by their quantile bins; the map holds
    the training split's mean / std).
    """
    events = _events_config(data)
    carved = (data.val_fraction if data.val is None else 0.0) + (data.test_fraction if data.test is None else 0.0)
    if carved >= 1.0:
        raise ConfigError(f"data.val_fraction + data.test_fraction is {carved:g}, which leaves no training entities; "
                          f"keep the sum below 1, e.g. 0.1 + 0.1.")
    label_column = None if events.labels or not labelled else data.label_column
    columns = {"id_column": events.id_column, "time_column": events.time_column, "categorical": events.categorical,
               "numeric": list(events.numeric), "max_events": events.max_events}
    train = read_event_table(data.train, where="data.train", time_format=events.time_format, label_column=label_column,
                             fmt=data.format, column_names=data.column_names, **columns)
    tables = {"train": train}
    for name in ("val", "test"):
        path = getattr(data, name)
        if path is not None:
            tables[name] = read_event_table(path, where=f"data.{name}", time_format=train.time_format,
                                            label_column=label_column, fmt=data.format,
                                            column_names=data.column_names, **columns)
    _check_disjoint(tables)
    if events.labels and labelled:
        ids, values = read_label_table(events.labels, events.id_column, data.label_column, data.format)
        tables = dict(zip(tables, attach_label_table(list(tables.values()), ids, values, events.labels,
                                                     events.unmatched, True), strict=True))
    pool, n_file = tables["train"], len(tables["train"])
    if "test" not in tables and data.test_fraction > 0:
        pool, tables["test"] = _carve(pool, data.test_fraction, n_file, seed, "test", data.train, regression)
    if "val" not in tables:
        pool, tables["val"] = _carve(pool, data.val_fraction, n_file, seed + 1, "val", data.train, regression)
    if data.train_subset is not None and data.train_subset < len(pool):
        pool = pool.take(stratified_subset(_strata(pool, regression), data.train_subset, seed + 2))
    tables["train"] = pool

    label_map: LabelMap | RegressionTargets | None = None
    if labelled and regression:
        label_map = RegressionTargets.from_labels(pool.labels, data.label_column, f"data.train ({data.train})",
                                                  standardize=standardize)
    elif labelled:
        train_where = f"data.train ({data.train})"
        label_map = LabelMap.from_labels(pool.labels, train_where)
        if label_map.n_classes < 2:
            raise DataError(f"{train_where} has one class ({label_map.classes[0]!r}) among its {len(pool)} training "
                            f"entities; a classifier needs two or more. Check data.label_column, or use more "
                            f"entities (data.train_subset).")
        for name in ("val", "test"):
            if name in tables:
                _check_two_classes(tables[name], name, getattr(data, name) is None)
    encoders = EventEncoders.fit(pool, events) if encoders is None else _reuse_encoders(encoders, events, pool)
    sets = {name: _event_set(table, encoders, label_map) for name, table in tables.items()}
    return EventSplits(sets["train"], sets["val"], sets.get("test"), label_map, encoders)


def read_events(data: DataConfig, path: str | os.PathLike[str], encoders: EventEncoders, labelled: bool, *,
                label_map: LabelMap | RegressionTargets | None = None, labels: str | os.PathLike[str] | None = None,
                where: str = "data.path") -> EventSet:
    """Read a new events file (evaluate / predict / embed) with the training encoders; unseen values -> OOV.

    Columns and time parsing come from ``encoders`` (the run's own settings). With ``labelled``, labels come
    from ``labels`` (a label table), else data.events.labels, else data.label_column in the file, and are
    encoded with ``label_map``; a label table may list entities of other files too.
    """
    if labelled and label_map is None:
        raise ConfigError(f"read_events({where}) was asked for labels but given no label_map; pass the run's label "
                          f"map (labels.json in the run directory) so labels become the trained class indices.")
    events = data.events
    table_path = (labels if labels is not None else events.labels if events is not None else None) if labelled else None
    label_column = data.label_column if labelled and table_path is None else None
    table = read_event_table(path, where=where, label_column=label_column, fmt=data.format,
                             column_names=data.column_names, **encoders.columns())
    if table_path is not None:
        ids, values = read_label_table(table_path, encoders.id_column, data.label_column, data.format)
        policy = events.unmatched if events is not None else "drop"
        table = attach_label_table([table], ids, values, str(table_path), policy, False)[0]
    return _event_set(table, encoders, label_map if labelled else None)


def _events_config(data: DataConfig) -> EventsConfig:
    events = data.events
    if events is None:
        raise ConfigError("Event sequences need data.events (id_column, time_column and the categorical / numeric "
                          "event fields); the data config has none.")
    if TIME_DELTA_FIELD in (*events.categorical, *events.numeric) and events.time_feature == "delta":
        raise ConfigError(f"data.events lists a column named '{TIME_DELTA_FIELD}', the name headstart gives the time "
                          f"feature (time_feature: delta). Rename that column, or set time_feature: none.")
    return events


def _check_disjoint(tables: Mapping[str, EventTable]) -> None:
    """Given val / test files must not share entities with train or each other: that would leak labels."""
    names = list(tables)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = np.intersect1d(tables[a].ids.astype(str), tables[b].ids.astype(str))
            if len(shared):
                raise DataError(
                    f"data.{a} ('{tables[a].path}') and data.{b} ('{tables[b].path}') share {len(shared)} entit"
                    f"{'y' if len(shared) == 1 else 'ies'} (e.g. {format_choices(shared[:5])}). Splits are per "
                    f"entity: an entity in two splits leaks its label into the evaluation. Remove those entities "
                    f"from one file, or drop data.{b} and let data.{b}_fraction carve it from data.train."
                )


def _carve(pool: EventTable, fraction: float, n_file: int, seed: int, name: str,
           train: object, regression: bool = False) -> tuple[EventTable, EventTable]:
    """Take ``round(fraction * n_file)`` entities out of ``pool``, stratified by label; both sides non-empty."""
    count = int(np.floor(fraction * n_file + 0.5))
    key = f"data.{name}_fraction"
    if count == 0 or count >= len(pool):
        raise DataError(f"Carving the {name} split ({key}={fraction} of {n_file} entities = {count}) from data.train "
                        f"({train}) leaves an empty split ({len(pool)} entities are left to split). Change {key}, "
                        f"or give a separate file in data.{name}.")
    rest, split = stratified_split(_strata(pool, regression), count / len(pool), seed)
    return pool.take(rest), pool.take(split)


def _strata(table: EventTable, regression: bool = False) -> np.ndarray:
    """What splits are stratified by: the labels (quantile bins of numbers), or one stratum (a plain seeded
    draw) when unlabelled."""
    return strata(table.labels, regression) if table.labels is not None else np.zeros(len(table), dtype=np.int64)


def _reuse_encoders(given: EventEncoders, events: EventsConfig, train: EventTable) -> EventEncoders:
    """``given``'s vocabularies and scalers, reading this config's columns; the event fields must be the same."""
    theirs = (sorted(given.vocabularies), dict(sorted((k, t.kind) for k, t in given.numeric.items())),
              given.time_feature)
    ours = (sorted(events.categorical), dict(sorted(events.numeric.items())), events.time_feature)
    if theirs != ours:
        raise ConfigError(
            f"The pretrained encoder (pretrain / --pretrain) was trained on the event fields categorical {theirs[0]}, "
            f"numeric {theirs[1]}, time_feature {theirs[2]!r}, but data.events here gives categorical {ours[0]}, "
            f"numeric {ours[1]}, time_feature {ours[2]!r}. Its embedding tables and input scaling belong to its "
            f"fields: list the same fields with the same scaling in data.events, or drop pretrain."
        )
    return replace(given, id_column=events.id_column, time_column=events.time_column, time_format=train.time_format,
                   max_events=int(events.max_events))


def _check_two_classes(table: EventTable, name: str, carved: bool) -> None:
    """Metrics such as AUC and F1 need two classes in every evaluated split."""
    present = pd.unique(pd.Series(table.labels, dtype=object))
    if len(present) >= 2:
        return
    fix = (f"raise data.{name}_fraction so the stratified split can hold every class" if carved
           else f"use a data.{name} file whose entities have at least two classes")
    raise DataError(f"The {name} split ({table.where}, {len(table)} entities) has only one class ({present[0]!r}); "
                    f"metrics such as AUC and F1 need at least two. Fix: {fix}.")


def _event_set(table: EventTable, encoders: EventEncoders, label_map: LabelMap | RegressionTargets | None) -> EventSet:
    codes = None
    if label_map is not None:
        codes = label_map.encode(table.labels, f"{table.where} ({table.path}), labels")
    preprocessing = {"events": _FORMAT, "time_format": encoders.time_format, "time_feature": encoders.time_feature,
                     "max_events": encoders.max_events, "categorical": encoders.fields.categorical,
                     "numeric": {k: t.kind for k, t in encoders.numeric.items()}}
    return EventSet(table.ids.tolist(), table.offsets, encoders.encode(table), encoders.fields, codes, preprocessing,
                    rows=table.rows[table.offsets[:-1]] if len(table) else None, times=table.time)
