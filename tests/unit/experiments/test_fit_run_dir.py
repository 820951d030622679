"""`headstart fit` end to end on a tiny BERT: the run directory, resume, reload round-trips."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
import torch
import yaml

from conftest import tiny_run_config
from headstart.cli.main import main
from headstart.config import load_config
from headstart.errors import RunDirError
from headstart.experiments.fit import run_fit
from headstart.experiments.inference import load_run

SUMMARY_KEYS = {"best_epoch", "val", "test", "wall_time_s", "trainable_params", "total_params", "peak_rss_mb",
                "strategy", "seed"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_hf_dir):
    tmp = tmp_path_factory.mktemp("fit")
    cfg = load_config(None, raw=tiny_run_config(tmp, tiny_hf_dir))
    return run_fit(cfg, verbose=False)


def test_run_directory_has_every_artifact(finished) -> None:
    run = finished.run_dir
    for name in ("config.yaml", "labels.json", "metrics.csv", "summary.json", "checkpoints/best.safetensors",
                 "checkpoints/best.json", "plots/curves.png", "plots/confusion.png"):
        assert (run / name).exists(), name
    # a finished run keeps its best weights; the training state (optimizer) is dropped unless --keep-last
    assert not (run / "checkpoints" / "last.ckpt").exists()
    assert finished.summary["last_checkpoint"].startswith("dropped")
    assert list((run / "tb").glob("events.out.tfevents.*"))
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert {"acc", "f1", "auc", "loss"} <= set(summary["test"])
    assert summary["trainable_params"] == summary["total_params"]  # full fine-tuning
    assert json.loads((run / "labels.json").read_text())["classes"] == ["neg", "pos"]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # 1-based, like the progress bar and summary.json
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "val_f1", "val_auc", "lr_head"} <= set(rows[0])
    assert summary["roundtrip_max_abs_diff"] == 0.0
    sidecar = json.loads((run / "checkpoints" / "best.json").read_text())
    assert sidecar["epoch"] == summary["best_epoch"] and sidecar["classes"] == ["neg", "pos"]


def test_resolved_config_reloads(finished) -> None:
    cfg = load_config(finished.run_dir / "config.yaml")
    assert cfg.backbone.type == "hf" and cfg.trainer.epochs == 2


def test_evaluate_predict_embed_cli(finished, tmp_path, capsys) -> None:
    run = finished.run_dir
    test_file = yaml.safe_load((run / "config.yaml").read_text())["data"]["test"]
    assert main(["evaluate", str(run), "--data", test_file]) == 0
    metrics = json.loads(capsys.readouterr().out)
    summary = json.loads((run / "summary.json").read_text())
    assert metrics["acc"] == pytest.approx(summary["test"]["acc"])
    preds = tmp_path / "p.csv"
    assert main(["predict", str(run), "--data", test_file, "--output", str(preds)]) == 0
    frame = pd.read_csv(preds)
    assert {"row", "prediction", "proba_neg", "proba_pos"} <= set(frame.columns) and len(frame) == 16
    assert frame[["proba_neg", "proba_pos"]].sum(axis=1).round(5).eq(1).all()
    emb = tmp_path / "e.parquet"
    assert main(["embed", str(run), "--data", test_file, "--output", str(emb)]) == 0
    table = pd.read_parquet(emb)
    assert len(table) == 16 and len(table["embedding"].iloc[0]) == 16


def test_inspect_prints_layer_map_and_groups(tmp_path, tiny_hf_dir, capsys) -> None:
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_run_config(tmp_path, tiny_hf_dir)))
    assert main(["inspect", str(cfg_path), "--strategy", "partial:1"]) == 0
    out = capsys.readouterr().out
    assert "embeddings" in out and "encoder.layer.1" in out and "head/no_decay" in out
    layer_map, groups = out.split("Param groups")
    assert "0  embeddings" in layer_map and "frozen (eval)" in layer_map  # partial:1 freezes blocks 0-1
    assert "2:encoder.layer.1" in groups and "yes" in groups
    assert "0:embeddings" not in groups and "not in the optimizer" in groups  # frozen for the whole run


def test_resume_continues_from_last_checkpoint(tmp_path, tiny_hf_dir) -> None:
    raw = tiny_run_config(tmp_path, tiny_hf_dir, trainer={"epochs": 1})
    run_fit(load_config(None, raw=raw), verbose=False, keep_last=True)  # --keep-last: train longer later
    with pytest.raises(RunDirError, match="finished all 1 epochs"):  # same epochs: nothing to resume
        run_fit(load_config(None, raw=raw), resume=True, verbose=False)
    raw["trainer"]["epochs"] = 2
    result = run_fit(load_config(None, raw=raw), resume=True, verbose=False)
    rows = list(csv.DictReader((result.run_dir / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # 1-based, like the progress bar and summary.json
    assert result.summary["resumed"] is True


@pytest.mark.parametrize("strategy", [{"name": "lora", "lora": {"r": 2}}, {"name": "partial", "train_last": 1},
                                      {"name": "linear_probe"}])
def test_save_reload_identical_logits(tmp_path, tiny_hf_dir, strategy) -> None:
    raw = tiny_run_config(tmp_path, tiny_hf_dir, strategy=strategy, trainer={"epochs": 1},
                          head={"hidden_dims": [8], "dropout": 0.2})
    result = run_fit(load_config(None, raw=raw), verbose=False)
    assert result.summary["roundtrip_max_abs_diff"] == 0.0
    loaded = load_run(result.run_dir, verbose=False)
    if strategy["name"] == "lora":
        names = [k for k in loaded.model.state_dict() if "lora_" in k]
        assert names, "LoRA adapters were not restored"
    # Independent check: two reloads agree bit for bit, and differ from an untrained head.
    again = load_run(result.run_dir, verbose=False)
    tok = loaded.tokenizer
    batch = dict(tok(["the item was great", "awful and broken"], padding=True, return_tensors="pt"))
    with torch.inference_mode():
        assert torch.equal(loaded.model(batch), again.model(batch))


def test_trainable_params_reported_for_probe(tmp_path, tiny_hf_dir) -> None:
    raw = tiny_run_config(tmp_path, tiny_hf_dir, strategy={"name": "linear_probe"}, trainer={"epochs": 1})
    summary = run_fit(load_config(None, raw=raw), verbose=False).summary
    assert summary["trainable_params"] == 16 * 2 + 2
    assert summary["total_params"] > 100 * summary["trainable_params"]


def test_top_k_checkpoints_and_early_stopping(tmp_path, tiny_hf_dir) -> None:
    raw = tiny_run_config(tmp_path, tiny_hf_dir, trainer={"epochs": 3, "save_top_k": 2, "monitor": "val_loss",
                                                          "monitor_mode": "min",
                                                          "early_stopping": {"monitor": "val_acc", "mode": "max",
                                                                             "patience": 5}})
    result = run_fit(load_config(None, raw=raw), verbose=False)
    kept = sorted((result.run_dir / "checkpoints" / "top").glob("*.safetensors"))
    assert len(kept) == 2
    assert all(p.with_suffix(".json").exists() for p in kept)
    values = [json.loads(p.with_suffix(".json").read_text())["value"] for p in kept]
    history = [float(r["val_loss"]) for r in csv.DictReader((result.run_dir / "metrics.csv").open())]
    assert sorted(values) == pytest.approx(sorted(history)[:2])
    best = json.loads((result.run_dir / "checkpoints" / "best.json").read_text())
    assert best["value"] == pytest.approx(min(history))
