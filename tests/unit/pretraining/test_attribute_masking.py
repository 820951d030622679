"""Attribute masking (Hu et al., 2020): `headstart pretrain --objective attribute_masking` learns from unlabelled
SMILES, writes a run directory and an encoder export that `fit --pretrain` loads key for key into the graph
encoder; supervised pretraining on molecules loads the same way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml

pytest.importorskip("rdkit")
pytest.importorskip("torch_geometric")

from conftest import assert_pretrain_resumes_exactly
from headstart.backbones.graph import GraphEncoder
from headstart.config import load_config
from headstart.data.molecules import (
    ATOM_FEATURE_SIZES,
    BOND_FEATURE_SIZES,
    MoleculeDataset,
    featurize_all,
    parse_smiles,
)
from headstart.errors import ConfigError
from headstart.experiments.fit import run_fit
from headstart.pretraining import objective_names, run_pretrain
from headstart.pretraining.masking import (
    MaskedAtoms,
    MaskingModule,
    collate_masked,
    draw_masked,
    mask_tokens,
    masked_count,
)
from headstart.train.checkpoint import read_state_dict
from headstart.train.pretrained import PRETRAINED_META, PRETRAINED_WEIGHTS

ROOT = Path(__file__).resolve().parents[3]
MOLECULES = ROOT / "examples" / "data" / "molecules.csv"
GRAPH = {"type": "graph", "graph": {"hidden_size": 16, "num_layers": 2}}
TRAINER = {"seed": 0, "progress_bar": False, "threads": 1}


def _smiles_only(path: Path, rows: slice) -> Path:
    """The shipped molecules without their target columns (nothing to read labels from)."""
    pd.read_csv(MOLECULES)[["smiles"]].iloc[rows].to_csv(path, index=False)
    return path


def _masking_raw(tmp: Path, rows: slice = slice(0, 200), **sections: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "masking", "output_dir": str(tmp / "masking"), "task": "molecule_classification",
        "data": {"train": str(_smiles_only(tmp / "smiles.csv", rows)), "val_fraction": 0.2, "batch_size": 32,
                 "molecules": {"split": "random"}},
        "backbone": GRAPH, "optim": {"lr": 5e-3, "warmup_steps": 0, "weight_decay": 0.0},
        "objective": {"name": "attribute_masking"}, "trainer": {"epochs": 2, **TRAINER},
    }
    raw.update(sections)
    return raw


def _labelled_raw(tmp: Path, name: str, pretrain: Path | None = None, **data: Any) -> dict[str, Any]:
    """Classification of the shipped molecules' `lipophilic` column (classes 0 / 1), a small random subset."""
    return {
        "name": name, "output_dir": str(tmp / name), "task": "molecule_classification",
        **({"pretrain": str(pretrain)} if pretrain else {}),
        "data": {"train": str(MOLECULES), "label_column": "lipophilic", "val_fraction": 0.2, "batch_size": 32,
                 "train_subset": 160, "molecules": {"split": "random"}, **data},
        "backbone": GRAPH, "optim": {"lr": 5e-3, "weight_decay": 0.0}, "trainer": {"epochs": 1, **TRAINER},
    }


@pytest.fixture(scope="module")
def masking_run(tmp_path_factory) -> Path:
    """`run_pretrain` with objective attribute_masking on 200 SMILES without a label column (2 epochs)."""
    tmp = tmp_path_factory.mktemp("masking")
    raw = _masking_raw(tmp)
    (tmp / "masking.yaml").write_text(yaml.safe_dump(raw))
    run_pretrain(load_config(tmp / "masking.yaml"), verbose=False)
    return Path(raw["output_dir"])


# ----- masking itself ---------------------------------------------------------------------------------------------
def test_masked_count_is_the_rate_with_at_least_one_and_never_all() -> None:
    assert [masked_count(n, 0.15) for n in (1, 2, 3, 6, 7, 10, 20, 40)] == [1, 1, 1, 1, 1, 2, 3, 6]
    for rate in (0.01, 0.15, 0.5, 0.9, 0.99):
        for n in range(1, 80):
            k = masked_count(n, rate)
            assert k == 1 if n == 1 else 1 <= k <= n - 1, (rate, n, k)
            if n >= 2 and 1 < round(rate * n) < n - 1:
                assert abs(k - rate * n) <= 0.5
    for n in (1, 2, 9, 30):
        positions = draw_masked(n, 0.3, (0, 0, n))
        assert len(positions) == masked_count(n, 0.3) == len(set(positions.tolist()))
        assert positions.tolist() == sorted(positions.tolist()) and positions.min() >= 0 and positions.max() < n


def _molecules(smiles: list[str]) -> MoleculeDataset:
    mols, invalid = parse_smiles(smiles)
    assert not invalid
    return MoleculeDataset(smiles, featurize_all(mols))


def test_masked_rows_are_the_mask_token_and_the_rest_is_untouched() -> None:
    molecules = _molecules(["C", "CCO", "c1ccccc1C(=O)N", "CC(C)(C)OC(=O)N1CCC(CC1)C(F)(F)F"])
    originals = [graph.x.clone() for graph in molecules.graphs]
    tokens = mask_tokens(ATOM_FEATURE_SIZES)
    assert tokens.tolist() == [size - 1 for size in ATOM_FEATURE_SIZES] and tokens[0] == 119  # atomic_num 0..118
    dataset = MaskedAtoms(molecules, 0.15, tokens, seed=3)
    items = [dataset[i] for i in range(len(dataset))]
    for item, graph in zip(items, molecules.graphs, strict=True):
        masked, positions, targets = collate_masked([item])  # one molecule: its rows are the batch's rows
        n = graph.num_nodes
        assert len(positions) == masked_count(n, 0.15) and (n == 1 or len(positions) < n)
        keep = torch.ones(n, dtype=torch.bool)
        keep[positions] = False
        assert torch.equal(masked.x[keep], graph.x[keep])  # unmasked atoms untouched
        assert (masked.x[positions] == tokens).all()  # masked rows are the token, every column
        assert torch.equal(targets, graph.x[positions, 0])  # targets: the original elements
        assert torch.equal(masked.edge_index, graph.edge_index) and torch.equal(masked.edge_attr, graph.edge_attr)
    # the same key draws the same atoms; training keys carry the epoch (new atoms most epochs)
    assert all(torch.equal(dataset[i][1], items[i][1]) for i in range(len(dataset)))
    assert len({tuple(dataset[(3, epoch)][1].tolist()) for epoch in range(8)}) > 1
    # collated: positions index the batch's atoms, and the targets follow them
    batch, positions, targets = collate_masked(items)
    assert (batch.x[positions] == tokens).all() and int((batch.x[:, 0] == tokens[0]).sum()) == len(positions)
    assert torch.equal(torch.cat(originals)[positions, 0], targets) and batch.num_graphs == 4
    assert all(torch.equal(graph.x, x) for graph, x in zip(molecules.graphs, originals, strict=True))  # unchanged


def test_the_masking_loss_trains() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny graphs: a second (shared) core only adds sync waits; the runs set threads 1 too
    try:
        _train_a_few_steps()
    finally:
        torch.set_num_threads(threads)


def _train_a_few_steps() -> None:
    torch.manual_seed(0)
    smiles = pd.read_csv(MOLECULES)["smiles"].iloc[:64].tolist()
    encoder = GraphEncoder(ATOM_FEATURE_SIZES, BOND_FEATURE_SIZES, hidden_size=16, num_layers=2)
    assert encoder.node_states(collate_masked([MaskedAtoms(_molecules(smiles[:2]), 0.15,
                                                           mask_tokens(ATOM_FEATURE_SIZES))[0]])[0]).shape[1] == 16
    module = MaskingModule(encoder, load_config(None, raw={"data": {"train": "x.csv"}, "backbone": GRAPH}).optim)
    batch = collate_masked([MaskedAtoms(_molecules(smiles), 0.15, mask_tokens(ATOM_FEATURE_SIZES))[i]
                            for i in range(64)])
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        out = module.objective_step(batch, train=True)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss))
    assert out.rows == len(batch[1]) and losses[-1] < 0.5 * losses[0], losses
    module.eval()
    assert set(module.objective_step(batch, train=False).metrics) == {"masked_acc"}


# ----- pretrain and fit --pretrain -------------------------------------------------------------------------------
def test_attribute_masking_learns_without_labels_and_writes_an_encoder_export(masking_run: Path) -> None:
    assert "attribute_masking" in objective_names()
    assert pd.read_csv(masking_run.parent / "smiles.csv").columns.tolist() == ["smiles"]
    metrics = pd.read_csv(masking_run / "metrics.csv")
    assert len(metrics) == 2 and metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]
    for name in ("config.yaml", "data_state.json", "lr_steps.csv", "checkpoints/best.safetensors", "plots/curves.png",
                 PRETRAINED_WEIGHTS, PRETRAINED_META):
        assert (masking_run / name).exists(), name
    assert not (masking_run / "checkpoints" / "last.ckpt").exists()
    saved = load_config(masking_run / "config.yaml")
    assert (saved.objective.name, saved.trainer.monitor, saved.trainer.monitor_mode) == ("attribute_masking",
                                                                                          "val_loss", "min")
    summary = json.loads((masking_run / "summary.json").read_text())
    assert set(summary["val"]) == {"loss", "masked_acc"} and 0.0 <= summary["val"]["masked_acc"] <= 1.0
    assert summary["export_max_abs_diff"] <= 1e-5 and summary["mask_rate"] == 0.15
    assert summary["masked_atoms"]["train"] < 0.25 * summary["atoms"]["train"]
    record = json.loads((masking_run / PRETRAINED_META).read_text())
    assert record["objective"]["name"] == "attribute_masking" and record["n_classes"] == 0
    assert record["architecture"]["atom_feature_sizes"] == list(ATOM_FEATURE_SIZES)  # no extra mask row
    exported = read_state_dict(masking_run / PRETRAINED_WEIGHTS)
    assert all(key.startswith("backbone.") for key in exported)  # the masking head is not part of it


def test_fit_pretrain_loads_every_graph_encoder_key_of_the_masking_export(masking_run: Path, tmp_path: Path) -> None:
    result = run_fit(load_config(None, raw=_labelled_raw(tmp_path, "finetune", masking_run)), verbose=False)
    report = result.summary["pretrain"]
    exported = read_state_dict(masking_run / PRETRAINED_WEIGHTS)
    assert report["backbone_keys_loaded"] == len(exported) > 0 and report["backbone_keys_missing"] == 0
    assert not report["head_loaded"] and "no head" in report["notes"][0]
    assert result.summary["epochs_run"] == 1 and "auc" in result.summary["val"]


def test_supervised_pretraining_on_molecules_then_fit_pretrain(tmp_path: Path) -> None:
    """`pretrain` (supervised) on one label, `fit --pretrain` on another set: the backbone loads key for key; the
    head too by pretrain_head auto, as both tasks name their classes 0 / 1 (reset re-initialises it)."""
    source = run_pretrain(load_config(None, raw=_labelled_raw(tmp_path, "supervised")), verbose=False)
    assert Path(source.summary["pretrained_export"]).exists()
    n_backbone = sum(key.startswith("backbone.") for key in read_state_dict(source.run_dir / PRETRAINED_WEIGHTS))
    target = _labelled_raw(tmp_path, "target", source.run_dir, train_subset=120, split_seed=7)
    auto = run_fit(load_config(None, raw=target), verbose=False).summary["pretrain"]
    assert auto["backbone_keys_loaded"] == n_backbone > 0 and auto["backbone_keys_missing"] == 0
    assert auto["head_loaded"]
    reset = run_fit(load_config(None, raw={**target, "output_dir": str(tmp_path / "reset"), "pretrain_head": "reset"}),
                    verbose=False).summary["pretrain"]
    assert reset["backbone_keys_loaded"] == n_backbone and not reset["head_loaded"]
    # another label column with the same class names (HIV's 0 / 1 -> BBBP's 0 / 1): auto leaves the head out
    frame = pd.read_csv(MOLECULES)
    frame["ringed"] = (frame["smiles"].str.len() < 14).astype(int)
    frame.to_csv(tmp_path / "other.csv", index=False)
    other = _labelled_raw(tmp_path, "other", source.run_dir, train=str(tmp_path / "other.csv"),
                          label_column="ringed")
    moved = run_fit(load_config(None, raw=other), verbose=False).summary["pretrain"]
    assert not moved["head_loaded"] and "learnt [lipophilic]" in moved["notes"][0]


def test_cli_pretrain_attribute_masking_writes_the_export(tmp_path: Path) -> None:
    raw = _masking_raw(tmp_path, slice(200, 280), objective={"name": "supervised"},
                       trainer={"epochs": 1, **TRAINER})
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "headstart.cli.main", "pretrain", str(path), "--objective",
                           "attribute_masking", "--set", "objective.mask_rate=0.25"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = Path(raw["output_dir"])
    assert f"--pretrain {run}" in proc.stdout and (run / PRETRAINED_WEIGHTS).exists()
    assert json.loads((run / "summary.json").read_text())["objective"]["mask_rate"] == 0.25


# ----- refusals and crash safety ---------------------------------------------------------------------------------
def test_attribute_masking_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    unimol = _masking_raw(tmp_path, backbone={"type": "unimol", "unimol": {"weights": str(tmp_path / "w.pt")}})
    with pytest.raises(ConfigError, match=r"attribute_masking .*graph encoder.*backbone\.type is 'unimol'"):
        run_pretrain(load_config(None, raw=unimol), verbose=False)
    with pytest.raises(ConfigError, match=r"node_states.*backbone\.type: graph"):
        MaskingModule(torch.nn.Linear(2, 2), load_config(None, raw=unimol).optim)  # type: ignore[arg-type]
    clash = _masking_raw(tmp_path, strategy={"name": "linear_probe"}, trainer={"monitor": "val_auc", **TRAINER})
    with pytest.raises(ConfigError, match=r"strategy 'linear_probe'.*; trainer\.monitor is 'val_auc', but "
                                          r"attribute_masking logs val_loss, val_masked_acc"):
        run_pretrain(load_config(None, raw=clash), verbose=False)
    stratified = _masking_raw(tmp_path, data={"train": str(_smiles_only(tmp_path / "s.csv", slice(0, 50))),
                                              "molecules": {"split": "stratified"}})
    with pytest.raises(ConfigError, match=r"stratified.*reads no labels"):
        run_pretrain(load_config(None, raw=stratified), verbose=False)
    unused = _labelled_raw(tmp_path, "unused")
    unused["objective"] = {"mask_rate": 0.3}
    with pytest.raises(ConfigError, match=r"objective\.mask_rate=0\.3 is set, but objective 'supervised' does not"):
        run_pretrain(load_config(None, raw=unused), verbose=False)


def test_an_interrupted_masking_run_resumes_to_the_uninterrupted_one(masking_run: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert_pretrain_resumes_exactly(masking_run, masking_run.parent / "masking.yaml",
                                    [(["output_dir"], str(tmp_path / "again"))], MaskingModule, monkeypatch)


def test_label_free_pretraining_refuses_several_processes(tmp_path: Path) -> None:
    raw = _masking_raw(tmp_path, trainer={"epochs": 1, "accelerator": "cpu", "devices": 2})
    with pytest.raises(ConfigError, match=r"--objective attribute_masking trains in one process, but trainer.devices=2 "
                                          r"with trainer.num_nodes=1 would start 2\. Set trainer.devices: 1"):
        run_pretrain(load_config(None, raw=raw), verbose=False)
    assert not Path(raw["output_dir"]).exists()
