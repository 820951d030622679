"""Reading one events table (one row per event) into ordered, truncated per-entity sequences of raw values.

Everything that can be wrong with the file is found here, before any model is built: missing columns,
unparseable times, non-numeric amounts, ids or labels that are missing, labels that change within an
entity, and label tables with duplicate ids. Each error names the file, the config key, the file lines
and the values seen. Encoding (vocabularies, scaling) is :mod:`headstart.data.events`' job.

Entity ids and categorical values are compared as strings exactly as written ("007" and "7" differ;
a whole float 7.0 from a Parquet file becomes "7"), so the events table and the label table match
whatever their formats. A missing categorical value is a category of its own, ``"<NA>"``: in
transaction data "no merchant code" is information, not noise. A missing numeric value or time is an
error naming the lines: filling it silently (with 0 or a mean) would invent amounts and dates.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from headstart.data.labels import LabelMap
from headstart.data.readers import SUFFIXES, detect_format, read_table
from headstart.errors import DataError, did_you_mean, format_choices

__all__ = ["NA_CATEGORY", "EventTable", "attach_label_table", "read_event_table", "read_label_table", "take_entities"]

log = logging.getLogger("headstart")

NA_CATEGORY = "<NA>"  # the category of an empty categorical cell
_SHOW = 5  # rows / entities quoted in a message


def take_entities(offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For entities ``idx`` of a flat layout (entity ``i`` owns events ``offsets[i]:offsets[i + 1]``): the new
    offsets and the positions of their events, in order."""
    lens = np.diff(offsets)[idx]
    within = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
    return np.concatenate([[0], np.cumsum(lens)]).astype(np.int64), np.repeat(offsets[:-1][idx], lens) + within


@dataclass
class EventTable:
    """Events of one file grouped per entity, each entity's events in time order (ties in file order).

    Entity ``i`` owns rows ``offsets[i]:offsets[i + 1]`` of ``time``, ``delta``, ``rows`` and every array
    in ``columns`` (categorical: str objects; numeric: float64). Entities keep their order of first
    appearance in the file.
    """

    path: str
    where: str
    ids: np.ndarray  # object array of str, one per entity
    offsets: np.ndarray  # int64, len(ids) + 1
    time: np.ndarray  # float64: the column's units for numbers, days since 1970-01-01 for dates
    delta: np.ndarray  # float64: time since the entity's previous event in the file (0 for its first)
    columns: dict[str, np.ndarray]
    rows: np.ndarray  # int64: 0-based data row in the file, for messages
    time_format: str  # resolved: number, date or datetime
    first_line: int  # file line of data row 0 (2 below a header), for messages
    labels: np.ndarray | None = None  # object array of raw label values, one per entity
    truncated: int = 0  # entities whose oldest events were dropped (max_events)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, idx: np.ndarray | Sequence[int]) -> EventTable:
        """The entities ``idx`` (in that order) with their events."""
        idx = np.asarray(idx, dtype=np.int64)
        offsets, events = take_entities(self.offsets, idx)
        return replace(
            self, ids=self.ids[idx], offsets=offsets,
            time=self.time[events], delta=self.delta[events], rows=self.rows[events],
            columns={k: v[events] for k, v in self.columns.items()},
            labels=None if self.labels is None else self.labels[idx],
        )

    def name_rows(self, rows: np.ndarray) -> str:
        """'lines 3, 7' (file lines, the header is line 1) for up to five 0-based data rows."""
        return _name_rows(rows, self.first_line)


def read_event_table(
    path: str | os.PathLike[str], *, where: str, id_column: str, time_column: str, categorical: Sequence[str],
    numeric: Sequence[str], max_events: int, time_format: str = "auto", label_column: str | None = None,
    fmt: str = "auto", column_names: Sequence[str] | None = None,
) -> EventTable:
    """Read, check, order and truncate one events table; ``label_column`` (when given) must be constant per
    entity and becomes ``labels``. Deltas are computed before truncation, so a kept event's delta is the
    real gap to its previous event even when that one was dropped."""
    frame = read_table(path, fmt, where, text_columns=[id_column, *categorical], column_names=column_names)
    kind = detect_format(path, fmt, where)
    first_line = 2 if kind in ("csv", "tsv") and column_names is None else 1
    wanted = {"data.events.id_column": [id_column], "data.events.time_column": [time_column],
              "data.events.categorical": list(categorical), "data.events.numeric": list(numeric)}
    if label_column is not None:
        wanted["data.label_column"] = [label_column]
    _check_columns(frame, wanted, path, where)
    context = f"{where} ('{path}')"

    ids, missing = _as_keys(frame[id_column])
    if missing.any():
        raise DataError(
            f"{context}: {int(missing.sum())} event(s) have no entity id in column '{id_column}' "
            f"(data.events.id_column), at {_name_rows(np.flatnonzero(missing), first_line)}. Every event must "
            f"belong to an entity: fill in the ids or delete those lines."
        )
    time, resolved = _parse_times(frame[time_column], time_format, context, time_column, first_line)
    columns: dict[str, np.ndarray] = {}
    for name in categorical:
        keys, empty = _as_keys(frame[name])
        keys[empty] = NA_CATEGORY
        columns[name] = keys
    for name in numeric:
        columns[name] = _numbers(frame[name], context, name, first_line)

    codes, uniques = pd.factorize(pd.Series(ids, dtype=object), sort=False)
    order = np.lexsort((time, codes))  # stable: events at the same time keep their file order
    counts = np.bincount(codes, minlength=len(uniques))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    time = time[order]
    delta = np.diff(time, prepend=time[:1])
    delta[offsets[:-1]] = 0.0
    rows = order.astype(np.int64)
    labels = None
    if label_column is not None:
        labels = _entity_labels(frame[label_column], order, offsets, np.asarray(uniques, dtype=object), context,
                                label_column, first_line)
    table = EventTable(str(path), where, np.asarray(uniques, dtype=object), offsets, time, delta,
                       {k: v[order] for k, v in columns.items()}, rows, resolved, first_line, labels)
    return _truncate(table, int(max_events))


def _parse_times(series: pd.Series, time_format: str, context: str, column: str,
                first_line: int) -> tuple[np.ndarray, str]:
    """Times as float64 (numbers as they are; dates as days since 1970-01-01 UTC) and the resolved format.

    ``auto`` reads the column as numbers when at least half of its values are numbers (so a few bad cells
    are reported rather than flipping the whole column to dates), else as datetimes. Dates are parsed as
    ISO 8601 when that reads more values, else in the format pandas infers from the first value.
    """
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        if time_format == "number":
            raise DataError(f"{context}: the time column '{column}' holds datetimes, but data.events.time_format is "
                            f"'number'. Set time_format: datetime (or auto).")
        parsed, resolved = pd.to_datetime(series, utc=True), "datetime" if time_format == "auto" else time_format
    else:
        numbers = pd.to_numeric(series, errors="coerce")
        present = series.notna().to_numpy()
        is_number = numbers.notna().to_numpy() & present
        resolved = time_format
        if time_format == "auto":
            resolved = "number" if is_number.sum() * 2 >= max(int(present.sum()), 1) else "datetime"
        if resolved == "number":
            values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
            _raise_bad_times(series, ~np.isfinite(values), context, column, time_format, resolved, first_line)
            return values, resolved
        if pd.api.types.is_numeric_dtype(series.dtype):  # 20240131 is a date written as a number, not nanoseconds
            series = pd.Series(np.where(present, _as_keys(series)[0], None), index=series.index, dtype=object)
        parsed = _parse_dates(series)
    if resolved == "date":
        parsed = parsed.dt.floor("D")
    days = ((parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(days=1)).to_numpy(dtype=np.float64, na_value=np.nan)
    _raise_bad_times(series, np.isnan(days), context, column, time_format, resolved, first_line)
    return days, resolved


def read_label_table(path: str | os.PathLike[str], id_column: str, label_column: str, fmt: str = "auto",
                     where: str = "data.events.labels") -> tuple[np.ndarray, np.ndarray]:
    """(ids as str, raw labels) of a per-entity label table; duplicate or missing ids and empty labels are errors."""
    name = str(path).lower()
    fmt = "auto" if any(name.endswith(s) for s in SUFFIXES) else fmt
    frame = read_table(path, fmt, where, text_columns=[id_column])
    kind = detect_format(path, fmt, where)
    first_line = 2 if kind in ("csv", "tsv") else 1
    _check_columns(frame, {"data.events.id_column": [id_column], "data.label_column": [label_column]}, path, where)
    context = f"{where} ('{path}')"
    ids, missing = _as_keys(frame[id_column])
    if missing.any():
        raise DataError(f"{context}: {int(missing.sum())} row(s) have no entity id in column '{id_column}', at "
                        f"{_name_rows(np.flatnonzero(missing), first_line)}. Fill in the ids or delete those lines.")
    repeated = pd.Series(ids).duplicated(keep=False).to_numpy()
    if repeated.any():
        dup_ids = list(dict.fromkeys(ids[repeated]))
        shown = "; ".join(f"'{i}' at {_name_rows(np.flatnonzero(ids == i), first_line)}" for i in dup_ids[:_SHOW])
        raise DataError(
            f"{context}: {len(dup_ids)} entity id(s) appear more than once in column '{id_column}' ({shown}"
            f"{', ...' if len(dup_ids) > _SHOW else ''}). A label table needs one row per entity; remove the "
            f"repeated rows (if they disagree, decide which label is right)."
        )
    labels = frame[label_column].to_numpy(dtype=object)
    LabelMap.from_labels(labels, f"{context}, column '{label_column}'", rows=np.arange(len(labels)))  # empties
    return ids, labels


def attach_label_table(tables: Sequence[EventTable], label_ids: np.ndarray, label_values: np.ndarray,
                       labels_path: str, policy: str, count_labels_without_events: bool) -> list[EventTable]:
    """Give every entity its label from the table; unmatched entities are dropped (and counted in the log)
    or, with ``policy='error'``, refused. Labels without events count only when ``count_labels_without_events``
    (a run's own label table should cover its files exactly; a table used to score one new file need not)."""
    lookup = dict(zip(label_ids.tolist(), range(len(label_ids)), strict=True))
    found = [np.array([lookup.get(i, -1) for i in t.ids.tolist()], dtype=np.int64) for t in tables]
    no_label = [(t, np.flatnonzero(f < 0)) for t, f in zip(tables, found, strict=True)]
    n_no_label = sum(len(idx) for _, idx in no_label)
    with_events = set().union(*(set(t.ids.tolist()) for t in tables)) if tables else set()
    orphans = [i for i in label_ids.tolist() if i not in with_events] if count_labels_without_events else []
    if n_no_label or orphans:
        parts = []
        if n_no_label:
            examples = [f"'{i}'" for t, idx in no_label for i in t.ids[idx[:_SHOW]].tolist()][:_SHOW]
            files = ", ".join(f"{t.where}: {len(idx)}" for t, idx in no_label if len(idx))
            parts.append(f"{n_no_label} entit{'y' if n_no_label == 1 else 'ies'} with events but no row in the "
                         f"label table ({files}; e.g. {', '.join(examples)})")
        if orphans:
            parts.append(f"{len(orphans)} labelled entit{'y' if len(orphans) == 1 else 'ies'} with no events in "
                         f"{' / '.join(t.where for t in tables)} (e.g. {', '.join(repr(i) for i in orphans[:_SHOW])})")
        what = " and ".join(parts)
        if policy == "error":
            raise DataError(
                f"The label table data.events.labels ('{labels_path}') and the events do not match: {what}. "
                f"data.events.unmatched is 'error'. Check that data.events.id_column names the same ids in both "
                f"files (they are compared as written, '007' != '7'), or set data.events.unmatched: drop to "
                f"train on the entities that have both."
            )
        log.info("data.events.unmatched=drop: dropped %s (label table '%s').", what, labels_path)
    out = []
    for table, rows in zip(tables, found, strict=True):
        keep = np.flatnonzero(rows >= 0)
        kept = table.take(keep) if len(keep) < len(table) else table
        if len(kept) == 0:
            raise DataError(f"{table.where} ('{table.path}'): none of its {len(table)} entities has a row in the "
                            f"label table data.events.labels ('{labels_path}'), so nothing is left. Check "
                            f"data.events.id_column and that the label table belongs to these events.")
        out.append(replace(kept, labels=label_values[rows[keep]]))
    return out


def _truncate(table: EventTable, max_events: int) -> EventTable:
    """Keep each entity's latest ``max_events`` events."""
    lens = table.lengths
    over = int((lens > max_events).sum())
    if not over:
        return table
    ends = np.repeat(table.offsets[1:], lens)
    keep = (ends - np.arange(len(table.time))) <= max_events
    new_lens = np.minimum(lens, max_events)
    log.info("%s: %d of %d entities have more than data.events.max_events=%d events; their oldest events are "
             "dropped (the latest %d are kept).", table.where, over, len(table), max_events, max_events)
    return replace(table, offsets=np.concatenate([[0], np.cumsum(new_lens)]).astype(np.int64),
                   time=table.time[keep], delta=table.delta[keep], rows=table.rows[keep],
                   columns={k: v[keep] for k, v in table.columns.items()}, truncated=over)


def _check_columns(frame: pd.DataFrame, wanted: dict[str, list[str]], path: object, where: str) -> None:
    """Every configured column must exist; all missing ones are reported together, with close names."""
    available = [str(c) for c in frame.columns]
    missing = [(key, name) for key, names in wanted.items() for name in names if str(name) not in available]
    if not missing:
        return
    what = " and ".join(f"no column '{name}' ({key})" for key, name in missing)
    hints = "".join(dict.fromkeys(did_you_mean(name, available) for _, name in missing))
    if where.startswith("data."):
        fix = f"Set {' / '.join(dict.fromkeys(k for k, _ in missing))} to columns the file has."
        if any(k == "data.label_column" for k, _ in missing) and where != "data.events.labels":
            fix += (" Labels come from data.label_column in the events table because data.events.labels is not "
                    "set; point data.events.labels at a per-entity label table instead if the labels live there.")
    else:  # a new file for a finished run: the run's saved config fixes the names
        fix = (f"The run was trained with {', '.join(f'{k}={v!r}' for k, v in missing)}; rename the column(s) in "
               f"'{path}' to match.")
    raise DataError(f"{where} ('{path}') has {what}. Available columns: {format_choices(available)}.{hints} {fix}")


def _as_keys(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Cells as str objects (ints and whole floats without '.0') and the mask of empty cells."""
    missing = series.isna().to_numpy()
    dtype = series.dtype
    if pd.api.types.is_integer_dtype(dtype) and not missing.any():
        keys = series.astype("int64").astype(str).to_numpy(dtype=object)
    elif pd.api.types.is_float_dtype(dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        whole = np.isfinite(values) & (np.floor(values) == values) & (np.abs(values) < 2**53)
        keys = np.array([str(int(v)) if w else str(v) for v, w in zip(values.tolist(), whole, strict=True)],
                        dtype=object)
    elif pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        keys = series.to_numpy(dtype=object)
    else:
        keys = np.array([_key(v) for v in series.to_numpy(dtype=object)], dtype=object)
    keys = keys.copy()
    keys[missing] = ""
    return keys, missing


def _key(value: object) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _numbers(series: pd.Series, context: str, column: str, first_line: int) -> np.ndarray:
    """A numeric event field as float64; empty, non-numeric and infinite cells are an error naming the lines."""
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad)
        seen = ", ".join(_show_value(v) for v in series.iloc[rows[:_SHOW]].tolist())
        raise DataError(
            f"{context}: the numeric event field '{column}' (data.events.numeric) has {len(rows)} value(s) that are "
            f"not finite numbers, at {_name_rows(rows, first_line)}: {seen}. headstart does not invent values for "
            f"them: fill them in the file (e.g. 0 where 'no amount' means zero), delete those lines, or list "
            f"'{column}' under data.events.categorical if it holds codes rather than amounts."
        )
    return values


def _parse_dates(series: pd.Series) -> pd.Series:
    """ISO 8601 first (mixed dates and date-times); otherwise the format inferred from the first value."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format": the failures are reported instead
        iso = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
        if iso.notna().sum() == series.notna().sum():
            return iso
        inferred = pd.to_datetime(series, errors="coerce", utc=True)
    return iso if iso.notna().sum() >= inferred.notna().sum() else inferred


def _raise_bad_times(series: pd.Series, bad: np.ndarray, context: str, column: str, asked: str, resolved: str,
                     first_line: int) -> None:
    if not bad.any():
        return
    rows = np.flatnonzero(bad)
    seen = ", ".join(_show_value(v) for v in series.iloc[rows[:_SHOW]].tolist())
    how = {"number": "numbers", "date": "dates", "datetime": "dates / date-times"}[resolved]
    why = f" (time_format auto chose {resolved} from the column's values)" if asked == "auto" else ""
    raise DataError(
        f"{context}: {len(rows)} value(s) of the time column '{column}' (data.events.time_column) cannot be read as "
        f"{how}{why}, at {_name_rows(rows, first_line)}: {seen}. Every event needs a time to be ordered. Fix or "
        f"delete those lines, or set data.events.time_format to match the column: number (day index, timestamp), "
        f"date or datetime (one format throughout, ISO 8601 such as 2024-01-31 or 2024-01-31 13:45:00 is safest)."
    )


def _entity_labels(series: pd.Series, order: np.ndarray, offsets: np.ndarray, ids: np.ndarray, context: str,
                   column: str, first_line: int) -> np.ndarray:
    """One label per entity from the events table's label column; it must be the same on all its events."""
    values = series.to_numpy(dtype=object)
    LabelMap.from_labels(values, f"{context}, column '{column}'", rows=np.arange(len(values)))  # empty cells
    codes = pd.factorize(pd.Series(values, dtype=object))[0][order]
    lens = np.diff(offsets)
    first = codes[offsets[:-1]]
    differs = codes != np.repeat(first, lens)
    if differs.any():
        entity = np.repeat(np.arange(len(ids)), lens)
        bad = np.unique(entity[differs])
        seen = [dict.fromkeys(values[order[offsets[e]:offsets[e + 1]]].tolist()) for e in bad[:_SHOW]]
        shown = "; ".join(f"'{ids[e]}': {', '.join(map(repr, v))}" for e, v in zip(bad, seen, strict=False))
        raise DataError(
            f"{context}: the label column '{column}' (data.label_column) changes within {len(bad)} entit"
            f"{'y' if len(bad) == 1 else 'ies'} ({shown}{', ...' if len(bad) > _SHOW else ''}). An entity has one "
            f"label: make it the same on all its events, or put one label per entity in a separate table and set "
            f"data.events.labels to it."
        )
    return values[order[offsets[:-1]]]


def _name_rows(rows: np.ndarray, first_line: int) -> str:
    rows = np.asarray(rows)
    word = "line" if first_line == 2 else "row"
    shown = ", ".join(str(int(r) + first_line) for r in rows[:_SHOW])
    more = f" and {len(rows) - _SHOW} more" if len(rows) > _SHOW else ""
    header = " (line 1 is the header)" if first_line == 2 else " (1-based)"
    return f"{word}{'s' if len(rows) != 1 else ''} {shown}{more}{header}"


def _show_value(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "(empty)"
    return repr(value.item() if isinstance(value, np.generic) else value)
