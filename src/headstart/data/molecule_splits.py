"""Train / val / test splits of molecules: scaffold, random, stratified, or a split column.

The scaffold split is MoleculeNet's deterministic one (DeepChem's ``ScaffoldSplitter``, also used by OGB):
molecules are grouped by their Bemis-Murcko scaffold (acyclic molecules share the scaffold ""), the groups are
sorted by size, largest first, ties broken by the group's first row, *later* rows first; each group then goes
whole to train while train stays within ``(1 - val_fraction - test_fraction) * n`` rows, else to val while train
+ val stay within ``(1 - test_fraction) * n``, else to test. Big scaffold families therefore train the model and
val / test hold rarer scaffolds, which measures generalisation to new chemotypes. It takes no seed: every seed of
a run (and every benchmark) sees the same split.

Why later-first ties (DeepChem) and not chemprop's deterministic order (file order, earlier first): with
earlier-first ties the last singleton scaffolds of the file fill val and test, and curated files are often
sorted by label. In chemprop's BBBP copy every row from about row 1,000 on is a penetrating molecule, so
earlier-first ties give val and test only positives (ROC-AUC undefined); DeepChem's order gives both classes.
Still, the class balance of a scaffold split can differ a lot from the file's (BBBP: 52% positives in test,
77% overall), and a split of a file sorted by label in the other direction can still lose a class: check
two classes per split where it matters. Random and stratified splits are seeded; their reports count the
scaffolds they leak across splits when given the molecules.

Every function returns a :class:`SplitResult`: sorted int64 positions per split and a ``report`` dict (rows
and, where molecules are known, scaffolds per split and the number of scaffolds found in more than one split).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from headstart.data.splits import stratified_split
from headstart.errors import ConfigError, DataError, format_choices

__all__ = [
    "SPLIT_NAMES",
    "SplitResult",
    "column_split",
    "normalise_split_values",
    "random_split",
    "scaffold_of",
    "scaffold_split",
    "scaffolds_of",
    "stratified_split_rows",
]

SPLIT_NAMES = ("train", "val", "test")
# values accepted in a split column (case-insensitive, surrounding spaces ignored)
_SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_LARGEST_SHOWN = 5


@dataclass
class SplitResult:
    """Sorted int64 positions of each split and a JSON-ready ``report``."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}


def scaffold_of(mol: Any, include_chirality: bool = False) -> str:
    """Bemis-Murcko scaffold SMILES of an RDKit molecule; "" for an acyclic one."""
    from rdkit.Chem.Scaffolds.MurckoScaffold import MurckoScaffoldSmiles

    return MurckoScaffoldSmiles(mol=mol, includeChirality=bool(include_chirality))


def scaffolds_of(mols: Sequence[Any], include_chirality: bool = False) -> list[str]:
    """:func:`scaffold_of` of every molecule (RDKit's logging silenced)."""
    from rdkit import rdBase

    with rdBase.BlockLogs():
        return [scaffold_of(mol, include_chirality) for mol in mols]


def scaffold_split(mols: Sequence[Any], val_fraction: float, test_fraction: float,
                   include_chirality: bool = False) -> SplitResult:
    """Deterministic scaffold split (see the module docstring); no seed, so the run's seed never changes it."""
    _check_fractions(val_fraction, test_fraction)
    n = len(mols)
    scaffolds = scaffolds_of(mols, include_chirality)
    groups: dict[str, list[int]] = {}
    for i, scaffold in enumerate(scaffolds):
        groups.setdefault(scaffold, []).append(i)
    # DeepChem's ScaffoldSplitter order (as in MoleculeNet, OGB and pretrain-gnns): largest set first, ties by
    # the *later* first occurrence first, so equal-sized rare sets at the start of the file go to val / test
    ordered = sorted(groups.values(), key=lambda members: (len(members), members[0]), reverse=True)
    train_cutoff = (1.0 - val_fraction - test_fraction) * n
    val_cutoff = (1.0 - test_fraction) * n
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for members in ordered:
        if len(parts["train"]) + len(members) <= train_cutoff:
            parts["train"].extend(members)
        elif len(parts["train"]) + len(parts["val"]) + len(members) <= val_cutoff:
            parts["val"].extend(members)
        else:
            parts["test"].extend(members)
    result = _result(parts)
    result.report = {"method": "scaffold", "include_chirality": bool(include_chirality),
                     "rows": _rows(result), "deterministic": True,
                     **_scaffold_report(scaffolds, result)}
    _check_not_empty(result, val_fraction, test_fraction, "scaffold",
                     "the scaffold sets are too large for the requested fractions (each set goes whole to one "
                     "split); raise data.val_fraction / data.test_fraction or use data.molecules.split: random")
    return result


def random_split(n: int, val_fraction: float, test_fraction: float, seed: int,
                 mols: Sequence[Any] | None = None, include_chirality: bool = False) -> SplitResult:
    """Seeded random split: ``round(test_fraction * n)`` test rows, ``round(val_fraction * n)`` val rows."""
    _check_fractions(val_fraction, test_fraction)
    order = np.random.default_rng(seed).permutation(int(n))
    n_test, n_val = _count(test_fraction, n), _count(val_fraction, n)
    parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    result = _result(parts)
    result.report = {"method": "random", "seed": int(seed), "rows": _rows(result)}
    _add_scaffolds(result, mols, include_chirality)
    _check_not_empty(result, val_fraction, test_fraction, "random", f"there are only {n} rows")
    return result


def stratified_split_rows(labels: Any, val_fraction: float, test_fraction: float, seed: int,
                          mols: Sequence[Any] | None = None, include_chirality: bool = False) -> SplitResult:
    """Seeded split keeping the class proportions of one label column in every split
    (:func:`headstart.data.splits.stratified_split`: test is carved first, then val from the rest)."""
    _check_fractions(val_fraction, test_fraction)
    values = labels.to_numpy() if isinstance(labels, (pd.DataFrame, pd.Series)) else np.asarray(labels)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ConfigError(f"data.molecules.split: stratified keeps the class proportions of one label, but the "
                          f"targets have shape {values.shape} (several target columns, data.label_columns). Use "
                          f"split: scaffold or random for several targets.")
    missing = pd.isna(values)
    if missing.any():
        raise DataError(f"data.molecules.split: stratified needs a label on every row, but {int(missing.sum())} "
                        f"rows have none (first at position {int(np.flatnonzero(missing)[0])}). Fill the labels or "
                        f"use split: scaffold or random.")
    n = len(values)
    everything = np.arange(n, dtype=np.int64)
    rest, test = stratified_split(values, test_fraction, seed) if test_fraction > 0 else (everything, everything[:0])
    n_val = _count(val_fraction, n)
    if n_val and len(rest):
        keep, val_local = stratified_split(values[rest], min(1.0, n_val / len(rest)), seed)
        train, val = rest[keep], rest[val_local]
    else:
        train, val = rest, everything[:0]
    result = _result({"train": train, "val": val, "test": test})
    result.report = {"method": "stratified", "seed": int(seed), "rows": _rows(result)}
    _add_scaffolds(result, mols, include_chirality)
    _check_not_empty(result, val_fraction, test_fraction, "stratified", f"there are only {n} rows")
    return result


def normalise_split_values(values: Any, where: str, rows: np.ndarray | None = None) -> np.ndarray:
    """Split-column values as 'train' / 'val' / 'test' (case-insensitive; 'valid' and 'validation' mean val).

    Any other value, an empty cell included, is a DataError listing the values, their counts and their first
    data rows (``rows``: 0-based data rows of ``values``; positions when None).
    """
    raw = values.to_numpy() if isinstance(values, (pd.Series, pd.Index)) else np.asarray(values, dtype=object)
    rows = np.arange(len(raw), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.empty(len(raw), dtype=object)
    unknown: dict[str, list[int]] = {}
    for i, value in enumerate(raw):
        key = value.strip().lower() if isinstance(value, str) else None
        name = _SPLIT_ALIASES.get(key) if key is not None else None
        if name is None:
            shown = "(empty)" if value is None or (not isinstance(value, str) and pd.isna(value)) else repr(value)
            unknown.setdefault(shown, []).append(int(rows[i]))
        out[i] = name
    if unknown:
        listed = "; ".join(f"{v} x{len(r)} (data rows {', '.join(str(x + 1) for x in r[:3])}"
                           f"{', ...' if len(r) > 3 else ''})" for v, r in list(unknown.items())[:10])
        more = f"; ... ({len(unknown) - 10} more values)" if len(unknown) > 10 else ""
        raise DataError(f"{where}: {sum(len(r) for r in unknown.values())} row(s) name no known split: {listed}{more} "
                        f"(data rows counted from 1 after the header). Expected one of "
                        f"{format_choices(SPLIT_NAMES)} (case-insensitive; 'valid' / 'validation' also mean val). "
                        f"Fix those cells.")
    return out.astype(str) if len(out) else np.asarray([], dtype=str)


def column_split(values: Any, where: str, mols: Sequence[Any] | None = None,
                 include_chirality: bool = False) -> SplitResult:
    """Positions of the rows whose split column says train / val / test (see :func:`normalise_split_values`)."""
    names = normalise_split_values(values, where)
    parts = {name: np.flatnonzero(names == name) for name in SPLIT_NAMES}
    result = _result(parts)
    result.report = {"method": "column", "rows": _rows(result)}
    _add_scaffolds(result, mols, include_chirality)
    if not len(result.train):
        raise DataError(f"{where}: no row says 'train' ({result.report['rows']}); a run needs training rows. "
                        f"Fix the split column.")
    return result


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    v, t = float(val_fraction), float(test_fraction)
    if not (0.0 <= v < 1.0 and 0.0 <= t < 1.0 and v + t < 1.0):
        raise ConfigError(f"data.val_fraction ({val_fraction!r}) and data.test_fraction ({test_fraction!r}) must each "
                          f"be in [0, 1) and sum to less than 1, so that rows remain for training. Lower them.")


def _count(fraction: float, n: int) -> int:
    return int(np.floor(float(fraction) * int(n) + 0.5))


def _result(parts: dict[str, Any]) -> SplitResult:
    arrays = {name: np.sort(np.asarray(parts[name], dtype=np.int64)) for name in SPLIT_NAMES}
    return SplitResult(arrays["train"], arrays["val"], arrays["test"])


def _rows(result: SplitResult) -> dict[str, int]:
    return {name: len(idx) for name, idx in result.parts().items()}


def _add_scaffolds(result: SplitResult, mols: Sequence[Any] | None, include_chirality: bool) -> None:
    if mols is not None:
        result.report.update(_scaffold_report(scaffolds_of(mols, include_chirality), result))


def _scaffold_report(scaffolds: Sequence[str], result: SplitResult) -> dict[str, Any]:
    """Scaffolds per split, the 5 largest scaffold sets of train, the scaffolds found in more than one split
    (``overlap``) and, for val / test, the rows whose scaffold is also in train (the leak a random split has)."""
    sets: dict[str, pd.Series] = {name: pd.Series([scaffolds[i] for i in idx], dtype=object).value_counts()
                                  for name, idx in result.parts().items()}
    seen: dict[str, int] = {}
    for counts in sets.values():
        for scaffold in counts.index:
            seen[scaffold] = seen.get(scaffold, 0) + 1
    train = set(sets["train"].index)
    return {
        "scaffolds": {name: len(counts) for name, counts in sets.items()},
        "scaffolds_total": len(seen),
        "acyclic_rows": int(sum(1 for s in scaffolds if s == "")),
        "largest_train_scaffold_sets": [int(c) for c in sets["train"].to_numpy()[:_LARGEST_SHOWN]],
        "overlap": int(sum(1 for count in seen.values() if count > 1)),
        "rows_with_train_scaffold": {name: int(counts[[s in train for s in counts.index]].sum())
                                     for name, counts in sets.items() if name != "train"},
    }


def _check_not_empty(result: SplitResult, val_fraction: float, test_fraction: float, method: str,
                     why: str) -> None:
    empty = [name for name, fraction in (("train", 1.0), ("val", val_fraction), ("test", test_fraction))
             if fraction > 0 and not len(getattr(result, name))]
    if empty:
        raise DataError(f"The {method} split left {' and '.join(empty)} empty (rows per split: "
                        f"{result.report['rows']}, data.val_fraction {val_fraction}, data.test_fraction "
                        f"{test_fraction}): {why}. Provide more data or adjust the fractions.")
