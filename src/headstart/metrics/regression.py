"""Metrics of regression and multi-task binary targets, NaN-masked, in plain numpy (checked against
scikit-learn and SciPy in the tests).

Regression keys: ``rmse``, ``mae``, ``r2``, ``spearman`` (and ``loss``, the mean squared error); with several
targets each is the mean over targets and ``<metric>_<target>`` gives each one. Multi-task keys: ``auc``
(mean ROC-AUC over the tasks that hold both classes), ``ap`` (mean average precision), ``loss`` (binary
cross-entropy) and ``auc_<task>``. Rows whose target is missing (NaN) are left out of that target's figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from headstart.metrics.classification import roc_auc_binary

__all__ = ["average_precision", "multitask_metrics", "regression_metrics", "spearman"]

_EPS = 1e-7


def _matrix(values: Any, n: int | None = None) -> np.ndarray:
    array = np.asarray(values.numpy() if hasattr(values, "numpy") else values, dtype=np.float64)
    array = array.reshape(len(array), -1)
    if n is not None and len(array) != n:
        raise ValueError(f"predictions have {len(array)} rows but the targets {n}")
    return array


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as scipy.stats.rankdata."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e - 1) / 2.0 + 1.0
    return ranks


def spearman(y_true: Any, y_pred: Any) -> float:
    """Spearman rank correlation; NaN when either side is constant."""
    a, b = _ranks(np.asarray(y_true, dtype=np.float64)), _ranks(np.asarray(y_pred, dtype=np.float64))
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def average_precision(y_true: Any, score: Any) -> float:
    """Area under the precision-recall curve as scikit-learn's average_precision_score (step-wise)."""
    t = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    positives = t.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    t, s = t[order], s[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # the end of each run of tied scores
    tp = np.cumsum(t)[last]
    precision = tp / (last + 1)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def regression_metrics(y_true: Any, y_pred: Any, names: Sequence[str] | None = None,
                       prefix: str = "") -> dict[str, float]:
    """RMSE, MAE, R2, Spearman (and loss = MSE) of each target over its present rows; means over targets."""
    t = _matrix(y_true)
    p = _matrix(y_pred, len(t))
    names = list(names) if names is not None else [str(j) for j in range(t.shape[1])]
    per: dict[str, list[float]] = {k: [] for k in ("rmse", "mae", "r2", "spearman", "loss")}
    out: dict[str, float] = {}
    for j, name in enumerate(names):
        keep = ~np.isnan(t[:, j])
        if not keep.any():
            continue
        yt, yp = t[keep, j], p[keep, j]
        err = yp - yt
        mse = float(np.mean(err ** 2))
        ss_tot = float(np.sum((yt - yt.mean()) ** 2))
        values = {"rmse": float(np.sqrt(mse)), "mae": float(np.mean(np.abs(err))),
                  "r2": 1.0 - float(np.sum(err ** 2)) / ss_tot if ss_tot > 0 else float("nan"),
                  "spearman": spearman(yt, yp) if len(yt) > 1 else float("nan"), "loss": mse}
        for key, value in values.items():
            per[key].append(value)
            if len(names) > 1 and key != "loss":
                out[f"{key}_{name}"] = value
    for key, values in per.items():
        finite = [v for v in values if np.isfinite(v)]
        out[key] = float(np.mean(finite)) if finite else float("nan")
    return {f"{prefix}{k}": v for k, v in out.items()}


def multitask_metrics(y_true: Any, proba: Any, names: Sequence[str] | None = None,
                      prefix: str = "") -> dict[str, float]:
    """Mean ROC-AUC / average precision over the tasks with both classes present, and the masked BCE."""
    t = _matrix(y_true)
    p = np.clip(_matrix(proba, len(t)), _EPS, 1 - _EPS)
    names = list(names) if names is not None else [str(j) for j in range(t.shape[1])]
    aucs, aps, losses = [], [], []
    out: dict[str, float] = {}
    for j, name in enumerate(names):
        keep = ~np.isnan(t[:, j])
        yt, yp = t[keep, j], p[keep, j]
        if keep.any():
            losses.append(-(yt * np.log(yp) + (1 - yt) * np.log(1 - yp)))
        if len(np.unique(yt)) < 2:
            continue  # AUC is undefined on one class: left out of the mean, as chemprop / MoleculeNet do
        auc, ap = roc_auc_binary(yt.astype(np.int64), yp), average_precision(yt, yp)
        aucs.append(auc)
        aps.append(ap)
        out[f"auc_{name}"] = auc
    out["auc"] = float(np.mean(aucs)) if aucs else float("nan")
    out["ap"] = float(np.mean(aps)) if aps else float("nan")
    out["loss"] = float(np.mean(np.concatenate(losses))) if losses else float("nan")
    return {f"{prefix}{k}": v for k, v in out.items()}
