"""Molecule splits: the deterministic scaffold split, random / stratified / column splits and their reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("rdkit")

from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold

from headstart.data.molecule_splits import (
    column_split,
    normalise_split_values,
    random_split,
    scaffold_of,
    scaffold_split,
    stratified_split_rows,
)
from headstart.errors import ConfigError, DataError

BBBP = Path(__file__).parents[3].parent / "shared" / "data" / "bbbp" / "bbbp.csv"

# 12 benzenes, 5 pyridines, 4 cyclohexanes, 3 naphthalenes, 3 acyclic, then singletons
BENZENES = ["c1ccccc1", "Cc1ccccc1", "CCc1ccccc1", "Oc1ccccc1", "Nc1ccccc1", "Clc1ccccc1", "Brc1ccccc1", "Fc1ccccc1",
            "OC(=O)c1ccccc1", "CC(=O)c1ccccc1", "COc1ccccc1", "N#Cc1ccccc1"]
SINGLETONS = ["c1ccoc1", "c1ccsc1", "C1CCNCC1", "c1ccc2[nH]ccc2c1", "C1CCOC1", "c1cnc2ccccc2n1", "C1CC1", "c1ncncn1",
              "C1CCC1", "O=C1CCCN1"]
SMILES = [
    *BENZENES,
    "c1ccncc1", "Cc1ccncc1", "Oc1ccncc1", "Nc1ccncc1", "Clc1ccncc1",
    "C1CCCCC1", "CC1CCCCC1", "OC1CCCCC1", "NC1CCCCC1",
    "c1ccc2ccccc2c1", "Cc1ccc2ccccc2c1", "Oc1ccc2ccccc2c1",
    "CCO", "CCCC", "CC(=O)O",
    *SINGLETONS,
]
MOLS = [Chem.MolFromSmiles(s) for s in SMILES]


def _groups(mols: list) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for i, mol in enumerate(mols):
        out.setdefault(MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False), set()).add(i)
    return out


def test_scaffold_of_matches_rdkit_and_acyclic_is_empty() -> None:
    assert scaffold_of(Chem.MolFromSmiles("CCc1ccccc1")) == "c1ccccc1"
    assert scaffold_of(Chem.MolFromSmiles("CCO")) == ""
    chiral = Chem.MolFromSmiles("C[C@H]1CC[C@@H](C2CC2)CC1")
    assert scaffold_of(chiral) == MurckoScaffold.MurckoScaffoldSmiles(mol=chiral, includeChirality=False)


def test_scaffold_split_keeps_every_scaffold_set_whole() -> None:
    result = scaffold_split(MOLS, 0.2, 0.2)
    where = {}
    for name, idx in result.parts().items():
        for i in idx:
            where[int(i)] = name
    assert sorted(where) == list(range(len(MOLS)))  # a partition
    for members in _groups(MOLS).values():
        assert len({where[i] for i in members}) == 1
    assert result.report["overlap"] == 0
    assert result.report["rows"] == {name: len(idx) for name, idx in result.parts().items()}
    assert result.report["scaffolds_total"] == len(_groups(MOLS))


def test_scaffold_split_largest_set_in_train_and_fractions() -> None:
    result = scaffold_split(MOLS, 0.2, 0.2)
    benzenes = set(range(12))
    assert benzenes <= set(result.train.tolist())
    assert result.report["largest_train_scaffold_sets"][0] == 12
    n = len(MOLS)
    assert len(result.train) <= 0.6 * n and len(result.train) >= 0.6 * n - 3
    assert abs(len(result.val) - 0.2 * n) <= 3 and abs(len(result.test) - 0.2 * n) <= 3
    # the singletons sort last, so val and test hold the rarest scaffolds
    assert set(result.test.tolist()) <= set(range(27, n))


def _deepchem_reference(mols: list, val: float, test: float) -> tuple[list[int], list[int], list[int]]:
    """DeepChem's ScaffoldSplitter, written out independently from RDKit's MurckoScaffold."""
    sets = sorted(_groups(mols).values(), key=lambda g: (len(g), min(g)), reverse=True)
    train_cut, val_cut = (1 - val - test) * len(mols), (1 - test) * len(mols)
    tr: list[int] = []
    va: list[int] = []
    te: list[int] = []
    for group in sets:
        if len(tr) + len(group) > train_cut:
            (te if len(tr) + len(va) + len(group) > val_cut else va).extend(group)
        else:
            tr.extend(group)
    return sorted(tr), sorted(va), sorted(te)


@pytest.mark.parametrize(("val", "test"), [(0.1, 0.1), (0.2, 0.2), (0.25, 0.0), (0.15, 0.3)])
def test_scaffold_split_matches_deepchem_reference(val: float, test: float) -> None:
    result = scaffold_split(MOLS, val, test)
    expected = _deepchem_reference(MOLS, val, test)
    assert (result.train.tolist(), result.val.tolist(), result.test.tolist()) == expected


def test_scaffold_split_is_deterministic_and_sorted() -> None:
    a, b = scaffold_split(MOLS, 0.1, 0.1), scaffold_split(list(MOLS), 0.1, 0.1)
    for x, y in zip(a.parts().values(), b.parts().values(), strict=True):
        assert np.array_equal(x, y) and x.dtype == np.int64 and np.all(np.diff(x) > 0)
    assert a.report == b.report


def test_scaffold_split_without_test_puts_the_rest_in_val() -> None:
    result = scaffold_split(MOLS, 0.25, 0.0)
    assert len(result.test) == 0 and len(result.train) + len(result.val) == len(MOLS)
    assert result.report["overlap"] == 0


def test_scaffold_split_reports_an_empty_split() -> None:
    # one scaffold set of 4 rows: too big for train's 2.4 rows (chemprop's rule), so it all lands in test
    mols = [Chem.MolFromSmiles(s) for s in ["Cc1ccccc1", "Oc1ccccc1", "Nc1ccccc1", "CCc1ccccc1"]]
    with pytest.raises(DataError, match="scaffold split left train and val empty"):
        scaffold_split(mols, 0.2, 0.2)
    # 3 benzenes + 2 singletons, no test: train takes the benzenes and the later singleton (ties: later first)
    mols = [Chem.MolFromSmiles(s) for s in ["Cc1ccccc1", "Oc1ccccc1", "Nc1ccccc1", "C1CC1", "C1CCC1"]]
    result = scaffold_split(mols, 0.2, 0.0)
    assert result.train.tolist() == [0, 1, 2, 4] and result.val.tolist() == [3]


def test_random_split_is_seeded_and_reports_leaks() -> None:
    a = random_split(len(MOLS), 0.2, 0.2, seed=1, mols=MOLS)
    assert np.array_equal(a.val, random_split(len(MOLS), 0.2, 0.2, seed=1).val)
    assert not np.array_equal(a.val, random_split(len(MOLS), 0.2, 0.2, seed=2).val)
    assert a.report["rows"] == {"train": 23, "val": 7, "test": 7}
    assert sorted(np.concatenate([a.train, a.val, a.test]).tolist()) == list(range(len(MOLS)))
    assert a.report["overlap"] == _direct_overlap(a)
    assert "overlap" not in random_split(len(MOLS), 0.2, 0.2, seed=1).report


def _direct_overlap(result) -> int:
    scaffolds = [MurckoScaffold.MurckoScaffoldSmiles(mol=m) for m in MOLS]
    per_split = [{scaffolds[i] for i in idx} for idx in result.parts().values()]
    return sum(1 for s in set(scaffolds) if sum(s in part for part in per_split) > 1)


def test_stratified_split_keeps_proportions() -> None:
    labels = np.array([0] * 30 + [1] * 10)
    result = stratified_split_rows(labels, 0.2, 0.2, seed=0)
    assert result.report["rows"] == {"train": 24, "val": 8, "test": 8}
    assert labels[result.val].sum() == 2 and labels[result.test].sum() == 2
    assert sorted(np.concatenate([result.train, result.val, result.test]).tolist()) == list(range(40))


def test_stratified_split_refuses_several_targets() -> None:
    with pytest.raises(ConfigError, match="several target columns"):
        stratified_split_rows(pd.DataFrame({"a": [0, 1] * 5, "b": [1, 0] * 5}), 0.2, 0.0, seed=0)


def test_column_split_values_and_errors() -> None:
    result = column_split(["train", "Val", " TEST ", "train", "valid"], "data.train column 'fold'")
    assert result.train.tolist() == [0, 3] and result.val.tolist() == [1, 4] and result.test.tolist() == [2]
    with pytest.raises(DataError) as info:
        column_split(["train", "dev", "holdout", "dev", None], "data.train column 'fold'")
    message = str(info.value)
    assert "'dev' x2 (data rows 2, 4)" in message and "'holdout'" in message and "(empty)" in message
    assert "data.train column 'fold'" in message
    with pytest.raises(DataError, match="no row says 'train'"):
        column_split(["val", "test"], "x")


def test_normalise_split_values_uses_given_rows() -> None:
    with pytest.raises(DataError, match="data rows 8"):
        normalise_split_values(np.array(["train", "oops"], dtype=object), "f", rows=np.array([3, 7]))


@pytest.mark.parametrize(("val", "test"), [(0.6, 0.5), (-0.1, 0.1), (0.1, 1.0)])
def test_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        random_split(10, val, test, seed=0)


@pytest.mark.skipif(not BBBP.is_file(), reason="../shared/data/bbbp is not here")
def test_bbbp_scaffold_split_has_no_overlap() -> None:
    from headstart.data.molecules import parse_smiles

    smiles = pd.read_csv(BBBP)["smiles"].tolist()
    mols, invalid = parse_smiles(smiles)
    assert len(mols) == 2039 and invalid == []
    result = scaffold_split(mols, 0.1, 0.1)
    assert result.report["overlap"] == 0
    assert result.report["rows_with_train_scaffold"] == {"val": 0, "test": 0}
    assert sum(result.report["rows"].values()) == 2039
    assert abs(len(result.test) - 204) <= 5
    # the file is sorted by label in its second half: both classes must still reach val and test
    labels = pd.read_csv(BBBP)["p_np"].to_numpy()
    for part in (result.val, result.test):
        assert 0 < labels[part].mean() < 1
