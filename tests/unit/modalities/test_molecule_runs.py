"""Molecules through the same experiments as every modality: fit (CLI on the shipped example, regression),
multi-task classification with missing labels, the feature cache of a frozen graph encoder, evaluate /
predict, compare over strategies and seeds, and a regression stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("rdkit")
pytest.importorskip("torch_geometric")

from headstart.config import load_config
from headstart.errors import ConfigError
from headstart.experiments.compare import run_compare
from headstart.experiments.fit import run_fit
from headstart.experiments.inference import evaluate_file, load_run, predict_file
from headstart.experiments.stack import run_stack
from headstart.metrics import regression_metrics

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "molecules.yaml"
MOLECULES = ROOT / "examples" / "data" / "molecules.csv"


def _raw(tmp: Path, **sections: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "mol", "output_dir": str(tmp / "run"), "task": "molecule_regression",
        "data": {"train": str(MOLECULES), "label_column": "logp", "val_fraction": 0.15, "test_fraction": 0.15,
                 "batch_size": 32, "train_subset": 240, "molecules": {"split": "random"}},
        "backbone": {"type": "graph", "graph": {"hidden_size": 16, "num_layers": 2}},
        "optim": {"lr": 5e-3, "weight_decay": 0.0},
        "trainer": {"epochs": 2, "seed": 0, "progress_bar": False, "threads": 1},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


def test_cli_fit_of_the_shipped_example_predicts_numbers(tmp_path: Path) -> None:
    run = tmp_path / "example"
    proc = subprocess.run(
        [sys.executable, "-m", "headstart.cli.main", "fit", str(EXAMPLE), "--set", f"output_dir={run}",
         "--set", "trainer.epochs=2", "--set", "trainer.progress_bar=false", "--set", "backbone.graph.hidden_size=16"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["target_kind"] == "regression" and summary["monitor"] == "val_rmse"
    assert {"rmse", "mae", "r2", "spearman"} <= set(summary["test"])
    assert (run / "plots" / "pred_vs_true.png").exists() and summary["target_plot"] == "pred_vs_true.png"
    split = json.loads((run / "data_state.json").read_text())["molecules"]["split"]
    assert split["method"] == "scaffold" and split["overlap"] == 0
    # predictions are numbers in the data's unit, scored by the same metrics as summary.json
    with np.load(run / "predictions" / "test.npz") as pred:
        assert pred["label"].dtype == np.float32
        again = regression_metrics(pred["label"], pred["proba"])
    assert again["rmse"] == pytest.approx(summary["test"]["rmse"], rel=1e-5)


def test_regression_reload_evaluate_and_predict(tmp_path: Path) -> None:
    cfg = load_config(None, raw=_raw(tmp_path))
    result = run_fit(cfg, verbose=False)
    assert result.summary["roundtrip_max_abs_diff"] <= 1e-5
    frame = pd.read_csv(MOLECULES).iloc[:40]
    frame.to_csv(tmp_path / "new.csv", index=False)
    metrics = evaluate_file(result.run_dir, tmp_path / "new.csv")
    pred = predict_file(result.run_dir, tmp_path / "new.csv")
    assert list(pred.columns) == ["row", "prediction", "label"]
    direct = regression_metrics(pred["label"].to_numpy(), pred["prediction"].to_numpy())
    assert metrics["rmse"] == pytest.approx(direct["rmse"], rel=1e-5)
    # standardised in training, decoded for users: predictions live on the targets' scale
    assert abs(pred["prediction"].mean() - frame["logp"].mean()) < 2.0
    frame[["smiles"]].to_csv(tmp_path / "unlabelled.csv", index=False)
    assert list(predict_file(result.run_dir, tmp_path / "unlabelled.csv").columns) == ["row", "prediction"]


def test_multitask_classification_masks_missing_labels(tmp_path: Path) -> None:
    frame = pd.read_csv(MOLECULES).iloc[:200].copy()
    frame["small"] = (frame["smiles"].str.len() < 14).astype(float)
    frame.loc[frame.index % 4 == 0, "small"] = np.nan  # a quarter of the second task is missing
    frame.to_csv(tmp_path / "tasks.csv", index=False)
    raw = _raw(tmp_path, task="molecule_classification",
               data={"train": str(tmp_path / "tasks.csv"), "label_columns": ["lipophilic", "small"],
                     "train_subset": None})
    cfg = load_config(None, raw=raw)
    assert cfg.trainer.monitor == "val_auc"
    result = run_fit(cfg, verbose=False)
    assert {"auc", "ap", "auc_lipophilic", "auc_small"} <= set(result.summary["test"])
    with np.load(result.run_dir / "predictions" / "test.npz") as pred:
        assert pred["proba"].shape[1] == 2 and np.isnan(pred["label"]).any()
        assert ((pred["proba"] > 0) & (pred["proba"] < 1)).all()


def test_frozen_graph_encoder_uses_the_feature_cache(tmp_path: Path) -> None:
    raw = _raw(tmp_path, strategy={"name": "linear_probe"})
    first = run_fit(load_config(None, raw=raw), verbose=False).summary["cache"]
    assert first["used"] and not any(e["hit"] for e in first["entries"].values())
    raw["output_dir"] = str(tmp_path / "again")
    result = run_fit(load_config(None, raw=raw), verbose=False)
    second = result.summary["cache"]
    assert all(e["hit"] for e in second["entries"].values())
    # the cached batches carry the real numbers (not class indices): metrics match the saved predictions
    with np.load(tmp_path / "again" / "predictions" / "test.npz") as pred:
        truth = pd.read_csv(MOLECULES)["logp"].to_numpy()[pred["row"]]
        assert np.allclose(pred["label"][:, 0], truth, atol=1e-4)
        assert regression_metrics(truth, pred["proba"])["rmse"] == pytest.approx(result.summary["test"]["rmse"],
                                                                                  rel=1e-4)
    loaded = load_run(tmp_path / "again", verbose=False)
    assert loaded.label_map.kind == "regression"


def test_compare_reports_rmse_and_stack_combines_numbers(tmp_path: Path) -> None:
    config = tmp_path / "mol.yaml"
    import yaml

    config.write_text(yaml.safe_dump(_raw(tmp_path, trainer={"epochs": 1})))
    result = run_compare(config, "linear_probe,full", "0,1", output_dir=tmp_path / "cmp", verbose=False)
    assert all(r["status"] == "done" for r in result.rows)
    summary = (tmp_path / "cmp" / "summary.md").read_text()
    assert "test_rmse" in summary and "lower is better" in summary
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(_raw(tmp_path, name="a", trainer={"epochs": 1})))
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(_raw(tmp_path, name="b", strategy={"name": "linear_probe"},
                                         trainer={"epochs": 1})))
    stack = run_stack([base, other], output_dir=tmp_path / "stack", folds=2, meta="logreg", verbose=False)
    report = (tmp_path / "stack" / "stack.md").read_text()
    assert "test RMSE" in report and "random folds" in report
    assert {"rmse", "r2"} <= set(stack.rows[-1]["test"])
    pred = pd.read_csv(tmp_path / "stack" / "test_predictions.csv")
    assert {"label", "pred_stack_logreg", "pred_average"} <= set(pred.columns)


def test_molecule_config_errors() -> None:
    base = {"data": {"train": "x.csv"}}
    with pytest.raises(ConfigError, match=r"classification loss|regression loss"):
        load_config(None, raw={**base, "task": "molecule_classification", "loss": {"type": "mse"}})
    with pytest.raises(ConfigError, match="needs a molecule encoder"):
        load_config(None, raw={**base, "task": "molecule_regression", "backbone": {"type": "resnet"}})
    with pytest.raises(ConfigError, match="split_column"):
        load_config(None, raw={"data": {"train": "x.csv", "molecules": {"split": "column"}}})
    with pytest.raises(ConfigError, match=r"backbone\.unimol\.weights"):
        load_config(None, raw={**base, "backbone": {"type": "unimol"}})
    with pytest.raises(ConfigError, match="id_test_fraction"):
        load_config(None, raw={**base, "task": "molecule_classification", "ood": {}})
    with pytest.raises(ConfigError, match="needs split: scaffold"):
        load_config(None, raw={"data": {"train": "x.csv", "molecules": {"split": "random", "id_test_fraction": 0.1}}})
    with pytest.raises(ConfigError, match="single-label classifier"):
        load_config(None, raw={**base, "task": "molecule_regression", "ood": {"id_data": "a", "ood_data": "b"}})
    with pytest.raises(ConfigError, match="go together"):
        load_config(None, raw={**base, "ood": {"id_data": "a.csv"}})


def test_seed_experiment_frozen_vs_partial_with_ood_as_one_compare(tmp_path: Path) -> None:
    """The Uni-Mol OOD system's experiment on the graph encoder: frozen (cached) vs the last block trained with
    its own encoder LR and a smaller batch, seeds paired on one pinned scaffold split, OOD metrics per run."""
    import yaml

    raw = _raw(tmp_path, task="molecule_classification", ood={"ridge": 1e-3},
               data={"label_column": "lipophilic", "train_subset": None, "eval_batch_size": 256,
                     "molecules": {"split": "scaffold", "id_test_fraction": 0.1}},
               optim={"lr": 1e-2}, trainer={"epochs": 1})
    config = tmp_path / "ood.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = run_compare(config, "linear_probe[data.batch_size=64],partial:1[optim.encoder_lr=1e-3,data.batch_size=16]",
                         "0,1", output_dir=tmp_path / "cmp", metric="ood_mahalanobis_auroc", verbose=False)
    assert [r["status"] for r in result.rows] == ["done"] * 4
    table = pd.read_csv(tmp_path / "cmp" / "results.csv")
    table = table[~table["strategy"].str.startswith("baseline:")]  # the classic row has no OOD scores
    for score in ("msp", "max_logit", "energy", "mahalanobis"):
        for metric in ("auroc", "aupr_out", "aupr_in", "fpr95"):
            assert table[f"ood_{score}_{metric}"].between(0, 1).all()
    summary = (tmp_path / "cmp" / "summary.md").read_text()
    assert "ood_mahalanobis_auroc" in summary and "ood_energy_fpr95" in summary
    run = tmp_path / "cmp" / "runs" / table["run"].iloc[0]
    assert (run / "ood" / "ood.json").exists() and (run / "splits" / "id_test.csv").exists()
    probe = [load_config(tmp_path / "cmp" / "runs" / r / "config.yaml") for r in table["run"]]
    assert {c.data.batch_size for c in probe} == {64, 16} and {c.data.eval_batch_size for c in probe} == {256}
    assert len({(tmp_path / "cmp" / "runs" / r / "splits" / "test.csv").read_text() for r in table["run"]}) == 1
