"""Linear models on fixed features (TF-IDF, pixels) with their strength chosen on the validation split.

Classes: scikit-learn's ``LogisticRegression`` (lbfgs, multinomial), ``C`` from a log-spaced grid. Numbers:
``Ridge``, ``alpha`` from a grid, one model per target column over its present rows. Several binary tasks: one
``LogisticRegression`` per task over its present rows. The value kept is the one whose model scores best on
val by the run's monitored metric (a tie goes to the lower val loss, then to the stronger regularisation),
computed by the run's own target metrics; nothing is refitted, so val and test outputs come from the model val chose.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.baselines.base import BaselineOutputs, full_proba, monitored

if TYPE_CHECKING:
    from headstart.config import RunConfig

__all__ = ["ALPHA_GRID", "C_GRID", "MAX_ITER", "fit_linear", "linear_model", "predict_linear"]

C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
"""Inverse regularisation strengths of ``LogisticRegression`` tried on val (log-spaced)."""
ALPHA_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
"""Regularisation strengths of ``Ridge`` tried on val (regression)."""
MAX_ITER = 2000


def linear_model(kind: str, value: float) -> Any:
    """The unfitted scikit-learn estimator of ``kind`` at strength ``value`` (C, or alpha for regression)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    if kind == "regression":
        return Ridge(alpha=value)
    return LogisticRegression(C=value, max_iter=MAX_ITER)


def _fit(kind: str, value: float, x: Any, y: np.ndarray) -> Any:
    """A fitted model (classes), or per column a fitted model / a constant (numbers, tasks)."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if kind == "classification":
            return linear_model(kind, value).fit(x, y)
        models: list[Any] = []
        for j in range(y.shape[1]):
            keep = ~np.isnan(y[:, j])
            yj = y[keep, j]
            if len(yj) == 0 or (kind == "multitask" and len(np.unique(yj)) < 2):
                models.append(float(np.mean(yj)) if len(yj) else 0.0)  # one class / no rows: a constant
                continue
            models.append(linear_model(kind, value).fit(x[np.flatnonzero(keep)], yj.astype(np.int64)
                                                        if kind == "multitask" else yj))
        return models


def predict_linear(kind: str, model: Any, x: Any, n_classes: int) -> np.ndarray:
    """Outputs in the run's form: class probabilities [N, C], numbers [N, T] or task probabilities [N, T]."""
    if kind == "classification":
        return full_proba(model.classes_, model.predict_proba(x), n_classes)
    cols = []
    for m in model:
        if isinstance(m, float):
            cols.append(np.full(x.shape[0], m))
        elif kind == "multitask":
            cols.append(m.predict_proba(x)[:, list(m.classes_).index(1)])
        else:
            cols.append(m.predict(x))
    return np.stack(cols, axis=1).astype(np.float64)


def fit_linear(cfg: RunConfig, splits: Any, x: dict[str, Any], y: dict[str, np.ndarray],
               grid: Sequence[float] | None = None) -> BaselineOutputs:
    """Fit one model per grid value on ``x["train"]``, keep the best on val, output val and test."""
    from headstart.train.targets import make_target

    label_map = splits.label_map
    kind, n = label_map.kind, label_map.n_classes
    target = make_target(label_map.spec(), n)
    if grid is None:
        grid = ALPHA_GRID if kind == "regression" else C_GRID
    train_y = y["train"] if kind == "classification" else np.asarray(y["train"], dtype=np.float64).reshape(
        len(y["train"]), -1)
    tried: dict[str, float] = {}
    best: tuple[float, Any, tuple[float, float]] | None = None
    key = ""
    for value in grid:
        model = _fit(kind, value, x["train"], train_y)
        metrics = target.metrics(y["val"], predict_linear(kind, model, x["val"], n))
        key, score, higher = monitored(cfg, metrics, kind)
        tried[f"{value:g}"] = round(score, 6)
        # higher is better in both places; NaN ranks last; a tie goes to the lower val loss, then the first value
        rank = (score if higher else -score, -metrics.get("loss", 0.0))
        rank = tuple(v if np.isfinite(v) else -np.inf for v in rank)
        if best is None or rank > best[2]:
            best = (value, model, rank)
    assert best is not None
    outputs = {name: predict_linear(kind, best[1], x[name], n) for name in ("val", "test") if name in x}
    strength = "alpha" if kind == "regression" else "C"
    model_name = "Ridge" if kind == "regression" else "LogisticRegression"
    params = {"model": model_name, strength: best[0], "chosen_on": f"val_{key}",
              f"val_{key}_by_{strength}": tried, "max_iter": MAX_ITER if kind != "regression" else None}
    return BaselineOutputs(outputs, {k: v for k, v in params.items() if v is not None})
