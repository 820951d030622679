"""LightGBM on fixed features, early-stopped on the validation split: the model half of ``rfm_lightgbm`` and
``morgan_lightgbm`` (and of the benchmarks ``sequences_cdnow_baselines.py`` / ``molecule_fingerprints.py``).

The native API (``lgb.train`` with ``lgb.early_stopping``), not ``LGBMClassifier``: early stopping behaves the
same on every lightgbm >= 4.0. One thread and ``deterministic``: the same seed gives the same model, and wall
time does not swing with OpenMP spin-waits on shared CPUs. Several targets (numbers or binary tasks) train one
booster each on their present rows (NaN = missing); a task with one class in training predicts its rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MAX_ROUNDS", "PATIENCE", "lgb_params", "lightgbm_outputs", "train_lightgbm"]

MAX_ROUNDS = 2000
PATIENCE = 100  # rounds without a better val loss before stopping
ROUNDS_WITHOUT_VAL = 100  # a target with no val rows to stop on trains this many rounds


def lgb_params(objective: str, seed: int, **overrides: Any) -> dict[str, Any]:
    """LightGBM parameters: ``objective`` (binary, multiclass, regression) with its loss as the val metric,
    headstart's defaults (those of the molecule benchmark) and ``overrides``."""
    metric = {"binary": "binary_logloss", "multiclass": "multi_logloss", "regression": "rmse"}[objective]
    params = {"objective": objective, "metric": metric, "learning_rate": 0.05, "num_leaves": 31,
              "bagging_fraction": 0.8, "bagging_freq": 1, "feature_fraction": 0.8, "min_data_in_leaf": 5,
              "seed": seed, "num_threads": 1, "deterministic": True, "force_row_wise": True, "verbosity": -1}
    return {**params, **overrides}


def train_lightgbm(params: dict[str, Any], x_train: Any, y_train: np.ndarray, x_val: Any = None,
                   y_val: np.ndarray | None = None, *, rounds: int = MAX_ROUNDS, patience: int = PATIENCE) -> Any:
    """A booster trained on (x_train, y_train), early-stopped on (x_val, y_val) when given; predict with
    ``num_iteration=booster.best_iteration`` (0 without early stopping: every round)."""
    import lightgbm as lgb

    dtrain = lgb.Dataset(x_train, y_train)
    if x_val is None or y_val is None or len(y_val) == 0:
        return lgb.train(params, dtrain, num_boost_round=ROUNDS_WITHOUT_VAL)
    dval = lgb.Dataset(x_val, y_val, reference=dtrain)
    return lgb.train(params, dtrain, num_boost_round=rounds, valid_sets=[dval],
                     callbacks=[lgb.early_stopping(patience, verbose=False)])


def _predict(booster: Any, x: Any) -> np.ndarray:
    return np.asarray(booster.predict(x, num_iteration=booster.best_iteration or None), dtype=np.float64)


def lightgbm_outputs(kind: str, n_classes: int, x: dict[str, Any], y: dict[str, np.ndarray], seed: int,
                     **overrides: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Outputs per evaluated split (``val``, ``test`` of ``x``) in the run's form, and what was trained.

    ``kind``: classification (probabilities [N, C]), regression (numbers [N, T]) or multitask (task
    probabilities [N, T]); ``overrides``: LightGBM parameters over :func:`lgb_params`."""
    evaluated = [name for name in ("val", "test") if name in x]
    if kind == "classification":
        binary = n_classes == 2
        params = lgb_params("binary" if binary else "multiclass", seed,
                            **({} if binary else {"num_class": n_classes}), **overrides)
        booster = train_lightgbm(params, x["train"], np.asarray(y["train"]), x["val"], np.asarray(y["val"]))
        outputs = {}
        for name in evaluated:
            p = _predict(booster, x[name])
            outputs[name] = np.stack([1.0 - p, p], axis=1) if binary else p.reshape(len(p), n_classes)
        return outputs, {"model": "LightGBM", "objective": params["objective"],
                         "best_iteration": int(booster.best_iteration), **_shown(params)}
    columns = {name: np.asarray(values, dtype=np.float64).reshape(len(values), -1) for name, values in y.items()}
    objective = "regression" if kind == "regression" else "binary"
    params = lgb_params(objective, seed, **overrides)
    cols: dict[str, list[np.ndarray]] = {name: [] for name in evaluated}
    iterations: list[int | None] = []
    for j in range(columns["train"].shape[1]):
        keep = ~np.isnan(columns["train"][:, j])
        yj = columns["train"][keep, j]
        if len(yj) == 0 or (kind == "multitask" and len(np.unique(yj)) < 2):
            constant = float(yj.mean()) if len(yj) else 0.0
            for name in evaluated:
                cols[name].append(np.full(_rows(x[name]), constant))
            iterations.append(None)
            continue
        vkeep = ~np.isnan(columns["val"][:, j])
        booster = train_lightgbm(params, _take(x["train"], keep), yj, _take(x["val"], vkeep), columns["val"][vkeep, j])
        iterations.append(int(booster.best_iteration))
        for name in evaluated:
            cols[name].append(_predict(booster, x[name]))
    outputs = {name: np.stack(c, axis=1) for name, c in cols.items()}
    return outputs, {"model": "LightGBM", "objective": objective, "best_iteration": iterations, **_shown(params)}


def _rows(x: Any) -> int:
    return int(x.shape[0])


def _take(x: Any, keep: np.ndarray) -> Any:
    return x.iloc[np.flatnonzero(keep)] if hasattr(x, "iloc") else x[keep]


def _shown(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters worth recording (not the plumbing: threads, verbosity...)."""
    return {k: params[k] for k in ("learning_rate", "num_leaves", "min_data_in_leaf", "seed") if k in params}
