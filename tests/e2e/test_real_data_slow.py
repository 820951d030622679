"""Opt-in end-to-end runs on the real datasets in ../shared/data (``pytest -m slow``)."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED_DATA
from headstart.cli.main import main

pytestmark = pytest.mark.slow

needs_sst2 = pytest.mark.skipif(not (SHARED_DATA / "sst2" / "train.tsv").exists(),
                                reason="../shared/data/sst2 is absent")
needs_shopping = pytest.mark.skipif(
    not (SHARED_DATA / "online_shopping_10_cats" / "online_shopping_10_cats.csv.gz").exists(),
    reason="../shared/data/online_shopping_10_cats is absent")


def _fit(tmp_path, args: list[str]) -> dict:
    out = tmp_path / "run"
    assert main(["fit", *args, "--output-dir", str(out)]) == 0
    return json.loads((out / "summary.json").read_text())


@needs_sst2
def test_sst2_linear_probe_small(tmp_path) -> None:
    """A 1,000-row linear probe of the packaged MiniLM already separates SST-2 well above chance."""
    sst2 = SHARED_DATA / "sst2"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: {{train: {sst2 / 'train.tsv'}, val: {sst2 / 'test.tsv'}, text_column: sentence, "
        f"label_column: label, train_subset: 1000, max_length: 48}}\n"
        "strategy: {name: linear_probe}\noptim: {lr: 1.0e-2, weight_decay: 0.0}\n"
        "trainer: {epochs: 2, progress_bar: false}\n"
    )
    summary = _fit(tmp_path, [str(cfg)])
    assert summary["val"]["acc"] > 0.70
    assert summary["trainable_params"] == 384 * 2 + 2


@needs_shopping
def test_online_shopping_chinese_categories_small(tmp_path) -> None:
    """Chinese text, 10 string labels, no split shipped: carved splits, label map with CJK names; the English
    vocabulary's unknown-token rate is accepted explicitly (data.accept_unk), and recorded."""
    path = SHARED_DATA / "online_shopping_10_cats" / "online_shopping_10_cats.csv.gz"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: {{train: {path}, text_column: review, label_column: cat, val_fraction: 0.01, "
        f"test_fraction: 0.01, train_subset: 600, max_length: 48, accept_unk: true}}\n"
        "strategy: {name: linear_probe}\noptim: {lr: 1.0e-2, weight_decay: 0.0}\n"
        "trainer: {epochs: 1, progress_bar: false, monitor: val_f1}\n"
    )
    summary = _fit(tmp_path, [str(cfg)])
    assert len(summary["classes"]) == 10 and "书籍" in summary["classes"]
    assert summary["test"]["acc"] > 0.2  # well above the 0.1 of chance, even for an English encoder
    assert summary["tokenizer"]["unk_rate"] > 0.5  # ~63% of MiniLM's word pieces are [UNK] here: accepted


def test_readme_tune_example_on_shipped_data(tmp_path) -> None:
    """The README's tune command (packaged MiniLM, examples/data), shortened to 2 one-epoch trials."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "tune"
    assert main(["tune", str(root / "examples" / "quickstart.yaml"), "--space",
                 str(root / "examples" / "tune_text_space.yaml"), "--n-trials", "2", "--set", "trainer.epochs=1",
                 "--output-dir", str(out)]) == 0
    assert (out / "best.yaml").exists() and (out / "report.html").exists()
    assert len(list((out / "trials").iterdir())) == 2
