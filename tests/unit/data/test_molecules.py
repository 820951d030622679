"""Molecules: reading + the invalid-SMILES policy, graph featurization, the dataset and its collate."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("rdkit")
pytest.importorskip("torch_geometric")

from rdkit import Chem
from torch_geometric.utils.smiles import e_map, from_rdmol, x_map

from headstart.config import DataConfig
from headstart.data.molecules import (
    ATOM_FEATURE_SIZES,
    BOND_FEATURE_SIZES,
    FEATURIZER_VERSION,
    MoleculeDataset,
    collate_graphs,
    featurize,
    featurize_all,
    read_molecules,
)
from headstart.errors import ConfigError, DataError

BBBP = Path(__file__).parents[3].parent / "shared" / "data" / "bbbp" / "bbbp.csv"


def _csv(tmp_path: Path, frame: pd.DataFrame, name: str = "mols.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _cfg(path: Path, **kw) -> DataConfig:
    molecules = kw.pop("molecules", {})
    return DataConfig(train=str(path), molecules=molecules, **kw)


# ----- featurization ------------------------------------------------------------------------------------------

def test_feature_sizes_are_the_ogb_vocabularies_plus_other() -> None:
    atom_names = ["atomic_num", "chirality", "degree", "formal_charge", "num_hs", "num_radical_electrons",
                  "hybridization", "is_aromatic", "is_in_ring"]
    assert tuple(len(x_map[k]) + 1 for k in atom_names) == ATOM_FEATURE_SIZES
    assert tuple(len(e_map[k]) + 1 for k in ["bond_type", "stereo", "is_conjugated"]) == BOND_FEATURE_SIZES
    assert isinstance(FEATURIZER_VERSION, str) and FEATURIZER_VERSION


@pytest.mark.parametrize("smiles", ["c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "C[C@H](N)C(=O)O", "C/C=C/C"])
def test_featurize_matches_torch_geometric(smiles: str) -> None:
    mol = Chem.MolFromSmiles(smiles)
    ours, ref = featurize(mol), from_rdmol(mol)
    assert torch.equal(ours.x, ref.x)
    assert torch.equal(ours.edge_index, ref.edge_index)
    assert torch.equal(ours.edge_attr, ref.edge_attr)


def test_featurize_benzene_shapes() -> None:
    g = featurize(Chem.MolFromSmiles("c1ccccc1"))
    assert g.x.shape == (6, len(ATOM_FEATURE_SIZES)) and g.x.dtype == torch.long
    assert g.edge_index.shape == (2, 12) and g.edge_index.dtype == torch.long
    assert g.edge_attr.shape == (12, len(BOND_FEATURE_SIZES)) and g.edge_attr.dtype == torch.long
    assert g.num_nodes == 6
    # both directions of every bond
    pairs = set(map(tuple, g.edge_index.t().tolist()))
    assert all((j, i) in pairs for i, j in pairs)


@pytest.mark.parametrize(("smiles", "atoms"), [("C", 1), ("[Na+].[Cl-]", 2), ("[Cu-3]", 1)])
def test_featurize_without_bonds(smiles: str, atoms: int) -> None:
    g = featurize(Chem.MolFromSmiles(smiles))
    assert g.x.shape == (atoms, len(ATOM_FEATURE_SIZES))
    assert g.edge_index.shape == (2, 0) and g.edge_attr.shape == (0, len(BOND_FEATURE_SIZES))
    assert g.edge_index.dtype == torch.long and g.edge_attr.dtype == torch.long


def test_values_outside_a_vocabulary_map_to_other() -> None:
    mol = Chem.MolFromSmiles("[Fe+8]")  # formal charge +8 is outside x_map's -5..6
    g = featurize(mol)
    charge = 3  # column of formal_charge
    assert int(g.x[0, charge]) == ATOM_FEATURE_SIZES[charge] - 1
    assert int(g.x[0, 0]) == 26  # iron, inside the vocabulary
    assert (g.x < torch.tensor(ATOM_FEATURE_SIZES)).all()


def test_hydrogens_stay_implicit() -> None:
    g = featurize(Chem.MolFromSmiles("CO"))
    assert g.x.shape[0] == 2
    assert g.x[:, 4].tolist() == [3, 1]  # num_hs


# ----- reading ------------------------------------------------------------------------------------------------

def test_read_molecules_keeps_order_targets_and_rows(tmp_path: Path) -> None:
    path = _csv(tmp_path, pd.DataFrame({"smiles": ["CCO", "c1ccccc1", "CC(=O)O"], "label": [1, 0, 1]}))
    table = read_molecules(path, _cfg(path))
    assert table.smiles == ["CCO", "c1ccccc1", "CC(=O)O"]
    assert table.rows.dtype == np.int64 and table.rows.tolist() == [0, 1, 2]
    assert table.targets is not None and table.targets["label"].tolist() == [1, 0, 1]
    assert [m.GetNumAtoms() for m in table.mols] == [3, 6, 4]
    assert table.split is None and table.dropped == []


def test_invalid_smiles_error_names_rows_strings_and_fix(tmp_path: Path) -> None:
    smiles = ["CCO", "C1CC", "c1ccccc1", "", "C(C)(C)(C)(C)C", "not_a_smiles"]
    path = _csv(tmp_path, pd.DataFrame({"smiles": smiles, "label": [0, 1, 0, 1, 0, 1]}))
    with pytest.raises(DataError) as info:
        read_molecules(path, _cfg(path))
    message = str(info.value)
    assert "4 of 6" in message
    for row, text in [(2, "'C1CC'"), (5, "'C(C)(C)(C)(C)C'"), (6, "'not_a_smiles'")]:
        assert f"data row {row}: {text}" in message
    assert "data row 4: (empty)" in message
    assert "valence" in message  # RDKit's reason for the five-valent carbon
    assert "data.molecules.invalid: drop" in message


def test_invalid_error_lists_at_most_ten_with_the_total(tmp_path: Path) -> None:
    smiles = ["CCO"] + [f"X{i}" for i in range(15)]
    path = _csv(tmp_path, pd.DataFrame({"smiles": smiles, "label": [0] * 16}))
    with pytest.raises(DataError) as info:
        read_molecules(path, _cfg(path))
    message = str(info.value)
    assert "15 of 16" in message and "'X9'" in message and "'X10'" not in message and "5 more" in message


def test_drop_policy_counts_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    smiles = ["CCO", "C1CC", "c1ccccc1", "", "CC(=O)O"]
    path = _csv(tmp_path, pd.DataFrame({"smiles": smiles, "label": [0, 1, 0, 1, 1]}))
    with caplog.at_level(logging.WARNING, logger="headstart"):
        table = read_molecules(path, _cfg(path, molecules={"invalid": "drop"}))
    assert table.smiles == ["CCO", "c1ccccc1", "CC(=O)O"]
    assert table.rows.tolist() == [0, 2, 4]
    assert table.targets is not None and table.targets["label"].tolist() == [0, 0, 1]
    assert table.dropped == [(1, "C1CC"), (3, "")]
    assert len(table.mols) == 3
    assert any("left out 2 of 5" in r.getMessage() and "'C1CC'" in r.getMessage() for r in caplog.records)


def test_drop_policy_with_nothing_valid_is_an_error(tmp_path: Path) -> None:
    path = _csv(tmp_path, pd.DataFrame({"smiles": ["X", "Y"], "label": [0, 1]}))
    with pytest.raises(DataError, match="none of its 2 SMILES"):
        read_molecules(path, _cfg(path, molecules={"invalid": "drop"}))


def test_missing_columns_suggest_names(tmp_path: Path) -> None:
    path = _csv(tmp_path, pd.DataFrame({"SMILES": ["CCO"], "p_np": [1]}))
    with pytest.raises(DataError) as info:
        read_molecules(path, _cfg(path, label_column="p_nq"))
    message = str(info.value)
    assert "no column 'smiles'" in message and "'SMILES'" in message
    assert "no column 'p_nq'" in message and "Did you mean 'p_np'" in message


def test_unlabelled_file_has_no_targets(tmp_path: Path) -> None:
    path = _csv(tmp_path, pd.DataFrame({"smiles": ["CCO", "CCN"]}))
    table = read_molecules(path, _cfg(path), where="predict", require_targets=False)
    assert table.targets is None and len(table) == 2


def test_smiles_column_as_target_is_a_config_error(tmp_path: Path) -> None:
    path = _csv(tmp_path, pd.DataFrame({"smiles": ["CCO"]}))
    with pytest.raises(ConfigError, match="also a target column"):
        read_molecules(path, _cfg(path, label_column="smiles"))


def test_multi_target_nan_is_kept(tmp_path: Path) -> None:
    frame = pd.DataFrame({"smiles": ["CCO", "CCN", "CCC"], "a": [1.0, None, 0.0], "b": [None, 1.0, 0.0]})
    path = _csv(tmp_path, frame)
    table = read_molecules(path, _cfg(path, label_columns=["b", "a"]))
    assert table.targets is not None and list(table.targets.columns) == ["b", "a"]
    labels = table.targets.to_numpy(dtype=np.float32)
    ds = MoleculeDataset(table.smiles, featurize_all(table.mols), labels, table.rows)
    _, y = collate_graphs([ds[i] for i in range(len(ds))])
    assert y is not None and y.dtype == torch.float32 and y.shape == (3, 2)
    assert torch.isnan(y[0, 0]) and torch.isnan(y[1, 1]) and y[1, 0] == 1.0 and y[0, 1] == 1.0


def test_split_column_is_normalised(tmp_path: Path) -> None:
    frame = pd.DataFrame({"smiles": ["CCO", "CCN", "CCC"], "label": [0, 1, 0], "fold": ["Train", " VAL", "test"]})
    path = _csv(tmp_path, frame)
    table = read_molecules(path, _cfg(path, molecules={"split": "column", "split_column": "fold"}))
    assert table.split is not None and table.split.tolist() == ["train", "val", "test"]


# ----- dataset and collate ------------------------------------------------------------------------------------

SMILES = ["CCO", "c1ccccc1", "[Na+].[Cl-]", "C"]


def _dataset(labels: np.ndarray | None = None, smiles: list[str] = SMILES) -> MoleculeDataset:
    return MoleculeDataset(smiles, featurize_all([Chem.MolFromSmiles(s) for s in smiles]), labels,
                           np.arange(len(smiles)) + 10)


def test_dataset_items_lengths_and_subset() -> None:
    ds = _dataset(np.array([0, 1, 1, 0]))
    assert len(ds) == 4 and ds.lengths.tolist() == [3, 6, 2, 1] and ds.lengths.dtype == np.int64
    graph, label = ds[1]
    assert graph.x.shape[0] == 6 and label == 1 and isinstance(label, int)
    sub = ds.subset([3, 1])
    assert sub.smiles == ["C", "c1ccccc1"] and sub.rows.tolist() == [13, 11] and sub.labels.tolist() == [0, 1]
    assert sub.preprocessing == ds.preprocessing and "featurizer" in ds.preprocessing
    assert _dataset()[0][1] is None


def test_collate_shapes() -> None:
    ds = _dataset(np.array([0, 1, 1, 0]))
    batch, y = collate_graphs([ds[i] for i in range(4)])
    assert batch.num_graphs == 4
    assert batch.x.shape == (12, len(ATOM_FEATURE_SIZES))
    assert batch.edge_index.shape == (2, 2 * 2 + 12) and batch.edge_attr.shape == (16, len(BOND_FEATURE_SIZES))
    assert batch.batch.tolist() == [0] * 3 + [1] * 6 + [2] * 2 + [3]
    assert int(batch.edge_index.max()) < 12
    assert y is not None and y.dtype == torch.long and y.tolist() == [0, 1, 1, 0]
    batch, y = collate_graphs([_dataset()[i] for i in range(2)])
    assert y is None and batch.num_graphs == 2


def test_collate_refuses_mixed_labels() -> None:
    labelled, unlabelled = _dataset(np.array([0, 1, 1, 0])), _dataset()
    with pytest.raises(DataError, match="mixing"):
        collate_graphs([labelled[0], unlabelled[1]])


def test_fingerprint_follows_smiles_order_not_labels() -> None:
    base = _dataset(np.array([0, 1, 1, 0]))
    assert base.fingerprint() == _dataset(np.array([1, 1, 0, 0])).fingerprint()
    assert base.fingerprint() == _dataset().fingerprint()
    assert base.fingerprint() != _dataset(smiles=list(reversed(SMILES))).fingerprint()
    assert base.fingerprint() != _dataset(smiles=SMILES[:3]).fingerprint()
    assert base.subset([0, 1, 2, 3]).fingerprint() == base.fingerprint()


def test_float_1d_labels_are_refused() -> None:
    with pytest.raises(DataError, match="reshape"):
        _dataset(np.array([0.5, 1.0, 2.0, 3.0]))


# ----- real data ----------------------------------------------------------------------------------------------

@pytest.mark.skipif(not BBBP.is_file(), reason="../shared/data/bbbp is not here")
def test_bbbp_all_smiles_parse() -> None:
    table = read_molecules(BBBP, _cfg(BBBP, label_column="p_np"))
    assert len(table) == 2039 and table.dropped == []
    assert table.targets is not None and set(table.targets["p_np"]) == {0, 1}
