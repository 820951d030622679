"""Molecules from SMILES tables: ``task: molecule_classification`` / ``molecule_regression``.

Rows are molecule datasets (:class:`~headstart.data.molecules.MoleculeDataset` of RDKit graphs for the graph
encoder, :class:`~headstart.data.conformers.UniMolDataset` of 3D conformers for Uni-Mol). Targets are one class
column, several binary task columns (missing cells masked) or numbers (standardised on the training split).
Without val / test files the split is carved from data.train by ``data.molecules.split`` (Bemis-Murcko scaffold
sets by default: val and test hold scaffolds training never saw, the usual protocol for molecular property
prediction); the split's scaffold counts and overlap go to the log and to ``data_state.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.errors import ConfigError, DataError
from headstart.modalities.base import Inputs, Modality, register_modality

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from headstart.backbones import Backbone
    from headstart.config import RunConfig

__all__ = ["MoleculeModality", "MoleculeSplits", "carve_rows"]

log = logging.getLogger("headstart")


@dataclass
class MoleculeSplits:
    train: Any
    val: Any
    test: Any
    label_map: Any  # LabelMap, RegressionTargets or TaskTargets
    report: dict[str, Any] = field(default_factory=dict)  # how the split was made: scaffolds, sizes, overlap
    # source rows of each split (file row numbers, smiles, raw targets), written to the run's splits/ folder
    frames: dict[str, Any] = field(default_factory=dict)


class MoleculeModality(Modality):
    name, task = "molecule", "molecule_classification"
    kinds = ("classification", "regression")
    baseline = "morgan_lightgbm"  # headstart.baselines: the classic row of compare / fit --baseline

    # ----- data -------------------------------------------------------------------------------------------
    def load_splits(self, cfg: RunConfig, seed: int) -> MoleculeSplits:
        from headstart.data.molecules import read_molecules

        d = cfg.data
        train = read_molecules(d.train, d, "data.train")
        tables = {"val": read_molecules(d.val, d, "data.val") if d.val else None,
                  "test": read_molecules(d.test, d, "data.test") if d.test else None}
        idx, report = carve_rows(cfg, train, tables, seed)
        if d.train_subset is not None and d.train_subset < len(idx["train"]):
            keep = np.random.default_rng(seed).choice(len(idx["train"]), d.train_subset, replace=False)
            idx["train"] = np.sort(idx["train"][keep])
        label_map = _target_map(cfg, train, idx["train"])
        parts: dict[str, Any] = {}
        frames: dict[str, Any] = {}
        for name in ("train", "val", "test"):
            if name in idx:
                parts[name] = _dataset(cfg, train, idx[name], label_map, f"data.train ({name} rows)")
                frames[name] = _frame(cfg, train, idx[name], "data.train")
            elif tables[name] is not None:
                table = tables[name]
                parts[name] = _dataset(cfg, table, np.arange(len(table.smiles)), label_map, f"data.{name}")
                frames[name] = _frame(cfg, table, np.arange(len(table.smiles)), f"data.{name}")
            else:
                parts[name] = None
        if "id_test" in idx:
            frames["id_test"] = _frame(cfg, train, idx["id_test"], "data.train")
        log.info("molecule split (%s): %s", report.get("method"), _format_report(report))
        return MoleculeSplits(parts["train"], parts["val"], parts["test"], label_map, report, frames)

    def settle(self, cfg: RunConfig, splits: Any) -> None:
        # Graphs carry no padding: length-grouped batches would only make them less random.
        if cfg.backbone.type == "graph" and "group_by_length" not in cfg.data.model_fields_set:
            cfg.data.group_by_length = False

    def labels(self, rows: Any) -> np.ndarray:
        return np.asarray(rows.labels)

    def row_ids(self, rows: Any) -> np.ndarray:
        return np.asarray(rows.rows, dtype=np.int64)

    def take(self, rows: Any, idx: np.ndarray) -> Any:
        return rows.subset(idx)

    def describe_split(self, rows: Any) -> str:
        return f"{len(rows)} molecules"

    def write_splits(self, run: Path, splits: Any) -> None:
        """``splits/<name>.csv``: each split's molecules as read (file, data row, SMILES, targets); with
        ``id_test_fraction`` also ``id_test.csv``, the in-distribution partner of the unseen-scaffold test split."""
        from headstart.fileio import atomic_path

        for name, frame in getattr(splits, "frames", {}).items():
            with atomic_path(run / "splits" / f"{name}.csv") as tmp:
                frame.to_csv(tmp, index=False)

    def data_state(self, splits: Any) -> dict[str, Any] | None:
        from headstart.data.molecules import FEATURIZER_VERSION

        return {"molecules": {"featurizer": FEATURIZER_VERSION, "split": getattr(splits, "report", {})}}

    # ----- model and loaders ----------------------------------------------------------------------------------
    def build_backbone(self, cfg: RunConfig, state: dict[str, Any] | None) -> Backbone:
        if cfg.backbone.type == "graph":
            from headstart.backbones.graph import build_graph_encoder

            return build_graph_encoder(cfg.backbone.graph)
        if cfg.backbone.type == "unimol":
            from headstart.backbones.unimol import build_unimol_encoder

            return build_unimol_encoder(cfg.backbone.unimol)
        from headstart.backbones import build_backbone

        return build_backbone(cfg.backbone)  # the user's own module, fed the graph batches

    def loaders(self, cfg: RunConfig, parts: dict[str, Any], backbone: Backbone) -> dict[str, DataLoader]:
        from headstart.experiments.build import make_loader

        collate = _collate(cfg)
        return {split: make_loader(cfg, rows, collate, train=split == "train")
                for split, rows in parts.items() if rows is not None}

    # ----- inference on new files ---------------------------------------------------------------------------
    def read_inputs(self, loaded: Any, path: str | Path, require_labels: bool) -> Inputs:
        from headstart.data.molecules import read_molecules
        from headstart.experiments.build import make_loader

        cfg = loaded.cfg
        table = read_molecules(path, cfg.data, "--data", require_targets=require_labels)
        labelled = table.targets is not None
        dataset = _dataset(cfg, table, np.arange(len(table.smiles)), loaded.label_map, "--data", labelled=labelled)
        loader = make_loader(cfg, dataset, _collate(cfg), train=False)
        return Inputs(loader, np.asarray(dataset.rows, dtype=np.int64), dataset.labels if labelled else None)


def _target_columns(cfg: RunConfig) -> list[str]:
    return list(cfg.data.label_columns or [cfg.data.label_column])


def carve_rows(cfg: RunConfig, train: Any, tables: dict[str, Any], seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """Indices of data.train's rows per split (val / test only when no file gives them) and the split report."""
    from headstart.data import molecule_splits as ms

    m = cfg.data.molecules
    assert m is not None
    n = len(train.smiles)
    val_fraction = 0.0 if tables["val"] is not None else cfg.data.val_fraction
    test_fraction = 0.0 if tables["test"] is not None else cfg.data.test_fraction
    if m.split == "column":
        if tables["val"] is not None or tables["test"] is not None:
            raise ConfigError("data.molecules.split 'column' takes train / val / test from data.molecules.split_column "
                              "of data.train; remove data.val / data.test, or use another split")
        result = ms.column_split(train.split, f"data.train column '{m.split_column}'", mols=train.mols,
                                 include_chirality=m.include_chirality)
    elif m.split == "scaffold":
        result = ms.scaffold_split(train.mols, val_fraction, test_fraction, include_chirality=m.include_chirality)
    elif m.split == "stratified":
        columns = _target_columns(cfg)
        if len(columns) > 1 or cfg.is_regression:
            raise ConfigError("data.molecules.split 'stratified' keeps the class proportions of one class column; "
                              "with several targets or numbers use scaffold or random")
        result = ms.stratified_split_rows(train.targets[columns[0]].to_numpy(), val_fraction, test_fraction, seed,
                                          mols=train.mols, include_chirality=m.include_chirality)
    else:
        result = ms.random_split(n, val_fraction, test_fraction, seed, mols=train.mols,
                                 include_chirality=m.include_chirality)
    idx = {"train": result.train}
    if tables["val"] is None:
        idx["val"] = result.val
    if tables["test"] is None and len(result.test):
        idx["test"] = result.test
    if m.id_test_fraction > 0:  # in-distribution rows: random rows of the scaffolds training keeps
        n_id = round(m.id_test_fraction * n)
        pick = np.random.default_rng(seed).permutation(len(idx["train"]))
        if not 0 < n_id < len(pick):
            raise DataError(f"data.molecules.id_test_fraction {m.id_test_fraction} of {n} molecules gives {n_id} "
                            f"in-distribution test rows out of {len(pick)} training rows; choose a fraction that "
                            f"leaves both sides non-empty.")
        idx["id_test"] = np.sort(idx["train"][pick[:n_id]])
        idx["train"] = np.sort(idx["train"][pick[n_id:]])
        result.report["rows"] = {**result.report.get("rows", {}), "train": len(idx["train"]),
                                 "id_test": len(idx["id_test"])}
    if len(idx["train"]) == 0 or ("val" in idx and len(idx["val"]) == 0):
        raise DataError(f"data.train ({n} valid molecules) is too small for a {m.split} split with val_fraction "
                        f"{val_fraction} / test_fraction {test_fraction}: a split came out empty. Add molecules, "
                        f"raise the fractions, or give data.val.")
    return idx, {"method": m.split, **result.report}


def _target_map(cfg: RunConfig, train: Any, idx: np.ndarray) -> Any:
    """Classes, tasks or regression statistics from the training rows only."""
    from headstart.data.labels import LabelMap
    from headstart.data.targets import RegressionTargets, TaskTargets, target_values

    columns = _target_columns(cfg)
    frame = train.targets.iloc[idx]
    rows = train.rows[idx]
    if cfg.is_regression:
        values = target_values(frame, columns, "data.train", rows)
        return RegressionTargets.from_values(columns, values, cfg.loss.standardize)
    if len(columns) > 1:
        return TaskTargets.from_values(columns, target_values(frame, columns, "data.train", rows, binary=True))
    label_map = LabelMap.from_labels(frame[columns[0]], "data.train", rows=rows)
    if label_map.n_classes < 2:
        raise DataError(f"data.train has one class ({label_map.classes[0]!r}) in column '{columns[0]}' of its "
                        f"training rows: there is nothing to learn. Check data.label_column.")
    return label_map


def _labels(cfg: RunConfig, table: Any, idx: np.ndarray, label_map: Any, where: str) -> np.ndarray:
    from headstart.data.targets import target_values

    columns = _target_columns(cfg)
    frame = table.targets.iloc[idx]
    rows = table.rows[idx]
    if label_map.kind == "classification":
        return label_map.encode(frame[columns[0]], where, rows=rows)
    return target_values(frame, columns, where, rows, binary=label_map.kind == "multitask")


def _dataset(cfg: RunConfig, table: Any, idx: np.ndarray, label_map: Any, where: str, labelled: bool = True) -> Any:
    """The rows ``idx`` of ``table`` as the dataset the configured encoder reads."""
    labels = _labels(cfg, table, idx, label_map, where) if labelled else None
    smiles = [table.smiles[i] for i in idx]
    rows = table.rows[idx]
    if cfg.backbone.type == "unimol":
        from headstart.backbones.unimol import unimol_dataset

        return unimol_dataset(cfg.backbone.unimol, smiles, labels, rows, cache_dir=cfg.cache.dir)
    from headstart.data.molecules import MoleculeDataset, featurize_all

    return MoleculeDataset(smiles, featurize_all([table.mols[i] for i in idx]), labels, rows)


def _frame(cfg: RunConfig, table: Any, idx: np.ndarray, source: str) -> Any:
    """The rows ``idx`` of ``table`` as read: the source, its data row (from 1, after the header), SMILES and
    the raw target columns, readable by ``evaluate`` / ``predict`` like the training file."""
    import pandas as pd

    m = cfg.data.molecules
    assert m is not None
    frame = pd.DataFrame({"source": source, "data_row": np.asarray(table.rows)[idx] + 1,
                          m.smiles_column: [table.smiles[i] for i in idx]})
    if table.targets is not None:
        for column in table.targets.columns:
            frame[column] = table.targets[column].to_numpy()[idx]
    return frame


def _collate(cfg: RunConfig) -> Any:
    if cfg.backbone.type == "unimol":
        from headstart.data.conformers import collate_unimol

        return collate_unimol
    from headstart.data.molecules import collate_graphs

    return collate_graphs


def _format_report(report: dict[str, Any]) -> str:
    keys = [k for k in report if k != "method"]
    return ", ".join(f"{k}={report[k]}" for k in keys) or "(no report)"


register_modality(MoleculeModality())
