"""Regression outside molecules: a text run predicts a number (a review's star rating), end to end."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_run_config
from headstart.config import load_config
from headstart.data.targets import strata
from headstart.errors import ConfigError, DataError
from headstart.experiments.fit import run_fit
from headstart.experiments.inference import evaluate_file, predict_file
from headstart.metrics import regression_metrics


def _ratings(path: Path, n: int, seed: int) -> Path:
    """Texts whose score (1..5, with noise) is readable from the words."""
    rng = random.Random(seed)
    words = {1: "awful", 2: "poor", 3: "fine", 4: "good", 5: "superb"}
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "stars"])
        for _ in range(n):
            stars = rng.randint(1, 5)
            w.writerow([f"the item was {words[stars]} really", round(stars + rng.uniform(-0.3, 0.3), 2)])
    return path


def test_text_regression_fit_evaluate_predict(tmp_path: Path, tiny_hf_dir: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    raw = tiny_run_config(tmp_path, tiny_hf_dir, task="text_regression",
                          data={"train": str(_ratings(data / "r.csv", 80, 0)), "val": None, "test": None,
                                "label_column": "stars", "val_fraction": 0.2, "test_fraction": 0.2},
                          optim={"lr": 1e-2, "encoder_lr": 1e-2}, trainer={"epochs": 4})
    cfg = load_config(None, raw=raw)
    assert cfg.loss.type == "mse" and cfg.trainer.monitor == "val_rmse"
    result = run_fit(cfg, verbose=False)
    s = result.summary
    assert s["target_kind"] == "regression" and {"rmse", "r2", "spearman"} <= set(s["test"])
    assert (result.run_dir / "plots" / "pred_vs_true.png").exists()
    pred = predict_file(result.run_dir, data / "r.csv")
    assert list(pred.columns) == ["row", "prediction", "label"]
    assert 1.0 < pred["prediction"].mean() < 5.0  # decoded to stars, not standardised units
    metrics = evaluate_file(result.run_dir, data / "r.csv")
    assert metrics["rmse"] == pytest.approx(regression_metrics(pred["label"], pred["prediction"])["rmse"], rel=1e-5)


def test_text_regression_refuses_text_labels(tmp_path: Path, tiny_hf_dir: Path) -> None:
    raw = tiny_run_config(tmp_path, tiny_hf_dir, task="text_regression")  # labels are "neg" / "pos"
    with pytest.raises(DataError, match="not a number"):
        run_fit(load_config(None, raw=raw), verbose=False)
    with pytest.raises(ConfigError, match="label_columns"):
        load_config(None, raw={"data": {"train": "x.csv", "label_columns": ["a", "b"]}})


def test_numeric_strata_are_quantile_bins() -> None:
    values = np.arange(100, dtype=float)
    bins = strata(values, regression=True)
    assert sorted(set(bins.tolist())) == [0, 1, 2, 3, 4] and np.bincount(bins).tolist() == [20] * 5
    assert strata(["a", "b"], regression=False).tolist() == ["a", "b"]


def _spend(path: Path, n_entities: int, seed: int, start: int = 0) -> Path:
    """Clients whose label is their total spend (a number), one value repeated on each client's events."""
    rng = np.random.default_rng(seed)
    lines = ["client,day,mcc,amount,spend"]
    for e in range(start, start + n_entities):
        amounts = np.round(rng.lognormal(size=int(rng.integers(3, 9))), 3)
        for day, amount in enumerate(amounts):
            lines.append(f"c{e},{day},m{rng.integers(0, 4)},{amount},{round(float(amounts.sum()), 3)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_sequence_regression_fit_and_predict(tmp_path: Path) -> None:
    raw = {
        "name": "spend", "output_dir": str(tmp_path / "run"), "task": "sequence_regression",
        "data": {"train": str(_spend(tmp_path / "train.csv", 60, 0)), "val_fraction": 0.2, "test_fraction": 0.2,
                 "label_column": "spend", "batch_size": 8,
                 "events": {"id_column": "client", "time_column": "day", "categorical": ["mcc"],
                            "numeric": {"amount": "identity"}}},
        "backbone": {"sequence": {"encoder": "gru", "hidden_size": 8}},
        "optim": {"lr": 1e-2, "encoder_lr": 1e-2},
        "trainer": {"epochs": 3, "seed": 0, "progress_bar": False, "threads": 1},
    }
    result = run_fit(load_config(None, raw=raw), verbose=False)
    assert result.summary["target_kind"] == "regression" and "rmse" in result.summary["test"]
    pred = predict_file(result.run_dir, tmp_path / "train.csv")
    assert len(pred) == 60 and pred["prediction"].between(0, 40).all()  # spends, not standardised units
    assert evaluate_file(result.run_dir, tmp_path / "train.csv")["rmse"] > 0
    with np.load(result.run_dir / "predictions" / "val.npz") as saved:
        assert saved["label"].dtype == np.float32 and (saved["label"] % 1 != 0).any()  # not truncated


def test_image_regression_keeps_float_labels(tmp_path: Path) -> None:
    """Brightness regression on 8x8 images from an .npz with float targets (a class id file stays int)."""
    from headstart.data.images import label_values

    rng = np.random.default_rng(0)
    y = rng.uniform(0, 1, 96).astype(np.float32)
    x = (y[:, None, None] * 200 + rng.integers(0, 40, size=(96, 8, 8))).astype(np.uint8)
    np.savez(tmp_path / "bright.npz", x=x, y=y)
    raw = {"output_dir": str(tmp_path / "run"), "task": "image_regression",
           "data": {"train": str(tmp_path / "bright.npz"), "val_fraction": 0.2, "test_fraction": 0.2, "batch_size": 16},
           "backbone": {"type": "resnet", "depths": [1], "widths": [4]}, "head": {"dropout": 0.0},
           "optim": {"lr": 1e-2}, "trainer": {"epochs": 3, "seed": 0, "progress_bar": False, "threads": 1}}
    result = run_fit(load_config(None, raw=raw), verbose=False)
    assert result.summary["target_kind"] == "regression" and "rmse" in result.summary["test"]
    with np.load(result.run_dir / "predictions" / "test.npz") as saved:
        assert np.allclose(np.sort(saved["label"][:, 0] if saved["label"].ndim > 1 else saved["label"]),
                           np.sort(y[np.isin(y, saved["label"])]))
        assert (saved["label"] % 1 != 0).any()
    assert label_values(np.array([1.0, 0.0])).dtype == np.int64 and label_values(np.array([0.5])).dtype.kind == "f"
