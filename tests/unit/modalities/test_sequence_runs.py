"""Event sequences through the same experiments as text and images: fit (CLI on the shipped example),
inspect, evaluate / predict / embed, the feature cache, exact resume, stack and subset ids."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from conftest import ctrl_c_in_epoch_2_of
from headstart.config import load_config
from headstart.errors import RunInterrupted
from headstart.experiments.inference import embed_file, evaluate_file, load_run, predict_file
from headstart.experiments.inspect import inspect_config
from headstart.experiments.stack import run_stack
from headstart.modalities import get_modality
from headstart.train.checkpoint import read_state_dict

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "transactions.yaml"


def _events(path: Path, n_entities: int, seed: int, start: int = 0) -> Path:
    """Entities whose label is carried by their latest event's category (order matters), rows shuffled."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(start, start + n_entities):
        label = int(rng.random() < 0.5)
        n = int(rng.integers(3, 9))
        for day in range(n):
            mcc = f"m{rng.integers(0, 4)}" if day < n - 1 else ("late" if label else f"m{rng.integers(0, 4)}")
            rows.append((f"c{e}", day, mcc, round(float(rng.lognormal()), 3), label))
    rows = [rows[i] for i in rng.permutation(len(rows))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("client,day,mcc,amount,label\n" + "".join(",".join(map(str, r)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def _raw(tmp: Path, **trainer: Any) -> dict[str, Any]:
    return {
        "name": "seq", "output_dir": str(tmp / "run"),
        "data": {"train": str(_events(tmp / "data" / "train.csv", 60, 0)),
                 "val": str(_events(tmp / "data" / "val.csv", 20, 1, start=100)),
                 "test": str(_events(tmp / "data" / "test.csv", 20, 2, start=200)),
                 "batch_size": 8, "events": {"id_column": "client", "time_column": "day", "categorical": ["mcc"],
                                             "numeric": {"amount": "log1p"}}},
        "backbone": {"sequence": {"encoder": "gru", "hidden_size": 8, "num_layers": 2}},
        "optim": {"lr": 1e-2, "encoder_lr": 1e-2},
        "trainer": {"epochs": 3, "seed": 0, "progress_bar": False, "threads": 1, **trainer},
    }


def _fit(raw: dict[str, Any], **kwargs: Any):
    import headstart.experiments.fit as fit_module  # looked up per call: ctrl_c_in_epoch_2_of patches it

    return fit_module.run_fit(load_config(None, raw=raw), verbose=False, **kwargs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("seq")
    raw = _raw(tmp)
    return _fit(raw).run_dir, raw


def test_the_shipped_example_runs_from_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "headstart.cli.main", "fit", str(EXAMPLE), "--epochs", "1",
                           "--output-dir", str(out), "--set", "trainer.progress_bar=false"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["test"]) >= {"acc", "auc", "f1"} and summary["n_train"] == 480
    assert "epoch 1/1  train_loss" in done.stdout
    assert "Data: train=480 entities" in done.stdout


def test_fit_writes_the_vocabularies_and_inference_reads_new_files_with_them(finished, tmp_path: Path) -> None:
    run, raw = finished
    state = json.loads((run / "data_state.json").read_text())
    assert state["events"]["vocabularies"]["mcc"][:1] == ["m0"] or "late" in state["events"]["vocabularies"]["mcc"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["roundtrip_max_abs_diff"] == 0.0
    metrics = evaluate_file(run, raw["data"]["test"])
    assert metrics["acc"] == pytest.approx(summary["test"]["acc"]) and metrics["auc"] == pytest.approx(summary["test"]["auc"])
    new = _events(tmp_path / "new.csv", 5, 9, start=500)
    text = new.read_text().replace("m1", "never_seen")  # unseen category: the OOV index, not an error
    new.write_text(text)
    predictions = predict_file(run, new)
    assert len(predictions) == 5 and {"prediction", "proba_0", "proba_1"} <= set(predictions.columns)
    embeddings = embed_file(run, new)
    assert len(embeddings["embedding"][0]) == 8


def test_inspect_shows_the_sequence_layer_map(finished) -> None:
    _, raw = finished
    text = inspect_config(load_config(None, raw=raw), verbose=False)
    for block in ("stem", "layer_0", "layer_1"):
        assert block in text
    assert "2 classes from the training split" in text


def test_linear_probe_uses_the_feature_cache_and_matches_the_uncached_run(tmp_path: Path) -> None:
    raw = _raw(tmp_path, epochs=2)
    raw["strategy"] = {"name": "linear_probe"}
    raw["cache"] = {"dir": str(tmp_path / "cache")}
    cached = _fit(raw).summary
    raw["output_dir"], raw["cache"] = str(tmp_path / "plain"), {"enabled": False}
    plain = _fit(raw).summary
    assert cached["cache"]["used"] is True and plain["cache"]["used"] is False
    assert cached["test"]["acc"] == plain["test"]["acc"]
    assert cached["test"]["loss"] == pytest.approx(plain["test"]["loss"], rel=1e-5, abs=1e-6)


def test_an_interrupted_sequence_run_resumes_to_the_uninterrupted_one(finished, tmp_path: Path) -> None:
    reference, raw = finished
    raw = {**raw, "output_dir": str(tmp_path / "run2")}
    with ctrl_c_in_epoch_2_of("run2"), pytest.raises(RunInterrupted):
        _fit(raw)
    resumed = _fit(raw, resume=True)
    assert resumed.summary["resumed"] is True
    a, b = read_state_dict(reference / "checkpoints" / "best.safetensors"), read_state_dict(
        resumed.run_dir / "checkpoints" / "best.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref = json.loads((reference / "summary.json").read_text())
    assert resumed.summary["test"] == ref["test"] and resumed.summary["best_epoch"] == ref["best_epoch"]


def test_stack_of_two_sequence_bases(tmp_path: Path) -> None:
    paths = []
    for name, encoder in (("gru", "gru"), ("lstm", "lstm")):
        raw = _raw(tmp_path, epochs=1)
        raw["name"], raw["backbone"]["sequence"]["encoder"] = name, encoder
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        paths.append(path)
    result = run_stack(paths, output_dir=tmp_path / "stack", folds=2, meta="logreg", workers=0, verbose=False)
    assert [r["model"] for r in result.rows][:2] == ["gru", "lstm"]
    folds = np.load(tmp_path / "stack" / "folds.npz")
    assert len(set(folds["row"].tolist())) == 60  # one stable id per entity, kept by the fold subsets


def test_entity_ids_survive_subsets(finished) -> None:
    _, raw = finished
    cfg = load_config(None, raw=raw)
    modality = get_modality(cfg.task)
    splits = modality.load_splits(cfg, 0)
    ids = modality.row_ids(splits.train)
    part = modality.take(splits.train, np.array([5, 1, 3]))
    assert modality.row_ids(part).tolist() == ids[[5, 1, 3]].tolist()
    assert modality.labels(part).tolist() == modality.labels(splits.train)[[5, 1, 3]].tolist()
    assert len(load_run(finished[0], verbose=False).model.backbone.blocks()) == 3


AGE_PRED = ROOT.parent / "shared" / "data" / "age_pred_ptls_fixture"


@pytest.mark.skipif(not AGE_PRED.exists(), reason="../shared/data/age_pred_ptls_fixture is not here")
def test_age_pred_fixture_end_to_end(tmp_path: Path) -> None:
    """ptls' own 100-client sample: transactions + a per-client label table, 4 classes, carved splits."""
    raw = {
        "output_dir": str(tmp_path / "run"),
        "data": {"train": str(AGE_PRED / "age-transactions.csv"), "label_column": "bins", "val_fraction": 0.2,
                 "test_fraction": 0.2, "batch_size": 16,
                 "events": {"id_column": "client_id", "time_column": "trans_date", "categorical": ["small_group"],
                            "numeric": {"amount_rur": "identity"}, "labels": str(AGE_PRED / "age-bin.csv")}},
        "backbone": {"sequence": {"encoder": "transformer", "hidden_size": 16, "num_layers": 1, "n_heads": 2}},
        "trainer": {"epochs": 1, "seed": 0, "progress_bar": False, "threads": 1},
    }
    summary = _fit(raw).summary
    assert summary["n_train"] + summary["n_val"] + summary["n_test"] == 100
    assert summary["val"]["acc"] >= 0.0 and "auc" not in summary["val"]  # 4 classes: no binary AUC


def test_compare_on_sequences(tmp_path: Path) -> None:
    from headstart.experiments.compare import run_compare

    raw = _raw(tmp_path, epochs=1)
    config = tmp_path / "seq.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = run_compare(config, "linear_probe,partial:1,full", "0,1", output_dir=tmp_path / "cmp", workers=0,
                         verbose=False)
    assert [r["status"] for r in result.rows] == ["done"] * 6
    assert {r["strategy"] for r in result.rows} == {"linear_probe", "partial:1", "full"}
    assert (tmp_path / "cmp" / "summary.md").exists()
    # the modality's classic baseline (RFM aggregates + LightGBM) is reported beside them
    assert result.classic["strategy"] == "baseline:rfm_lightgbm" and result.classic["status"] in ("done", "skipped")
    assert "baseline:rfm_lightgbm (classic)" in (tmp_path / "cmp" / "summary.md").read_text()
