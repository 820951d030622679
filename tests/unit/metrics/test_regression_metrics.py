"""Regression and multi-task metrics against scikit-learn / SciPy, with missing targets masked."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import (
    average_precision_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from headstart.metrics import average_precision, multitask_metrics, regression_metrics, spearman
from headstart.metrics.direction import lower_is_better


def test_regression_metrics_match_sklearn_and_scipy() -> None:
    rng = np.random.default_rng(0)
    t = rng.normal(size=80)
    p = t + rng.normal(scale=0.4, size=80)
    p[:5] = p[5]  # ties in the ranks
    m = regression_metrics(t, p, prefix="val_")
    assert m["val_rmse"] == pytest.approx(np.sqrt(mean_squared_error(t, p)))
    assert m["val_mae"] == pytest.approx(mean_absolute_error(t, p))
    assert m["val_r2"] == pytest.approx(r2_score(t, p))
    assert m["val_spearman"] == pytest.approx(spearmanr(t, p).statistic)
    assert m["val_loss"] == pytest.approx(mean_squared_error(t, p))


def test_several_targets_mask_missing_cells_and_average() -> None:
    rng = np.random.default_rng(1)
    t = rng.normal(size=(60, 2))
    p = t + rng.normal(scale=0.3, size=(60, 2))
    t[::4, 1] = np.nan
    m = regression_metrics(t, p, names=["a", "b"])
    keep = ~np.isnan(t[:, 1])
    rmse_b = np.sqrt(mean_squared_error(t[keep, 1], p[keep, 1]))
    assert m["rmse_b"] == pytest.approx(rmse_b)
    assert m["rmse_a"] == pytest.approx(np.sqrt(mean_squared_error(t[:, 0], p[:, 0])))
    assert m["rmse"] == pytest.approx((m["rmse_a"] + rmse_b) / 2)


def test_multitask_metrics_skip_missing_labels_and_one_class_tasks() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=(100, 3)).astype(float)
    s = np.clip(y * 0.3 + rng.random((100, 3)) * 0.7, 0, 1)
    y[::3, 0] = np.nan
    y[:, 2] = 1.0  # one class only: no AUC
    m = multitask_metrics(y, s, names=["x", "y", "z"])
    keep = ~np.isnan(y[:, 0])
    auc_x = roc_auc_score(y[keep, 0], s[keep, 0])
    auc_y = roc_auc_score(y[:, 1], s[:, 1])
    assert m["auc_x"] == pytest.approx(auc_x)
    assert "auc_z" not in m
    assert m["auc"] == pytest.approx((auc_x + auc_y) / 2)
    ap = (average_precision_score(y[keep, 0], s[keep, 0]) + average_precision_score(y[:, 1], s[:, 1])) / 2
    assert m["ap"] == pytest.approx(ap)


def test_average_precision_and_spearman_with_ties() -> None:
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    s = np.array([0.1, 0.4, 0.4, 0.4, 0.9, 0.2, 0.2, 0.3])
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s))
    assert spearman(y, s) == pytest.approx(spearmanr(y, s).statistic)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_metric_direction() -> None:
    assert lower_is_better("val_rmse") and lower_is_better("test_mae") and lower_is_better("val_loss")
    assert lower_is_better("fpr95")
    assert not lower_is_better("val_auc") and not lower_is_better("test_r2") and not lower_is_better("val_acc")
