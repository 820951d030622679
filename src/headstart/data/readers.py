"""Read one tabular data file (csv, tsv, parquet, JSON lines) into a DataFrame, with readable errors.

Empty cells become NaN so that missing labels can be reported, but words such as "NA" or "null" stay
text: pandas' default NA list would silently turn a review that says "NA" into a missing value. TSV is
read without quote handling because real TSV corpora (SST-2, MRPC) contain unbalanced double quotes.

Before pandas reads a csv/tsv file, every line's field count is checked against the first line's: pandas
would otherwise take the first field as the index when the first data line has one field too many (an
unquoted comma in a text), silently shifting every column, and pad short lines with NaN.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pandas as pd

from headstart.errors import ConfigError, DataError, did_you_mean, format_choices

__all__ = ["FORMATS", "SUFFIXES", "detect_format", "read_table"]

FORMATS = ("csv", "tsv", "parquet", "jsonl", "json")
# Longest suffixes first so that ".csv.gz" wins over ".gz".
SUFFIXES: dict[str, str] = {
    ".csv.gz": "csv",
    ".tsv.gz": "tsv",
    ".jsonl.gz": "jsonl",
    ".json.gz": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".json": "json",
}
_BOM = "\ufeff"
_SHOWN_LINES = 3  # malformed lines quoted in a field-count error
_LINE_PREVIEW = 80  # characters of each quoted line
_PARSE_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, EOFError, zlib.error)
try:  # pyarrow's errors are mostly ValueError/OSError subclasses, but not all of them
    import pyarrow as _pa

    _PARSE_ERRORS = (*_PARSE_ERRORS, _pa.ArrowException)
except ImportError:  # pragma: no cover - pyarrow is a dependency
    pass


def detect_format(path: str | os.PathLike[str], fmt: str = "auto", where: str = "data.train") -> str:
    """Return one of FORMATS for ``path``: ``fmt`` itself when given, else from the file suffix."""
    fmt = str(fmt).lower().lstrip(".")
    if fmt != "auto":
        if fmt not in FORMATS:
            raise ConfigError(
                f"The data format for {where} is '{fmt}', which headstart cannot read. Expected 'auto' or one "
                f"of {format_choices(FORMATS)}.{did_you_mean(fmt, FORMATS)} Fix the format setting "
                f"(data.format), or use 'auto' to decide from the file suffix."
            )
        return fmt
    name = Path(path).name.lower()
    for suffix, found in SUFFIXES.items():
        if name.endswith(suffix):
            return found
    raise DataError(
        f"{where}: cannot tell the format of '{path}' from its suffix '{''.join(Path(path).suffixes) or '(none)'}'. "
        f"Supported suffixes are {format_choices(SUFFIXES)}. Rename the file, or set the format explicitly "
        f"(data.format: csv, tsv, parquet, jsonl or json; a tab-separated .txt file is 'tsv')."
    )


def read_table(
    path: str | os.PathLike[str],
    fmt: str = "auto",
    where: str = "data.train",
    *,
    text_columns: Sequence[str] = (),
    column_names: Sequence[str] | None = None,
    optional_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """Read ``path`` into a DataFrame; every problem becomes one DataError paragraph naming ``where``.

    ``text_columns`` are read as strings in csv/tsv files so that texts such as "007" or "1e5" are not
    turned into numbers; other columns keep pandas' type inference (labels become ints where they can).
    ``column_names`` names the columns of a csv/tsv file that has no header line (AFQMC, many GLUE
    dumps); the first line is then data. A file with fewer fields may lack exactly the ``optional_columns``
    (an unlabelled file to predict on, header-less like the training data): the other names apply in order.
    """
    file = _check_file(Path(os.path.expanduser(str(path))), where)
    kind = detect_format(file, fmt, where)
    if column_names is not None:
        repeated = sorted({str(n) for n in column_names if list(map(str, column_names)).count(str(n)) > 1})
        if repeated:
            raise ConfigError(
                f"data.column_names ({format_choices(column_names)}) names {format_choices(repeated)} more than "
                f"once, so the columns of {where} ('{file}') could not be told apart. Give each field its own "
                f"name, in file order, e.g. [text, text_pair, label]."
            )
    if column_names is not None and kind not in ("csv", "tsv"):
        raise ConfigError(f"data.column_names names the columns of header-less csv/tsv files, but {where} "
                          f"('{file}') is read as {kind}, whose columns are named in the file; remove "
                          f"data.column_names.")
    try:
        if column_names is not None and optional_columns:
            column_names = _present_names(file, kind, column_names, optional_columns)
        if kind in ("csv", "tsv") and (column_names is None or len(column_names) > 1):
            _check_separator(file, kind, fmt, where, header=column_names is None)
        frame = _read(file, kind, text_columns, column_names, where)
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{where}: the file '{file}' is empty (no header and no rows). Expected a {kind} file with a header "
            f"line and at least one data row; point {where} at the right file."
        ) from None
    except UnicodeDecodeError as exc:
        from headstart.data.encodings import reencode_hint

        raise DataError(
            f"{where}: '{file}' is not valid UTF-8 text ({exc.reason} at byte {exc.start}). headstart reads "
            f"text files as UTF-8; {reencode_hint(file)}"
        ) from None
    except _PARSE_ERRORS as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(
            f"{where}: could not parse '{file}' as {kind}: {message}. Check that the file really is {kind} "
            f"(for csv, quotes must be balanced; for tsv, every line needs the same number of tabs), or set "
            f"the format explicitly with data.format."
        ) from None
    frame = _strip_bom(frame)
    if column_names is not None and len(frame.columns) != len(column_names):
        raise DataError(
            f"{where}: data.column_names gives {len(column_names)} names ({format_choices(column_names)}) but the "
            f"lines of '{file}' have {len(frame.columns)} fields. Give one name per field, in file order."
        )
    if len(frame.columns) == 0 or len(frame) == 0:
        columns = format_choices(frame.columns) or "none"
        raise DataError(
            f"{where}: '{file}' has no data rows (columns found: {columns}). Expected at least one row after "
            f"the header; point {where} at a file with data."
        )
    return frame


def _check_file(file: Path, where: str) -> Path:
    """Fail early, with nearby file names, when the path does not name a readable file."""
    if file.is_dir():
        inside = sorted(p.name for p in file.iterdir() if p.is_file())[:5]
        listing = f" It contains: {format_choices(inside)}." if inside else " It contains no files."
        raise DataError(
            f"{where} is '{file}', which is a directory, not a data file.{listing} Set {where} to the path of "
            f"one csv, tsv, parquet or jsonl file."
        )
    if file.exists():
        return file
    parent = file.parent
    resolved = file.resolve()
    if not parent.is_dir():
        hint = f" Its directory '{parent.resolve()}' does not exist either."
    else:
        names = sorted(p.name for p in parent.iterdir() if p.is_file())
        hint = did_you_mean(file.name, names, n=5)
        if not hint and names:
            data_files = [n for n in names if any(n.lower().endswith(s) for s in SUFFIXES)] or names
            hint = f" Files in that directory include: {format_choices(data_files, limit=5)}."
        elif not names:
            hint = " That directory holds no files."
    raise DataError(
        f"{where}: the file '{file}' does not exist (resolved to {resolved}).{hint} Fix the path in {where}; "
        f"relative paths are resolved from the current working directory ({Path.cwd()})."
    )


def _csv_options(kind: str) -> dict[str, object]:
    """tsv: tabs and no quoting (quotes are text, as in AFQMC); csv: commas and minimal quoting."""
    return {"sep": "\t", "quoting": csv.QUOTE_NONE} if kind == "tsv" else {"sep": ",", "quoting": csv.QUOTE_MINIMAL}


def _check_separator(file: Path, kind: str, fmt: str, where: str, header: bool) -> None:
    """Refuse a csv whose first line has tabs and no comma (a TSV named .csv), and the reverse for tsv.

    Read with the wrong separator such a file is one column named after the whole header line, and the
    error would then be a puzzling "no column 'text'"; the separator is the cause, so it is named instead.
    """
    with _open_text(file) as handle:
        if handle is None:
            return
        first = next((line for line in handle if line.strip()), None)
    if first is None:
        return
    line = first.rstrip("\r\n").lstrip(_BOM)
    sep, found, other_kind = ("\t", ",", "csv") if kind == "tsv" else (",", "\t", "tsv")
    if found not in line:
        return
    quoting = csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL
    if len(next(csv.reader([line], delimiter=sep, quoting=quoting), [])) != 1:
        return  # the right separator splits the line too: the other character is part of a text
    parts = next(csv.reader([line], delimiter=found), [])
    style = {"csv": ("comma-separated", "commas"), "tsv": ("tab-separated", "tabs")}
    line_name = "header line" if header else "first line"
    if str(fmt).lower() == "auto":
        suffix = next((x for x in SUFFIXES if file.name.lower().endswith(x)), file.suffix)
        source = f"because of its suffix '{suffix}'"
    else:
        source = f"because the format is set to '{kind}' (data.format)"
    renamed = _renamed(file.name, kind, other_kind)
    if not where.startswith("data."):  # a new file for a finished run: its suffix decides the format
        fix = f"Rename the file to '{renamed}' (its suffix decides how {where} is read)"
    elif str(fmt).lower() == "auto":
        fix = f"Set data.format: {other_kind} in the config, or rename the file to '{renamed}'"
    else:
        fix = f"Set data.format: {other_kind} (or auto, with the file renamed to '{renamed}')"
    raise DataError(
        f"{where}: '{file}' is read as {kind} ({style[kind][0]}) {source}, but its {line_name} holds "
        f"{style[other_kind][1]} and no {style[kind][1]}: {format_choices(parts, limit=8)}, so every line would be "
        f"read as one column ('{_preview(line)}'). The file looks {style[other_kind][0]} ({other_kind}). {fix}, "
        f"and run again."
    )


def _renamed(name: str, kind: str, other_kind: str) -> str:
    """``name`` with its ``.csv``/``.tsv`` suffix swapped (``train.csv.gz`` -> ``train.tsv.gz``)."""
    lower = name.lower()
    at = lower.rfind("." + kind)
    if at >= 0:
        return name[:at] + "." + other_kind + name[at + 1 + len(kind):]
    return Path(name).stem + "." + other_kind


def _present_names(file: Path, kind: str, names: Sequence[str], optional: Sequence[str]) -> list[str]:
    """``names`` less the optional ones when the file's first line has exactly that many fields fewer."""
    first = pd.read_csv(file, header=None, nrows=1, encoding="utf-8-sig", compression="infer", dtype=str,
                        index_col=False, **_csv_options(kind))
    kept = [n for n in names if n not in set(optional)]
    return kept if len(first.columns) == len(kept) < len(names) else list(names)


def _read(file: Path, kind: str, text_columns: Sequence[str], names: Sequence[str] | None = None,
          where: str = "data.train") -> pd.DataFrame:
    """Dispatch to the reader of one format; csv/tsv lines are checked for a steady field count first."""
    if kind in ("csv", "tsv"):
        _check_field_counts(file, kind, where, header=names is None)
    if kind in ("csv", "tsv") and names is not None:
        # Read the fields by position, then name them: a count mismatch is reported, not padded with NaN.
        types = {i: str for i, name in enumerate(names) if name in set(map(str, text_columns))}
        frame = pd.read_csv(file, header=None, keep_default_na=False, na_values=[""], encoding="utf-8-sig",
                            compression="infer", dtype=types, low_memory=False, index_col=False,
                            **_csv_options(kind))
        if len(frame.columns) == len(names):
            frame.columns = [str(n) for n in names]
        return frame
    if kind in ("csv", "tsv"):
        return pd.read_csv(
            file,
            keep_default_na=False,
            na_values=[""],
            encoding="utf-8-sig",
            compression="infer",
            dtype={str(c): str for c in text_columns},
            low_memory=False,
            index_col=False,  # never take the first field as the index (it shifts every column)
            **_csv_options(kind),
        )
    if kind == "parquet":
        return pd.read_parquet(file)
    return _read_json_records(file)


def _check_field_counts(file: Path, kind: str, where: str, header: bool) -> None:
    """Raise DataError when a line has more or fewer fields than the first line (the header, if any).

    Uses the csv module with the same separator and quoting as pandas, so a quoted multi-line text is one
    record; line numbers are physical lines of the file (an editor's numbers), counting the header as 1.
    Blank lines are skipped, as pandas skips them.
    """
    sep, quoting = ("\t", csv.QUOTE_NONE) if kind == "tsv" else (",", csv.QUOTE_MINIMAL)
    with _open_text(file) as handle:
        if handle is None:  # a compression the csv module cannot open here; pandas still checks long lines
            return
        record_lines: list[str] = []

        def lines() -> Iterator[str]:
            for line in handle:
                record_lines.append(line)
                yield line

        reader = csv.reader(lines(), delimiter=sep, quoting=quoting)
        first: tuple[int, list[str]] | None = None  # (line number, fields) of the first record
        bad: list[tuple[int, int, int, str]] = []  # (first line, last line, fields, raw first line)
        n_bad = 0
        start = 1
        try:
            with _large_fields():
                for record in reader:
                    line, start = start, reader.line_num + 1
                    raw = record_lines[0] if record_lines else ""
                    record_lines.clear()
                    if not record or (len(record) == 1 and not record[0].strip()):
                        continue
                    if first is None:
                        first = (line, record)
                    elif len(record) != len(first[1]):
                        n_bad += 1
                        if len(bad) < _SHOWN_LINES:
                            bad.append((line, reader.line_num, len(record), raw))
        except csv.Error:  # leave the exact complaint to pandas
            return
    if first is None or not bad:
        return
    first_line, names = first
    expected = len(names)
    fields = f"{expected} field{'s' if expected != 1 else ''}"
    shown = "; ".join(
        f"line {line} has {count} field{'s' if count != 1 else ''}, expected {expected}, and starts '{_preview(raw)}'"
        + (f" (a quoted field runs on to line {end}: check for an unbalanced quote)" if end > line else "")
        for line, end, count, raw in bad
    )
    more = f" (and {n_bad - len(bad)} more line{'s' if n_bad - len(bad) != 1 else ''})" if n_bad > len(bad) else ""
    reference = (
        f"its header (line {first_line}: {format_choices(names, limit=8)}; {fields})" if header
        else f"its first line (line {first_line}, {fields})"
    )
    if kind == "tsv":
        fix = (
            "Every line needs the same number of tabs: remove tabs inside texts (or replace them with spaces), "
            "and check that no line was cut short."
        )
    else:
        fix = (
            'Quote fields that contain the separator, e.g. "a, b" (a quote inside a quoted field is doubled: '
            '""), or save the file tab-separated and use format: tsv (data.format).'
        )
    raise DataError(
        f"{where}: {n_bad} line{'s' if n_bad != 1 else ''} of '{file}' "
        f"{'have' if n_bad != 1 else 'has'} a different number of fields than {reference}, "
        f"separator: {'tab' if kind == 'tsv' else 'comma'}: {shown}{more}. Read as is, such lines would shift "
        f"or drop columns. {fix}"
    )


@contextmanager
def _open_text(file: Path) -> Iterator[IO[str] | None]:
    """``file`` as UTF-8 text (newline='' for the csv module), through gzip/bz2/xz by suffix; None otherwise."""
    name = file.name.lower()
    openers = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
    suffix = next((s for s in openers if name.endswith(s)), None)
    if suffix is None and name.endswith((".zip", ".zst", ".tar")):
        yield None
        return
    if suffix is None:
        handle: IO[str] = open(file, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed below
    else:
        handle = io.TextIOWrapper(openers[suffix](file, "rb"), encoding="utf-8-sig", newline="")
    try:
        yield handle
    finally:
        handle.close()


@contextmanager
def _large_fields() -> Iterator[None]:
    """Lift the csv module's 128 KiB field limit (long documents) for the duration of one scan."""
    old = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _preview(line: str) -> str:
    """The start of a raw line, one line, for a message."""
    line = line.rstrip("\r\n").lstrip(_BOM).replace("\t", "\\t")  # a tab shows as \t
    return line if len(line) <= _LINE_PREVIEW else line[: _LINE_PREVIEW - 3] + "..."


def _read_json_records(file: Path) -> pd.DataFrame:
    """JSON lines, or a JSON array of records; one object per row."""
    if file.name.lower().endswith(".gz"):
        import gzip

        with gzip.open(file, "rt", encoding="utf-8-sig") as handle:
            text = handle.read()
    else:
        text = file.read_text(encoding="utf-8-sig")
    stripped = text.lstrip()
    if not stripped:
        raise pd.errors.EmptyDataError("empty JSON file")
    if stripped.startswith("["):
        try:
            records = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"invalid JSON array at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        if not isinstance(records, list):
            raise ValueError(f"expected a JSON array of objects, got a JSON {type(records).__name__}")
        for i, record in enumerate(records):
            _check_record(record, f"array element {i}")
        return pd.DataFrame.from_records(records) if records else pd.DataFrame()
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON on line {number}, column {exc.colno}: {exc.msg}") from None
        _check_record(records[-1], f"line {number}")
    return pd.DataFrame.from_records(records) if records else pd.DataFrame()


def _check_record(record: object, what: str) -> None:
    """Every row must be a JSON object (``{"text": ..., "label": ...}``)."""
    if not isinstance(record, dict):
        raise ValueError(
            f'{what} is a JSON {type(record).__name__}, expected an object such as {{"text": "...", "label": 1}}'
        )


def _strip_bom(frame: pd.DataFrame) -> pd.DataFrame:
    """Remove stray leading U+FEFF from column names and string cells (left by concatenated files)."""
    frame.columns = [c.lstrip(_BOM) if isinstance(c, str) else c for c in frame.columns]
    for position in range(frame.shape[1]):
        series = frame.iloc[:, position]
        if not (series.dtype == object or isinstance(series.dtype, pd.StringDtype)):
            continue
        try:
            mask = series.str.startswith(_BOM, na=False).to_numpy(dtype=bool)
        except AttributeError:  # an object column without any strings (e.g. JSON lists)
            continue
        if mask.any():
            frame.iloc[mask.nonzero()[0], position] = series[mask].str.lstrip(_BOM).to_numpy()
    return frame
