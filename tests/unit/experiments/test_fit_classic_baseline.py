"""`headstart fit --baseline`: the classic baseline on the run's own split, beside the fine-tuned run."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import tiny_run_config
from headstart.cli.main import main

pytest.importorskip("sklearn")


def test_fit_baseline_writes_baseline_json_summary_entry_and_says_who_wins(tmp_path, tiny_hf_dir, capsys) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_run_config(tmp_path, tiny_hf_dir)))
    assert main(["fit", str(config), "--baseline", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "run"
    baseline = json.loads((run / "baseline.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["classic_baseline"] == baseline
    assert baseline["name"] == "tfidf_logreg" and baseline["status"] == "done"
    assert set(baseline["val"]) == set(summary["val"]) and set(baseline["test"]) == set(summary["test"])
    assert baseline["params"]["chosen_on"] == "val_acc" and baseline["params"]["analyzer"] == "word"
    words = ("beats every fine-tuned run", "Every fine-tuned run beats", "by more than a tie")
    assert any(w in baseline["verdict"] for w in words) and "test_acc" in baseline["verdict"]
    assert f"Classic baseline (TF-IDF word 1-2-grams, C={baseline['params']['C']:g} chosen on val_acc): " in out
    assert baseline["verdict"] in out


def test_pretrain_refuses_the_baseline_flag(tmp_path, capsys) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("data: {train: x.csv}\n")
    assert main(["pretrain", str(config), "--baseline"]) == 2
    assert "--baseline fits a classic model beside a fine-tuned run" in capsys.readouterr().err
