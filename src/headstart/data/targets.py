"""What a run predicts besides single-label classes: numbers (regression) or several binary tasks.

Both play the part the :class:`~headstart.data.labels.LabelMap` plays for classes: built from the training
split only, saved as ``labels.json`` in the run directory, and read back by evaluate / predict. ``classes``
holds the target names and ``n_classes`` the number of model outputs, so code that sizes a head or names
outputs works on any of the three.

Regression targets are standardised with the training split's mean and std (``standardize``): the head learns
numbers of order one whatever the unit, and every output is mapped back (``decode``) before it is saved or
scored. Missing targets (empty cells, several targets per row) are NaN: masked in the loss and the metrics.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from headstart.data.labels import LabelMap
from headstart.errors import DataError
from headstart.fileio import atomic_write_text

__all__ = ["RegressionTargets", "TaskTargets", "describe_targets", "read_label_map", "strata", "target_values"]

_STRATA = 5  # quantile bins a numeric target is stratified by when splits are carved


def strata(values: Any, regression: bool) -> np.ndarray:
    """What a carved split keeps the proportions of: the class labels, or for numbers their quantile bin (so
    val / test span the target's range like train does)."""
    array = np.asarray(values)
    if not regression:
        return array
    numbers = pd.to_numeric(pd.Series(array.reshape(-1)), errors="coerce").to_numpy(dtype=np.float64)
    edges = np.nanquantile(numbers, np.linspace(0, 1, _STRATA + 1)[1:-1]) if np.isfinite(numbers).any() else []
    return np.where(np.isnan(numbers), -1, np.searchsorted(edges, numbers, side="right"))


def target_values(frame: pd.DataFrame, columns: Sequence[str], where: str, rows: Sequence[int] | None = None,
                  binary: bool = False) -> np.ndarray:
    """The target columns as float32 ``[N, T]`` (NaN = missing); text that is not a number is an error naming
    rows and values, and binary tasks accept only 0 / 1."""
    out = np.empty((len(frame), len(columns)), dtype=np.float32)
    for j, column in enumerate(columns):
        raw = frame[column]
        values = pd.to_numeric(raw, errors="coerce")
        bad = values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
        if binary:
            bad |= values.notna() & ~values.isin([0, 1])
        if bad.any():
            positions = np.flatnonzero(bad.to_numpy())
            source = np.asarray(rows)[positions] if rows is not None else positions
            shown = ", ".join(f"row {int(r) + 1}: {raw.iloc[p]!r}" for r, p in zip(source[:5], positions[:5], strict=True))
            expected = "0 or 1 (or empty for a missing label)" if binary else "a number (or empty when missing)"
            raise DataError(
                f"{where}: column '{column}' has {len(positions)} value(s) that are not {expected} ({shown}"
                f"{', ...' if len(positions) > 5 else ''}; data rows counted from 1 after the header). Fix those "
                f"cells, or point data.label_column(s) at the right column."
            )
        out[:, j] = values.to_numpy(dtype=np.float64)
    if not np.isfinite(out[~np.isnan(out)]).all():
        raise DataError(f"{where}: the target columns {list(columns)} hold infinite values; replace them.")
    return out


class _Outputs:
    """``classes`` names the model's outputs; ``n_classes`` counts them (the head's width)."""

    classes: list[str]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.classes)


@dataclass
class RegressionTargets(_Outputs):
    """Names of the numeric targets and the training split's mean / std of each (for standardising)."""

    classes: list[str]
    mean: list[float]
    std: list[float]
    standardize: bool = True
    kind = "regression"

    @classmethod
    def from_values(cls, names: Sequence[str], values: np.ndarray, standardize: bool = True,
                    where: str = "data.train") -> RegressionTargets:
        values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        counts = (~np.isnan(values)).sum(axis=0)
        empty = [str(n) for n, c in zip(names, counts, strict=True) if c == 0]
        if empty:
            raise DataError(f"{where}: the target column(s) {empty} have no values in the training split; every "
                            f"target needs training rows.")
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
        std = np.where(std > 0, std, 1.0)  # a constant target: nothing to scale
        return cls([str(n) for n in names], mean.tolist(), std.tolist(), bool(standardize))

    @classmethod
    def from_labels(cls, values: Any, name: str, where: str = "data.train", rows: Sequence[int] | None = None,
                    standardize: bool = True) -> RegressionTargets:
        """One numeric label column of the training rows (readers of text, images and event sequences)."""
        numbers = target_values(pd.DataFrame({name: list(values)}), [name], where, rows)
        _refuse_missing(numbers, where, rows)
        return cls.from_values([name], numbers, standardize, where)

    def encode(self, values: Any, where: str = "data.val", rows: Sequence[int] | None = None) -> np.ndarray:
        """A numeric label column as float32 ``[N]`` (one target; empty or non-numeric cells are errors)."""
        if len(self) != 1:
            raise DataError(f"{where}: encode reads one label column, but the run has {len(self)} targets.")
        numbers = target_values(pd.DataFrame({self.classes[0]: list(values)}), self.classes, where, rows)
        _refuse_missing(numbers, where, rows)
        return numbers[:, 0]

    def output_columns(self, values: np.ndarray) -> dict[str, Any]:
        """``predict``'s columns: ``prediction`` (one target) or ``prediction_<target>``, in the data's unit."""
        if len(self) == 1:
            return {"prediction": values[:, 0]}
        return {f"prediction_{name}": values[:, j] for j, name in enumerate(self.classes)}

    def label_columns(self, labels: np.ndarray) -> dict[str, Any]:
        labels = np.asarray(labels, dtype=np.float32).reshape(len(labels), -1)
        if len(self) == 1:
            return {"label": labels[:, 0]}
        return {f"label_{name}": labels[:, j] for j, name in enumerate(self.classes)}

    def spec(self) -> dict[str, Any]:
        """Plain data for the model's hyper-parameters (it standardises and decodes with them)."""
        mean, std = (self.mean, self.std) if self.standardize else ([0.0] * len(self), [1.0] * len(self))
        return {"kind": "regression", "names": self.classes, "mean": mean, "std": std}

    def to_json(self, path: str | os.PathLike[str]) -> None:
        payload = {"kind": "regression", "targets": self.classes, "mean": self.mean, "std": self.std,
                   "standardize": self.standardize}
        atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def _refuse_missing(numbers: np.ndarray, where: str, rows: Sequence[int] | None) -> None:
    missing = np.flatnonzero(np.isnan(numbers).any(axis=1))
    if len(missing):
        source = np.asarray(rows)[missing] if rows is not None else missing
        shown = ", ".join(str(int(r) + 1) for r in source[:5])
        raise DataError(f"{where} has {len(missing)} row(s) with an empty label (data rows {shown}"
                        f"{', ...' if len(missing) > 5 else ''}, counting from 1 after the header); every labelled row "
                        f"needs a number. Fill them in or delete those rows.")


@dataclass
class TaskTargets(_Outputs):
    """Several binary tasks per row (ClinTox: FDA approval and clinical-trial toxicity); one sigmoid each."""

    classes: list[str]
    kind = "multitask"

    @classmethod
    def from_values(cls, names: Sequence[str], values: np.ndarray, where: str = "data.train") -> TaskTargets:
        values = np.asarray(values, dtype=np.float64)
        one_class = [str(n) for j, n in enumerate(names)
                     if len(np.unique(values[~np.isnan(values[:, j]), j])) < 2]
        if one_class:
            raise DataError(f"{where}: the task column(s) {one_class} hold a single class (or none) in the training "
                            f"split, so there is nothing to learn; drop them from data.label_columns.")
        return cls([str(n) for n in names])

    def output_columns(self, proba: np.ndarray) -> dict[str, Any]:
        """``predict``'s columns: the probability of the positive class of each task."""
        return {f"proba_{name}": proba[:, j] for j, name in enumerate(self.classes)}

    def label_columns(self, labels: np.ndarray) -> dict[str, Any]:
        labels = np.asarray(labels, dtype=np.float32).reshape(len(labels), -1)
        return {f"label_{name}": labels[:, j] for j, name in enumerate(self.classes)}

    def spec(self) -> dict[str, Any]:
        return {"kind": "multitask", "names": self.classes}

    def to_json(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(path, json.dumps({"kind": "multitask", "tasks": self.classes}, indent=2) + "\n")


def read_label_map(path: str | os.PathLike[str]) -> LabelMap | RegressionTargets | TaskTargets:
    """``labels.json`` of a run, whichever kind of target it describes."""
    source = Path(path)
    try:
        payload = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return LabelMap.from_json(source)  # its errors say what is wrong and how to fix it
    kind = payload.get("kind", "classification") if isinstance(payload, dict) else "classification"
    try:
        if kind == "regression":
            return RegressionTargets(list(payload["targets"]), [float(v) for v in payload["mean"]],
                                     [float(v) for v in payload["std"]], bool(payload.get("standardize", True)))
        if kind == "multitask":
            return TaskTargets(list(payload["tasks"]))
    except (KeyError, TypeError, ValueError):
        raise DataError(f"The target description '{source}' ({kind}) is incomplete: {str(payload)[:120]!r}. Restore "
                        f"labels.json from the run directory.") from None
    return LabelMap.from_json(source)


def describe_targets(label_map: Any) -> str:
    """``2 classes``, ``1 regression target (logS)``, ``2 binary tasks``: what the head predicts."""
    n, kind = label_map.n_classes, getattr(label_map, "kind", "classification")
    if kind == "regression":
        return f"{n} regression target{'s' if n != 1 else ''} ({', '.join(map(str, label_map.classes))})"
    if kind == "multitask":
        return f"{n} binary tasks ({', '.join(map(str, label_map.classes))})"
    return f"{n} classes"
