"""Classification metrics in plain numpy.

They match scikit-learn (``average="macro"``, ``labels=range(n_classes)``, ``zero_division=0``) so the
numbers headstart logs are the numbers users get when they re-check predictions with sklearn, without
making sklearn a runtime dependency. Labels are class indices ``0..n_classes-1``; a class absent from
both ``y_true`` and ``y_pred`` still counts in a macro average, with a score of 0 (as sklearn does when
``labels`` is given), so the average is comparable across evaluation splits.

Bad inputs (wrong shapes, labels out of range, NaN probabilities, empty arrays) raise
:class:`~headstart.errors.DataError` with a message that says how to fix them.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from headstart.errors import DataError

__all__ = [
    "accuracy",
    "classification_metrics",
    "confusion_matrix",
    "f1_macro",
    "log_loss",
    "mcc",
    "precision_macro",
    "recall_macro",
    "roc_auc_binary",
]

LOG_LOSS_EPS = 1e-15
"""Probabilities are clipped to ``[eps, 1 - eps]`` before the log, as scikit-learn did up to 1.4."""

_ROW_SUM_TOL = 1e-2
"""How far a probability row may sum from 1 (loose enough for float16 softmax, tight enough to catch logits)."""


# ----------------------------------------------------------------------------------------------------
# input checks


def _check_n_classes(n_classes: Any) -> int:
    if isinstance(n_classes, bool):
        raise DataError(f"n_classes must be a positive integer, got {n_classes!r}.")
    try:
        n = operator.index(n_classes)
    except TypeError:
        raise DataError(f"n_classes must be a positive integer, got {n_classes!r}.") from None
    if n < 1:
        raise DataError(f"n_classes must be a positive integer, got {n}.")
    return n


def _to_numpy(values: Any) -> np.ndarray:
    """np.asarray that also takes torch tensors (on any device, with grad, in bfloat16)."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        values = values.detach().cpu()
        if values.is_floating_point():
            values = values.double()
        return values.numpy()
    return np.asarray(values)


def _as_1d(name: str, values: Any) -> np.ndarray:
    arr = _to_numpy(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{name} must be a 1-D array of length N, got shape {arr.shape}.")
    if arr.size == 0:
        raise DataError(
            f"{name} is empty: metrics need at least one row. Check that the evaluation split is not empty."
        )
    return arr


def _as_labels(name: str, values: Any, n_classes: int | None = None) -> np.ndarray:
    """Return ``values`` as a 1-D int64 array of class indices, checked against ``n_classes``."""
    arr = _as_1d(name, values)
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            bad = arr[~(np.isfinite(arr) & (arr == np.round(arr)))][:5]
            raise DataError(
                f"{name} must hold integer class indices, but it has non-integer values such as "
                f"{bad.tolist()}. Map labels to indices 0..C-1 (the run's label map does this)."
            )
        arr = arr.astype(np.int64)
    elif np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.int64, copy=False)
    else:
        raise DataError(
            f"{name} must hold integer class indices, got dtype {arr.dtype} (e.g. {arr[:3].tolist()}). "
            f"Map labels to indices 0..C-1 (the run's label map does this)."
        )
    if n_classes is not None:
        outside = (arr < 0) | (arr >= n_classes)
        if outside.any():
            bad = np.unique(arr[outside])[:10]
            raise DataError(
                f"{name} has label(s) {bad.tolist()} outside [0, {n_classes}) for n_classes={n_classes} "
                f"({int(outside.sum())} of {arr.size} rows). Check that n_classes matches the label map "
                f"and that labels are indices, not raw class values."
            )
    return arr


def _check_same_length(a_name: str, a: np.ndarray, b_name: str, b: np.ndarray) -> None:
    if a.shape[0] != b.shape[0]:
        raise DataError(
            f"{a_name} has {a.shape[0]} rows but {b_name} has {b.shape[0]}: they must describe the same "
            f"samples in the same order."
        )


def _pair(y_true: Any, y_pred: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray, int]:
    n = _check_n_classes(n_classes)
    t = _as_labels("y_true", y_true, n)
    p = _as_labels("y_pred", y_pred, n)
    _check_same_length("y_true", t, "y_pred", p)
    return t, p, n


def _as_proba(proba: Any, n_rows: int, n_classes: int | None) -> np.ndarray:
    """Return ``proba`` as float64 [N, C], checked: finite, within [0, 1], rows summing to ~1."""
    arr = np.asarray(_to_numpy(proba), dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(
            f"proba must be a 2-D array [N, n_classes] of class probabilities, got shape {arr.shape}."
        )
    if n_classes is not None and arr.shape[1] != n_classes:
        raise DataError(
            f"proba has {arr.shape[1]} columns but n_classes={n_classes}: it must be [N, n_classes] with one "
            f"column per class, in label-index order."
        )
    if arr.shape[0] != n_rows:
        raise DataError(
            f"proba has {arr.shape[0]} rows but y_true has {n_rows}: they must describe the same samples "
            f"in the same order."
        )
    if not np.all(np.isfinite(arr)):
        n_bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise DataError(
            f"proba has NaN or infinite values in {n_bad} of {n_rows} rows. The model diverged or the "
            f"inputs hold NaN; lower the learning rate or check the data."
        )
    if arr.min() < 0.0 or arr.max() > 1.0 + 1e-6:
        raise DataError(
            f"proba must hold probabilities in [0, 1], got values from {arr.min():.4g} to {arr.max():.4g}. "
            f"Pass softmax(logits), not the logits."
        )
    sums = arr.sum(axis=1)
    off = np.abs(sums - 1.0) > _ROW_SUM_TOL
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise DataError(
            f"proba rows must sum to 1, but {int(off.sum())} of {n_rows} rows do not (row {i} sums to "
            f"{sums[i]:.4g}). Pass softmax(logits) over the class dimension."
        )
    return arr


# ----------------------------------------------------------------------------------------------------
# label metrics


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Share of rows where the predicted label equals the true one."""
    t = _as_1d("y_true", y_true)
    p = _as_1d("y_pred", y_pred)
    _check_same_length("y_true", t, "y_pred", p)
    return float(np.mean(t == p))


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """Counts as an int64 [n_classes, n_classes] array: rows are true classes, columns predicted ones."""
    t, p, n = _pair(y_true, y_pred, n_classes)
    return np.bincount(t * n + p, minlength=n * n).reshape(n, n).astype(np.int64)


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(cm).astype(np.float64)
    return tp, cm.sum(axis=0) - tp, cm.sum(axis=1) - tp  # tp, fp, fn


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (sklearn's zero_division=0)."""
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def precision_macro(y_true: Any, y_pred: Any, n_classes: int) -> float:
    """Unweighted mean over all ``n_classes`` of tp / (tp + fp), 0 for a class never predicted."""
    tp, fp, _ = _per_class(confusion_matrix(y_true, y_pred, n_classes))
    return float(np.mean(_safe_div(tp, tp + fp)))


def recall_macro(y_true: Any, y_pred: Any, n_classes: int) -> float:
    """Unweighted mean over all ``n_classes`` of tp / (tp + fn), 0 for a class absent from y_true."""
    tp, _, fn = _per_class(confusion_matrix(y_true, y_pred, n_classes))
    return float(np.mean(_safe_div(tp, tp + fn)))


def f1_macro(y_true: Any, y_pred: Any, n_classes: int) -> float:
    """Unweighted mean over all ``n_classes`` of 2tp / (2tp + fp + fn); it weighs rare classes like common ones."""
    tp, fp, fn = _per_class(confusion_matrix(y_true, y_pred, n_classes))
    return float(np.mean(_safe_div(2 * tp, 2 * tp + fp + fn)))


def mcc(y_true: Any, y_pred: Any, n_classes: int) -> float:
    """Matthews correlation (multiclass R_K, Gorodkin 2004), 0 when undefined; robust to class imbalance."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    t_sum = cm.sum(axis=1, dtype=np.float64)
    p_sum = cm.sum(axis=0, dtype=np.float64)
    n_correct = float(np.trace(cm))
    n = float(p_sum.sum())
    cov_tp = n_correct * n - float(np.dot(t_sum, p_sum))
    cov_pp = n * n - float(np.dot(p_sum, p_sum))
    cov_tt = n * n - float(np.dot(t_sum, t_sum))
    denom = cov_pp * cov_tt
    if denom == 0:
        return 0.0
    return float(cov_tp / np.sqrt(denom))


# ----------------------------------------------------------------------------------------------------
# score metrics


def roc_auc_binary(y_true: Any, score: Any) -> float:
    """ROC AUC as the Mann-Whitney U statistic; tied scores count one half, as on sklearn's ROC curve.

    Computed exactly in integers (twice the average ranks), so it does not depend on how scores are sorted.
    """
    t = _as_labels("y_true", y_true)
    if np.any((t != 0) & (t != 1)):
        bad = np.unique(t[(t != 0) & (t != 1)])[:10]
        raise DataError(
            f"roc_auc_binary needs y_true with labels 0 and 1 only, got {bad.tolist()}. For more than two "
            f"classes use the macro metrics; for other label values map them to 0/1 first."
        )
    s = np.asarray(_to_numpy(score), dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1:
        raise DataError(
            f"score must be a 1-D array with one score per row (e.g. proba[:, 1]), got shape {s.shape}."
        )
    _check_same_length("y_true", t, "score", s)
    if not np.all(np.isfinite(s)):
        raise DataError(
            f"score has NaN or infinite values in {int((~np.isfinite(s)).sum())} of {s.size} rows. The model "
            f"diverged or the inputs hold NaN; lower the learning rate or check the data."
        )
    n_pos = int(t.sum())
    n_neg = int(t.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise DataError(
            f"ROC AUC needs both classes in the evaluation split, but it has {n_neg} row(s) of class 0 and "
            f"{n_pos} row(s) of class 1, so AUC is undefined. Use a bigger evaluation split, or a stratified "
            f"split, so that both classes appear in it."
        )
    # Twice the average rank of each tied group: 2 * (#smaller) + (group size) + 1, an integer.
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    smaller = np.cumsum(counts) - counts
    twice_rank = (2 * smaller + counts + 1)[inverse.reshape(-1)]
    twice_u = int(twice_rank[t == 1].sum()) - n_pos * (n_pos + 1)
    return float(twice_u / (2 * n_pos * n_neg))


def log_loss(y_true: Any, proba: Any) -> float:
    """Mean negative log-likelihood of the true class; probabilities clipped to [1e-15, 1 - 1e-15].

    ``proba`` is [N, C] (one column per class index); a 1-D array is taken as P(class 1) of a binary task.
    """
    t = _as_labels("y_true", y_true)
    p = np.asarray(_to_numpy(proba), dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    p = _as_proba(p, t.shape[0], None)
    t = _as_labels("y_true", t, p.shape[1])
    return _log_loss(t, p)


def _log_loss(t: np.ndarray, p: np.ndarray) -> float:
    picked = np.clip(p[np.arange(t.size), t], LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    return float(-np.mean(np.log(picked)))


def classification_metrics(y_true: Any, proba: Any, n_classes: int, prefix: str = "") -> dict[str, float]:
    """Every metric headstart logs for a classification split, from the labels and class probabilities.

    Keys: ``acc``, ``f1``, ``precision``, ``recall`` (macro), ``mcc``, ``loss`` (log loss) and, for two
    classes only, ``auc`` (of ``proba[:, 1]``) and ``f1_pos`` (F1 of class index 1, the figure GLUE reports
    for MRPC / QQP); each key is prefixed with ``prefix`` (e.g. ``"val_"``).
    Predictions are ``argmax(proba)``.
    """
    n = _check_n_classes(n_classes)
    t = _as_labels("y_true", y_true, n)
    p = _as_proba(proba, t.shape[0], n)
    pred = p.argmax(axis=1)
    out = {
        "acc": accuracy(t, pred),
        "f1": f1_macro(t, pred, n),
        "precision": precision_macro(t, pred, n),
        "recall": recall_macro(t, pred, n),
        "mcc": mcc(t, pred, n),
        "loss": _log_loss(t, p),
    }
    if n == 2:
        out["auc"] = roc_auc_binary(t, p[:, 1])
        tp, fp, fn = _per_class(confusion_matrix(t, pred, n))
        out["f1_pos"] = float(_safe_div(2 * tp[1:], 2 * tp[1:] + fp[1:] + fn[1:])[0])
    return {f"{prefix}{k}": v for k, v in out.items()}
