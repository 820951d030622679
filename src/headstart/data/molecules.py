"""Molecules: a table with a SMILES column -> RDKit molecules -> atom/bond graphs -> ``torch_geometric`` batches.

Reading (:func:`read_molecules`) parses every SMILES once with RDKit; an empty cell, a string RDKit refuses
(syntax or chemistry, e.g. a five-valent carbon) or a molecule without atoms is *invalid*. Invalid rows are
refused with their data rows and strings (``data.molecules.invalid: error``) or left out with a logged count
(``drop``); never silently. Rows keep their 0-based data-row index in the file (``rows``) through drops and
splits, for messages and predictions files.

Graphs (:func:`featurize`) follow the OGB / torch-geometric scheme (``torch_geometric.utils.smiles``): nine
categorical atom features and three bond features, stored as long indices. A value outside a feature's
vocabulary (an organometallic charge, a hybridisation newer RDKit versions name) maps to one extra "other"
index per feature instead of failing, so ``ATOM_FEATURE_SIZES[i] == len(vocabulary) + 1``. Hydrogens stay
implicit, as parsed (their count is the ``num_hs`` feature); both directions of every bond are edges.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from headstart.data.molecule_splits import normalise_split_values
from headstart.data.readers import detect_format, read_table
from headstart.errors import ConfigError, DataError, did_you_mean, format_choices

if TYPE_CHECKING:
    from torch_geometric.data import Batch, Data

    from headstart.config import DataConfig, MoleculesConfig

__all__ = [
    "ATOM_FEATURES",
    "ATOM_FEATURE_SIZES",
    "BOND_FEATURES",
    "BOND_FEATURE_SIZES",
    "FEATURIZER_VERSION",
    "MoleculeDataset",
    "MoleculeTable",
    "collate_graphs",
    "featurize",
    "featurize_all",
    "parse_smiles",
    "read_molecules",
]

_FORMAT = "headstart.molecules/1"
FEATURIZER_VERSION = "ogb-9atom-3bond-other/1"  # bump whenever featurize() changes what it returns
_SHOWN_INVALID = 10  # invalid SMILES quoted in an error
_LOGGED_DROPPED = 5  # dropped SMILES quoted in the warning
_log = logging.getLogger("headstart")


def _vocabularies() -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    from torch_geometric.utils.smiles import e_map, x_map

    return {k: list(v) for k, v in x_map.items()}, {k: list(v) for k, v in e_map.items()}


_ATOM_VOCAB, _BOND_VOCAB = _vocabularies()
ATOM_FEATURES: tuple[str, ...] = ("atomic_num", "chirality", "degree", "formal_charge", "num_hs",
                                  "num_radical_electrons", "hybridization", "is_aromatic", "is_in_ring")
BOND_FEATURES: tuple[str, ...] = ("bond_type", "stereo", "is_conjugated")
# index len(vocabulary) of each feature is "other" (a value outside the vocabulary)
ATOM_FEATURE_SIZES: tuple[int, ...] = tuple(len(_ATOM_VOCAB[name]) + 1 for name in ATOM_FEATURES)
BOND_FEATURE_SIZES: tuple[int, ...] = tuple(len(_BOND_VOCAB[name]) + 1 for name in BOND_FEATURES)
_ENUMS = {"chirality": "ChiralType", "hybridization": "HybridizationType", "bond_type": "BondType",
          "stereo": "BondStereo"}


def _index(name: str, vocabulary: list[Any]) -> dict[Any, int]:
    """Value -> index; RDKit enum features are keyed by the enum itself (what the getters return, no str())."""
    if name not in _ENUMS:
        return {v: i for i, v in enumerate(vocabulary)}
    from rdkit import Chem

    names = getattr(Chem.rdchem, _ENUMS[name]).names
    return {names[v]: i for i, v in enumerate(vocabulary) if v in names}


_ATOM_INDEX = [_index(name, _ATOM_VOCAB[name]) for name in ATOM_FEATURES]
_BOND_INDEX = [_index(name, _BOND_VOCAB[name]) for name in BOND_FEATURES]
_ATOM_OTHER = [len(_ATOM_VOCAB[name]) for name in ATOM_FEATURES]
_BOND_OTHER = [len(_BOND_VOCAB[name]) for name in BOND_FEATURES]


def _atom_row(atom: Any) -> list[int]:
    """Indices in ATOM_FEATURES order (the vocabulary size = "other" for values outside it)."""
    (num, chiral, degree, charge, hs, radical, hybrid, aromatic, ring), (o0, o1, o2, o3, o4, o5, o6, o7, o8) = (
        _ATOM_INDEX, _ATOM_OTHER)
    return [num.get(atom.GetAtomicNum(), o0), chiral.get(atom.GetChiralTag(), o1),
            degree.get(atom.GetTotalDegree(), o2), charge.get(atom.GetFormalCharge(), o3),
            hs.get(atom.GetTotalNumHs(), o4), radical.get(atom.GetNumRadicalElectrons(), o5),
            hybrid.get(atom.GetHybridization(), o6), aromatic.get(bool(atom.GetIsAromatic()), o7),
            ring.get(bool(atom.IsInRing()), o8)]


def _bond_row(bond: Any) -> list[int]:
    (kind, stereo, conjugated), (o0, o1, o2) = _BOND_INDEX, _BOND_OTHER
    return [kind.get(bond.GetBondType(), o0), stereo.get(bond.GetStereo(), o1),
            conjugated.get(bool(bond.GetIsConjugated()), o2)]


def featurize(mol: Any) -> Data:
    """One RDKit molecule -> ``Data(x [A, 9], edge_index [2, 2B], edge_attr [2B, 3])``, all long.

    Edges are sorted by (source, target) like ``torch_geometric.utils.from_rdmol``; a molecule without bonds
    (one atom, an ion pair written with '.') has empty ``edge_index`` [2, 0] and ``edge_attr`` [0, 3].
    """
    from torch_geometric.data import Data

    n_atoms = mol.GetNumAtoms()
    x = torch.tensor([_atom_row(mol.GetAtomWithIdx(i)) for i in range(n_atoms)], dtype=torch.long)
    x = x.view(n_atoms, len(ATOM_FEATURES))
    bonds = [(bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), *_bond_row(bond)) for bond in mol.GetBonds()]
    if bonds:
        one_way = np.asarray(bonds, dtype=np.int64)
        both = np.concatenate([one_way, one_way[:, [1, 0, *range(2, one_way.shape[1])]]])
        both = both[np.argsort(both[:, 0] * n_atoms + both[:, 1], kind="stable")]
        edge_index = torch.from_numpy(np.ascontiguousarray(both[:, :2].T))
        edge_attr = torch.from_numpy(np.ascontiguousarray(both[:, 2:]))
    else:
        edge_index = torch.empty((2, 0), dtype=torch.long)
        edge_attr = torch.empty((0, len(BOND_FEATURES)), dtype=torch.long)
    return Data(x=x, edge_index=edge_index, edge_attr=edge_attr, num_nodes=n_atoms)


def featurize_all(mols: Sequence[Any]) -> list[Data]:
    """:func:`featurize` of every molecule, in order."""
    return [featurize(mol) for mol in mols]


def parse_smiles(smiles: Sequence[Any]) -> tuple[list[Any], list[int]]:
    """RDKit molecules for the strings (None where invalid) and the positions of the invalid ones.

    Invalid: not a string or blank, refused by RDKit (syntax or sanitisation), or a molecule without atoms.
    Surrounding spaces are ignored (RDKit would read text after a space as the molecule's name).
    RDKit's own stderr logging is silenced; :func:`_why_invalid` says why for the rows an error quotes.
    """
    from rdkit import Chem, rdBase

    mols: list[Any] = []
    invalid: list[int] = []
    with rdBase.BlockLogs():
        for position, value in enumerate(smiles):
            mol = Chem.MolFromSmiles(value.strip()) if isinstance(value, str) and value.strip() else None
            if mol is None or mol.GetNumAtoms() == 0:
                invalid.append(position)
                mol = None
            mols.append(mol)
    return mols, invalid


def _why_invalid(value: Any) -> str:
    """A short reason RDKit refuses ``value`` (only called for the few rows a message quotes)."""
    from rdkit import Chem, rdBase

    if not isinstance(value, str) or not value.strip():
        return "empty"
    with rdBase.BlockLogs():
        raw = Chem.MolFromSmiles(value.strip(), sanitize=False)
        if raw is None:
            return "not valid SMILES syntax"
        if raw.GetNumAtoms() == 0:
            return "no atoms"
        problems = Chem.DetectChemistryProblems(raw)
    if problems:
        return problems[0].Message()
    return "RDKit could not sanitise it"


@dataclass
class MoleculeTable:
    """The valid molecules of one file, in file order.

    ``rows``: 0-based data-row index in the file of every kept molecule (after drops). ``targets``: the raw
    target columns, in config order (None for an unlabelled file). ``split``: the split column normalised to
    'train' / 'val' / 'test' (None unless ``data.molecules.split: column``). ``dropped``: (row, string) of the
    invalid rows left out under ``invalid: drop``.
    """

    smiles: list[str]
    rows: np.ndarray
    targets: pd.DataFrame | None
    split: np.ndarray | None
    mols: list[Any]
    dropped: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.smiles)


def molecules_config(data_cfg: DataConfig) -> MoleculesConfig:
    """``data.molecules``, or its defaults when the section is absent."""
    from headstart.config import MoleculesConfig

    return data_cfg.molecules if data_cfg.molecules is not None else MoleculesConfig()


def target_columns(data_cfg: DataConfig) -> list[str]:
    """``data.label_columns`` when set, else ``[data.label_column]``."""
    return list(data_cfg.label_columns) if data_cfg.label_columns else [data_cfg.label_column]


def read_molecules(path: str | os.PathLike[str], data_cfg: DataConfig, where: str = "data.train",
                   require_targets: bool = True) -> MoleculeTable:
    """Read one csv / tsv / parquet / jsonl file of molecules and parse every SMILES.

    The target columns (``data.label_columns`` or ``[data.label_column]``) must all exist when
    ``require_targets``; otherwise they are returned when all exist and ``targets`` is None when any is
    missing (a file to predict on). With ``data.molecules.split: column`` the split column is required in
    ``data.train`` and read from other files when present.
    """
    mcfg = molecules_config(data_cfg)
    smiles_column = mcfg.smiles_column
    targets = target_columns(data_cfg)
    if smiles_column in targets:
        raise ConfigError(f"data.molecules.smiles_column '{smiles_column}' is also a target column "
                          f"(data.label_column(s): {format_choices(targets)}); the model would read its labels. "
                          f"Point them at different columns.")
    split_column = mcfg.split_column if mcfg.split == "column" else None
    text_columns = [smiles_column] + ([split_column] if split_column else [])
    frame = read_table(path, data_cfg.format, where, text_columns=text_columns)
    available = [str(c) for c in frame.columns]
    frame.columns = available

    missing: dict[str, str] = {}
    if smiles_column not in available:
        missing[smiles_column] = "data.molecules.smiles_column"
    if require_targets:
        key = "data.label_columns" if data_cfg.label_columns else "data.label_column"
        missing.update({name: key for name in targets if name not in available})
    if split_column and where == "data.train" and split_column not in available:
        missing[split_column] = "data.molecules.split_column"
    if missing:
        what = " and ".join(f"no column '{name}' ({key})" for name, key in missing.items())
        hints = "".join(dict.fromkeys(did_you_mean(name, available) for name in missing))
        raise DataError(f"{where} ('{path}') has {what}. Columns found: {format_choices(available)}.{hints} "
                        f"Set {' / '.join(dict.fromkeys(missing.values()))} to one of the available columns.")

    raw = frame[smiles_column].tolist()
    mols, invalid = parse_smiles(raw)
    if invalid and mcfg.invalid == "error":
        raise DataError(_invalid_message(raw, invalid, path, where, data_cfg.format))
    dropped = [(int(i), "" if not isinstance(raw[i], str) else raw[i]) for i in invalid]
    keep = np.setdiff1d(np.arange(len(raw), dtype=np.int64), np.asarray(invalid, dtype=np.int64))
    if not len(keep):
        raise DataError(f"{where} ('{path}'): none of its {len(raw)} SMILES in column '{smiles_column}' is a valid "
                        f"molecule (first: {_quote(raw[0])}, {_why_invalid(raw[0])}). Check that "
                        f"data.molecules.smiles_column names the SMILES column.")
    if dropped:
        shown = "; ".join(f"data row {r + 1}: {_quote(s)}" for r, s in dropped[:_LOGGED_DROPPED])
        more = f"; ... ({len(dropped) - _LOGGED_DROPPED} more)" if len(dropped) > _LOGGED_DROPPED else ""
        _log.warning("%s ('%s'): left out %d of %d rows whose SMILES RDKit cannot read (data.molecules.invalid: "
                     "drop; data rows counted from 1 after the header): %s%s", where, path, len(dropped), len(raw),
                     shown, more)

    found = all(name in available for name in targets)
    target_frame = frame[targets].iloc[keep].reset_index(drop=True) if found else None
    split = None
    if split_column and split_column in available:
        split = normalise_split_values(frame[split_column].to_numpy()[keep], f"{where} ('{path}') column "
                                       f"'{split_column}' (data.molecules.split_column)", rows=keep)
    return MoleculeTable(smiles=[raw[i].strip() for i in keep], rows=keep, targets=target_frame, split=split,
                         mols=[mols[i] for i in keep], dropped=dropped)


def _quote(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        return "(empty)"
    return repr(value if len(value) <= 120 else value[:117] + "...")


def _invalid_message(raw: Sequence[Any], invalid: Sequence[int], path: str | os.PathLike[str], where: str,
                     fmt: str) -> str:
    shown = "; ".join(f"data row {i + 1}: {_quote(raw[i])}" + ("" if _quote(raw[i]) == "(empty)" else
                                                                f" ({_why_invalid(raw[i])})")
                      for i in invalid[:_SHOWN_INVALID])
    more = f"; ... ({len(invalid) - _SHOWN_INVALID} more)" if len(invalid) > _SHOWN_INVALID else ""
    try:
        lines = " (file line = data row + 1)" if detect_format(path, fmt, where) in ("csv", "tsv") else ""
    except (ConfigError, DataError):
        lines = ""
    return (f"{where} ('{path}'): {len(invalid)} of {len(raw)} SMILES are not valid molecules (empty, refused by "
            f"RDKit, or without atoms): {shown}{more}. Data rows are counted from 1 after the header{lines}. Fix "
            f"those rows, or set data.molecules.invalid: drop to leave them out (the run then logs how many).")


class MoleculeDataset(Dataset):
    """One item per molecule: ``(Data, label)``; label is an int (single-label classification), a float32
    tensor [T] (targets, NaN = missing) or None (unlabelled).

    ``rows`` (file rows) survive :meth:`subset`; ``lengths`` (atoms per molecule) feeds length-grouped
    batching; ``preprocessing`` describes the featurisation for feature-cache keys (with :meth:`fingerprint`).
    """

    def __init__(self, smiles: Sequence[str], graphs: Sequence[Data], labels: np.ndarray | None = None,
                 rows: np.ndarray | None = None, preprocessing: dict[str, Any] | None = None) -> None:
        self.smiles = [str(s) for s in smiles]
        self.graphs = list(graphs)
        n = len(self.smiles)
        if len(self.graphs) != n:
            raise DataError(f"MoleculeDataset got {n} SMILES but {len(self.graphs)} graphs; expected one graph per "
                            f"SMILES. Build the graphs with featurize_all(table.mols).")
        self.rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(self.rows) != n:
            raise DataError(f"MoleculeDataset got {n} SMILES but {len(self.rows)} rows; expected one row each.")
        self.labels = None if labels is None else check_labels(labels, n)
        self.lengths = np.asarray([g.num_nodes for g in self.graphs], dtype=np.int64)
        self.preprocessing = dict(preprocessing) if preprocessing is not None else {
            "molecules": _FORMAT, "featurizer": FEATURIZER_VERSION,
            "atom_feature_sizes": list(ATOM_FEATURE_SIZES), "bond_feature_sizes": list(BOND_FEATURE_SIZES),
        }

    def __len__(self) -> int:
        return len(self.smiles)

    def __getitem__(self, index: int) -> tuple[Data, int | torch.Tensor | None]:
        graph = self.graphs[index]
        if self.labels is None:
            return graph, None
        if self.labels.ndim == 1:
            return graph, int(self.labels[index])
        return graph, torch.from_numpy(self.labels[index])

    def subset(self, idx: np.ndarray | Sequence[int]) -> MoleculeDataset:
        """The molecules at positions ``idx`` (in that order), e.g. a split or a stack fold."""
        idx = np.asarray(idx, dtype=np.int64)
        return MoleculeDataset([self.smiles[i] for i in idx], [self.graphs[i] for i in idx],
                               None if self.labels is None else self.labels[idx], self.rows[idx],
                               self.preprocessing)

    def fingerprint(self) -> str:
        """Hash of exactly what the encoder sees (the SMILES in order and the featurisation), not the labels:
        the data part of a feature-cache key."""
        from headstart.cache.key import array_digest

        smiles = json.dumps(self.smiles, ensure_ascii=False).encode()
        described = json.dumps(self.preprocessing, sort_keys=True, default=str).encode()
        return array_digest(np.frombuffer(described, dtype=np.uint8), np.frombuffer(smiles, dtype=np.uint8))


def check_labels(labels: Any, n: int, what: str = "MoleculeDataset") -> np.ndarray:
    """Labels of ``n`` molecules as int64 ``[N]`` (class indices) or float32 ``[N, T]`` (targets, NaN = missing)."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        if labels.dtype.kind not in "iub":
            raise DataError(f"{what}: 1-D labels are class indices (int64), got dtype {labels.dtype}; pass "
                            f"numeric targets as float32 [N, T] (e.g. labels.reshape(-1, 1)), NaN = missing.")
        labels = labels.astype(np.int64)
    elif labels.ndim == 2:
        labels = labels.astype(np.float32)
    else:
        raise DataError(f"{what}: labels must be int64 [N] or float32 [N, T], got shape {labels.shape}.")
    if len(labels) != n:
        raise DataError(f"{what} got {n} SMILES but {len(labels)} labels; expected one label row each.")
    return labels


def collate_graphs(items: Sequence[tuple[Data, Any]]) -> tuple[Batch, torch.Tensor | None]:
    """``(Batch with x, edge_index, edge_attr, batch, num_graphs; labels)``: labels long [B] or float32 [B, T],
    None when the items are unlabelled."""
    from torch_geometric.data import Batch

    if not items:
        raise DataError("collate_graphs got an empty batch; a DataLoader never sends one, check the sampler.")
    batch = Batch.from_data_list([graph for graph, _ in items])
    labels = [label for _, label in items]
    if all(v is None for v in labels):
        return batch, None
    if any(v is None for v in labels):
        raise DataError("collate_graphs got a batch mixing labelled and unlabelled molecules; a dataset is either "
                        "labelled or not.")
    if isinstance(labels[0], torch.Tensor):
        return batch, torch.stack(labels).to(torch.float32)
    return batch, torch.tensor(labels, dtype=torch.long)
