"""Out-of-fold predictions and the meta-learners of ``headstart stack``.

The rule that keeps a stack honest: the meta-learner trains on predictions for rows that the predicting
model never trained on. ``cross_fit`` is the only place that hands rows to fold models, and it checks the
held-out rows of a fold are disjoint from its training rows and that every row is predicted exactly once;
test-set probabilities are the mean over the fold models (no model ever saw a test row).

Regression stacks work the same way on predicted numbers: the meta-learners are LightGBM's regressor and a
standardised ridge regression (``logreg`` names the linear learner of either kind).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from headstart.errors import ConfigError, DataError
from headstart.metrics import classification_metrics, regression_metrics

__all__ = ["META_LEARNERS", "MetaLearner", "cross_fit", "evaluate_stack", "meta_features"]

META_LEARNERS = ("lightgbm", "logreg")
FitPredict = Callable[[int, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def cross_fit(folds: np.ndarray, fit_predict: FitPredict) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities ``[n, C]`` of the training rows and the fold-averaged test probabilities.

    ``fit_predict(k, train_idx, holdout_idx)`` trains fold model ``k`` on ``train_idx`` only and returns its
    probabilities for ``holdout_idx`` (in that order) and for the test rows.
    """
    folds = np.asarray(folds)
    n_folds = int(folds.max()) + 1
    if sorted(set(folds.tolist())) != list(range(n_folds)):
        raise DataError(f"Fold ids must be 0..{n_folds - 1}, each used; got {sorted(set(folds.tolist()))}.")
    oof: np.ndarray | None = None
    seen = np.zeros(len(folds), dtype=np.int64)
    tests = []
    for k in range(n_folds):
        train_idx, holdout_idx = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        if np.intersect1d(train_idx, holdout_idx).size:  # cannot happen by construction; kept as the guard
            raise RuntimeError(f"fold {k}: held-out rows are also training rows")
        holdout, test = fit_predict(k, train_idx, holdout_idx)
        holdout, test = np.asarray(holdout, dtype=np.float64), np.asarray(test, dtype=np.float64)
        if holdout.shape[0] != len(holdout_idx):
            raise DataError(f"fold {k}: {holdout.shape[0]} held-out predictions for {len(holdout_idx)} rows.")
        if oof is None:
            oof = np.full((len(folds), holdout.shape[1]), np.nan)
        oof[holdout_idx] = holdout
        seen[holdout_idx] += 1
        tests.append(test)
    if oof is None or (seen != 1).any():
        raise RuntimeError("every training row must be predicted by exactly one fold model")
    return oof, np.mean(tests, axis=0)


def meta_features(probas: Sequence[np.ndarray], extra: np.ndarray | None = None,
                  regression: bool = False) -> np.ndarray:
    """Base-model probabilities side by side (the last class dropped: rows sum to one; predicted numbers all
    kept), plus extra columns such as embeddings."""
    cols = [p[:, :-1] if p.shape[1] > 1 and not regression else p for p in probas]
    if extra is not None:
        cols.append(np.asarray(extra, dtype=np.float64))
    return np.concatenate(cols, axis=1)


class MetaLearner:
    """LightGBM (default: small trees, shrinkage, row/column subsampling: the OOF table is small) or a
    standardised logistic regression (ridge regression for numbers); both deterministic."""

    def __init__(self, kind: str = "lightgbm", seed: int = 0, regression: bool = False) -> None:
        if kind not in META_LEARNERS:
            raise ConfigError(f"--meta '{kind}' is not a meta-learner; use one of {', '.join(META_LEARNERS)}.")
        self.kind, self.seed, self.regression = kind, int(seed), bool(regression)
        self.model: Any = None

    def _build(self) -> Any:
        if self.kind == "lightgbm":
            try:
                import lightgbm
            except ImportError:
                raise ConfigError("--meta lightgbm needs the lightgbm package: pip install 'headstart[experiments]' "
                                  "(or pip install lightgbm), or use --meta logreg.") from None
            model = lightgbm.LGBMRegressor if self.regression else lightgbm.LGBMClassifier
            return model(
                n_estimators=300, learning_rate=0.03, num_leaves=7, min_child_samples=20, subsample=0.8,
                subsample_freq=1, colsample_bytree=0.8, reg_lambda=1.0, random_state=self.seed, n_jobs=1,
                verbose=-1)
        try:
            from sklearn.linear_model import LogisticRegression, Ridge
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler
        except ImportError:
            raise ConfigError("--meta logreg needs scikit-learn: pip install 'headstart[experiments]'.") from None
        # standardised: probabilities and embedding columns live on different scales
        linear = Ridge(alpha=1.0) if self.regression else LogisticRegression(C=1.0, max_iter=5000)
        return make_pipeline(StandardScaler(), linear)

    def fit(self, x: np.ndarray, y: np.ndarray) -> MetaLearner:
        self.model = self._build()
        self.model.fit(x, y)
        return self

    def predict_proba(self, x: np.ndarray, n_classes: int) -> np.ndarray:
        """Probabilities for all ``n_classes`` (a class absent from the meta-training labels gets 0); for
        regression the predicted numbers as one column."""
        if self.regression:
            return np.asarray(self.model.predict(x), dtype=np.float64).reshape(len(x), 1)
        raw = self.model.predict_proba(x)
        out = np.zeros((len(x), n_classes))
        out[:, np.asarray(self.model.classes_, dtype=np.int64)] = raw
        return out


def evaluate_stack(names: Sequence[str], oof: Sequence[np.ndarray], test: Sequence[np.ndarray],
                   y_train: np.ndarray, y_test: np.ndarray, n_classes: int, meta: Sequence[str] = META_LEARNERS,
                   seed: int = 0, extra_train: np.ndarray | None = None,
                   extra_test: np.ndarray | None = None, regression: bool = False) -> dict[str, Any]:
    """Test metrics of every base model (fold-averaged), their plain average, and each stack; OOF metrics
    of the bases (what the meta-learner saw). Returns rows ready for a table plus the stack probabilities
    (``regression``: predicted numbers of one target, scored by RMSE / MAE / R2 / Spearman)."""
    def score(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
        return regression_metrics(y, p) if regression else classification_metrics(y, p, n_classes)

    rows: list[dict[str, Any]] = []
    for name, o, t in zip(names, oof, test, strict=True):
        rows.append({"model": name, "kind": "base", "test": score(y_test, t), "oof": score(y_train, o)})
    average = np.mean(test, axis=0)
    rows.append({"model": "average", "kind": "average", "test": score(y_test, average),
                 "oof": score(y_train, np.mean(oof, axis=0))})
    probas = {"average": average}
    x_train = meta_features(oof, extra_train, regression)
    x_test = meta_features(test, extra_test, regression)
    target = np.asarray(y_train).reshape(-1) if regression else y_train
    for kind in meta:
        learner = MetaLearner(kind, seed, regression).fit(x_train, target)
        p = learner.predict_proba(x_test, n_classes)
        probas[f"stack_{kind}"] = p
        rows.append({"model": f"stack ({kind})", "kind": "stack", "test": score(y_test, p)})
    return {"rows": rows, "probas": probas}
