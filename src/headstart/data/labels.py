"""The label map: original label values <-> contiguous class indices 0..n_classes-1.

The map is built from the training labels only and saved with every run, so that evaluation and
prediction decode the same indices to the same labels. Values stay JSON-native (ints stay ints, strings
stay strings); whole floats become ints because a numeric label column read from a file with a missing
cell comes back as float (1 -> 1.0) and must still match the int labels of the training file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from headstart.errors import DataError
from headstart.fileio import atomic_write_text

__all__ = ["Label", "LabelMap"]

Label = int | float | str | bool
_SHOW_ROWS = 5
_MISSING = object()


@dataclass
class LabelMap:
    """Sorted distinct training labels; a label's position in ``classes`` is its class index."""

    classes: list[Label]
    _index: dict[Label, int] = field(init=False, repr=False, compare=False)
    kind = "classification"

    def __post_init__(self) -> None:
        self.classes = [_normalise(c) for c in self.classes]
        if any(c is _MISSING for c in self.classes):
            raise DataError(f"A label map cannot contain an empty label; got classes {self.classes!r}.")
        self._index = {c: i for i, c in enumerate(self.classes)}
        if len(self._index) != len(self.classes):
            raise DataError(
                f"The label map has duplicate classes: {self.classes!r}. Each label must appear once."
            )

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def spec(self) -> None:
        """The model's target hyper-parameter: None means one softmax over the classes."""
        return None

    def output_columns(self, proba: np.ndarray) -> dict[str, Any]:
        """``predict``'s columns: the predicted label and one probability per class."""
        return {"prediction": self.decode(proba.argmax(1)),
                **{f"proba_{name}": proba[:, i] for i, name in enumerate(self.classes)}}

    def label_columns(self, labels: np.ndarray) -> dict[str, Any]:
        return {"label": self.decode(labels)}

    @classmethod
    def from_labels(
        cls, values: Iterable[Any], where: str = "data.train", rows: Sequence[int] | None = None
    ) -> LabelMap:
        """Build the map from training labels; empty labels are an error (they cannot be trained on).

        ``rows`` are the 0-based source-file rows of ``values`` (default: their positions), used to name
        the offending rows in messages.
        """
        codes, uniques = _factorize(values, where)
        _raise_on_missing(codes, uniques, where, rows, "Every training row needs a label.")
        present = {u for u in uniques if u is not _MISSING}
        if not present:
            raise DataError(f"{where} has no labels at all. Point it at a file with labelled rows.")
        return cls(sorted(present, key=_sort_key))

    def encode(
        self, values: Iterable[Any], where: str = "data.val", rows: Sequence[int] | None = None
    ) -> np.ndarray:
        """Map labels to int64 class indices; empty or unseen labels are errors naming the rows and values."""
        codes, uniques = _factorize(values, where)
        _raise_on_missing(codes, uniques, where, rows, "Labelled rows are needed for training and metrics.")
        lookup = np.array([self._index.get(u, -1) for u in uniques] + [-1], dtype=np.int64)
        encoded = lookup[codes]  # code -1 (pandas NA) picks the trailing -1, already ruled out above
        unknown = encoded < 0
        if unknown.any():
            counts = pd.Series(codes[unknown]).value_counts()
            seen = [
                f"{uniques[code]!r} ({count} row{'s' if count != 1 else ''})"
                for code, count in counts.items()
            ]
            hint = self._type_hint([uniques[code] for code in counts.index])
            raise DataError(
                f"{where} has labels that never occur in the training data: {', '.join(seen[:20])}"
                f"{f', ... ({len(seen) - 20} more)' if len(seen) > 20 else ''}. Known classes: "
                f"{_show(self.classes)}.{hint} A classifier can only predict classes it was "
                f"trained on: add rows with those labels to the training data, or drop those rows from {where}."
            )
        return encoded

    def decode(self, indices: Iterable[int] | np.ndarray) -> list[Label]:
        """Class indices (list, array or tensor) back to the original labels."""
        array = np.asarray(indices.tolist() if hasattr(indices, "tolist") else list(indices), dtype=np.int64)
        bad = array[(array < 0) | (array >= self.n_classes)]
        if bad.size:
            raise DataError(
                f"Cannot decode class index {int(bad[0])}: the label map has {self.n_classes} classes "
                f"(indices 0..{self.n_classes - 1}). The predictions come from a model trained with a different "
                f"label map; use the label map saved in the same run directory as the checkpoint."
            )
        return [self.classes[i] for i in array.reshape(-1).tolist()]

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write ``{"classes": [...]}`` atomically, so a crash never leaves half a file."""
        atomic_write_text(path, json.dumps({"classes": self.classes}, ensure_ascii=False, indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> LabelMap:
        """Read a map written by :meth:`to_json`."""
        source = Path(path)
        try:
            payload = json.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(
                f"The label map '{source}' does not exist (resolved to {source.resolve()}). It is written as "
                f"labels.json in every run directory; point to the run directory the checkpoint came from."
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(
                f"The label map '{source}' cannot be read ({' '.join(str(exc).split())}). Expected a JSON "
                f'file such as {{"classes": [0, 1]}}; restore it from the run directory.'
            ) from None
        classes = payload.get("classes") if isinstance(payload, dict) else None
        if not isinstance(classes, list) or not classes:
            raise DataError(
                f"The label map '{source}' has no 'classes' list (found {str(payload)[:80]!r}). Expected a JSON "
                f'object such as {{"classes": [0, 1]}}; restore it from the run directory.'
            )
        return cls(classes)

    def _type_hint(self, unknown: list[Any]) -> str:
        """Point out '1' vs 1 mismatches, which look identical in a message."""
        known_text = {str(c): c for c in self.classes}
        clashes = [u for u in unknown if str(u) in known_text and not isinstance(u, type(known_text[str(u)]))]
        if not clashes:
            return ""
        u = clashes[0]
        return (
            f" Note: {u!r} is a {type(u).__name__} but the training class {known_text[str(u)]!r} is a "
            f"{type(known_text[str(u)]).__name__}; store the labels with the same type in both files."
        )


def _normalise(value: Any, where: str = "the label map") -> Any:
    """One label to a JSON-native value; _MISSING for NaN/None/blank strings."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return _MISSING
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        if np.isnan(value):
            return _MISSING
        return int(value) if value.is_integer() else value
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return value if value.strip() else _MISSING
    raise DataError(
        f"{where}: label {value!r} has type {type(value).__name__}; labels must be numbers or strings. Fix the label "
        f"column (data.label_column) so that each cell holds one number or one string."
    )


def _factorize(values: Iterable[Any], where: str) -> tuple[np.ndarray, list[Any]]:
    """Codes per row and normalised distinct values; normalising after factorize keeps big columns fast."""
    if isinstance(values, pd.Series):
        series = values
    elif isinstance(values, np.ndarray):
        series = pd.Series(values.reshape(-1))
    else:
        series = pd.Series(list(values), dtype=object)
    try:
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
    except TypeError:  # unhashable cells such as JSON lists
        bad = next((v for v in series if not isinstance(v, Hashable)), None)
        raise DataError(
            f"{where}: label {bad!r} has type {type(bad).__name__}; labels must be numbers or strings. Fix the "
            f"label column (data.label_column) so that each cell holds one number or one string."
        ) from None
    return np.asarray(codes, dtype=np.int64), [_normalise(u, where) for u in uniques]


def _raise_on_missing(
    codes: np.ndarray, uniques: list[Any], where: str, rows: Sequence[int] | None, why: str
) -> None:
    missing_codes = [i for i, u in enumerate(uniques) if u is _MISSING]
    missing = (codes < 0) | np.isin(codes, missing_codes)
    if not missing.any():
        return
    positions = np.flatnonzero(missing)
    source_rows = np.asarray(rows)[positions] if rows is not None else positions
    shown = ", ".join(str(int(r) + 1) for r in source_rows[:_SHOW_ROWS])
    more = f" and {len(positions) - _SHOW_ROWS} more" if len(positions) > _SHOW_ROWS else ""
    raise DataError(
        f"{where} has {len(positions)} row{'s' if len(positions) != 1 else ''} with an empty label (data "
        f"row{'s' if len(positions) != 1 else ''} {shown}{more}, counting from 1 after the header). {why} "
        f"Clean the file: fill in those labels or delete those rows."
    )


def _sort_key(value: Label) -> tuple[int, Any]:
    """Numbers numerically, then strings lexicographically."""
    if isinstance(value, (bool, int, float)):
        return (0, value)
    return (1, str(value))


def _show(classes: list[Label], limit: int = 30) -> str:
    """Classes with repr quoting, so that 1 and '1' look different."""
    shown = ", ".join(repr(c) for c in classes[:limit])
    return shown + (f", ... ({len(classes) - limit} more)" if len(classes) > limit else "")
