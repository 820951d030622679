"""``headstart fit --no-cache``, ``headstart cache ls|clear`` and ``embed`` reusing a probe's entry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import tiny_run_config
from headstart.cache import FeatureCache
from headstart.cli.main import main


def _config(tmp_path: Path, model_dir: Path, name: str) -> Path:
    raw = tiny_run_config(tmp_path, model_dir, strategy={"name": "linear_probe"})
    raw["output_dir"] = str(tmp_path / name)
    raw["trainer"]["epochs"] = 1
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_fit_ls_embed_clear(tmp_path: Path, tiny_hf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache_dir = tmp_path / "cache"
    config = _config(tmp_path, tiny_hf_dir, "probe")
    assert main(["fit", str(config), "--set", f"cache.dir={cache_dir}"]) == 0
    out = capsys.readouterr().out
    assert "Feature cache: all 3 blocks frozen: pooled features cached" in out
    assert "train built in" in out and "headstart cache ls|clear" in out
    summary = json.loads((tmp_path / "probe" / "summary.json").read_text())
    assert summary["cache"]["used"] and set(summary["cache"]["entries"]) == {"train", "val", "test"}

    assert main(["cache", "ls", "--dir", str(cache_dir)]) == 0
    listing = capsys.readouterr().out
    keys = {e["key"] for e in summary["cache"]["entries"].values()}
    assert all(k in listing for k in keys) and "3 entries" in listing and "pooled" in listing

    # The run's config records cache.dir, so embedding the val file finds the probe's val entry.
    val_file = tmp_path / "data" / "val.csv"
    out_file = tmp_path / "emb.parquet"
    assert main(["embed", str(tmp_path / "probe"), "--data", str(val_file), "--output", str(out_file)]) == 0
    capsys.readouterr()
    assert len(list(FeatureCache(cache_dir).entries())) == 3  # reused, nothing new written
    cached = np.stack(pd.read_parquet(out_file)["embedding"].to_numpy())
    plain_file = tmp_path / "emb_plain.parquet"
    assert main(["embed", str(tmp_path / "probe"), "--data", str(val_file), "--output", str(plain_file),
                 "--no-cache"]) == 0
    plain = np.stack(pd.read_parquet(plain_file)["embedding"].to_numpy())
    np.testing.assert_allclose(cached, plain, rtol=1e-5, atol=1e-6)

    assert main(["cache", "clear", "--dir", str(cache_dir)]) == 0
    assert "Removed 3 entries" in capsys.readouterr().out
    assert main(["cache", "ls", "--dir", str(cache_dir)]) == 0
    assert "No feature cache entries" in capsys.readouterr().out


def test_no_cache_flag(tmp_path: Path, tiny_hf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, tiny_hf_dir, "plain")
    assert main(["fit", str(config), "--no-cache", "--set", f"cache.dir={tmp_path / 'cache'}"]) == 0
    assert "Feature cache: not used (turned off" in capsys.readouterr().out
    assert not (tmp_path / "cache").exists()


def test_clear_unknown_key_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cache").mkdir()
    assert main(["cache", "clear", "nope", "--dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No feature cache entry nope") and "headstart cache ls" in err
