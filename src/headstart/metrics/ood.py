"""Out-of-distribution (OOD) detection: scores from a classifier's outputs, and metrics on those scores.

Convention, everywhere in this module: **a higher score means more in-distribution (ID)**. A detector
accepts a sample as ID when its score is at or above a threshold. So every score is an "ID-ness":

* ``msp``: maximum softmax probability, ``max_c softmax(logits)_c``.
* ``max_logit``: ``max_c logits_c``.
* ``energy``: the negative free energy ``-E(x) = T * logsumexp(logits / T)``.
* ``mahalanobis``: the negative Mahalanobis distance of a feature vector to its nearest class mean,
  with class means and one tied covariance fitted on the training split (:class:`MahalanobisScorer`).

Metrics compare the scores of an ID set with those of an OOD set (:func:`ood_metrics`, :func:`ood_report`):
AUROC, AUPR with OOD as the positive class (``aupr_out``) and with ID as the positive class (``aupr_in``),
and the FPR at 95% TPR (``fpr95``, see :func:`fpr_at_tpr`). AUROC and AUPR match scikit-learn's
``roc_auc_score`` and ``average_precision_score``, without making scikit-learn a runtime dependency.

Bad inputs (empty sets, NaN / inf, wrong shapes, a covariance that cannot be estimated) raise
:class:`~headstart.errors.DataError` with a message that says how to fix them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from headstart.errors import DataError
from headstart.metrics.classification import _as_labels, _to_numpy, roc_auc_binary

__all__ = [
    "MahalanobisScorer",
    "energy_score",
    "fpr_at_tpr",
    "max_logit_score",
    "msp_score",
    "ood_metrics",
    "ood_report",
    "ood_scores",
]


# ----------------------------------------------------------------------------------------------------
# input checks


def _as_matrix(name: str, values: Any) -> np.ndarray:
    """Return ``values`` as a finite float64 [N, K] array with N >= 1 and K >= 1."""
    arr = np.asarray(_to_numpy(values), dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(f"{name} must be a 2-D array [N, K] (one row per sample), got shape {arr.shape}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(
            f"{name} is empty (shape {arr.shape}): OOD scores need at least one row and one column. Check "
            f"that the evaluation split is not empty and that the model produced outputs."
        )
    if not np.all(np.isfinite(arr)):
        n_bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise DataError(
            f"{name} has NaN or infinite values in {n_bad} of {arr.shape[0]} rows. The model diverged or "
            f"the inputs hold NaN; lower the learning rate or check the data."
        )
    return arr


def _as_scores(name: str, values: Any) -> np.ndarray:
    """Return ``values`` as a finite, non-empty float64 1-D array of per-sample scores."""
    arr = np.asarray(_to_numpy(values), dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{name} must be a 1-D array with one score per sample, got shape {arr.shape}.")
    if arr.size == 0:
        raise DataError(
            f"{name} is empty: OOD metrics need at least one ID and one OOD sample. Check that both the "
            f"in-distribution and the out-of-distribution sets are non-empty."
        )
    if not np.all(np.isfinite(arr)):
        n_bad = int((~np.isfinite(arr)).sum())
        raise DataError(
            f"{name} has NaN or infinite values in {n_bad} of {arr.size} samples. Scores must be finite; "
            f"check the logits / features they came from (a diverged model or NaN inputs)."
        )
    return arr


def _check_temperature(temperature: Any) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise DataError(f"temperature must be a positive number, got {temperature!r}.") from None
    if not (math.isfinite(t) and t > 0.0):
        raise DataError(f"temperature must be a positive finite number, got {temperature!r}. Use 1.0 for the "
                        f"plain energy score.")
    return t


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """Row-wise log(sum(exp(x))) without overflow: shift by the row max first."""
    m = x.max(axis=1)
    return m + np.log(np.exp(x - m[:, None]).sum(axis=1))


# ----------------------------------------------------------------------------------------------------
# scores from logits


def msp_score(logits: Any) -> np.ndarray:
    """Maximum softmax probability per row of ``logits [N, C]``; in (1/C, 1], higher = more ID.

    Computed as ``exp(max - logsumexp)`` so large logits do not overflow.
    """
    x = _as_matrix("logits", logits)
    return np.exp(x.max(axis=1) - _logsumexp(x))


def max_logit_score(logits: Any) -> np.ndarray:
    """Largest logit per row of ``logits [N, C]``; unlike MSP it keeps the logits' scale, higher = more ID."""
    return _as_matrix("logits", logits).max(axis=1)


def energy_score(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Negative free energy ``T * logsumexp(logits / T)`` per row of ``logits [N, C]``; higher = more ID."""
    t = _check_temperature(temperature)
    x = _as_matrix("logits", logits)
    return t * _logsumexp(x / t)


# ----------------------------------------------------------------------------------------------------
# Mahalanobis score from features


class MahalanobisScorer:
    """Class-conditional Gaussians with one tied covariance, fitted once on training features.

    ``fit`` estimates one mean per class present in the labels and the tied (pooled, maximum-likelihood,
    divided by N) covariance ``S = 1/N sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T``, as in Lee et al. (2018).
    The precision matrix is ``pinv(S + ridge * mean(diag(S)) * I)`` (symmetric pseudo-inverse), so a
    near-singular ``S`` gives no overflow; with ``ridge=0`` directions of zero training variance (e.g. dead
    units) are ignored, with ``ridge > 0`` they are penalised. ``score`` returns the negative distance to
    the nearest class mean, so higher = more ID like the other scores.

    Without a ridge, the covariance needs ``N - n_classes >= D`` training rows to be full rank; with
    ``ridge > 0`` it needs ``N - n_classes >= 1``. Fewer raise :class:`~headstart.errors.DataError`.
    """

    def __init__(self, ridge: float = 0.0) -> None:
        try:
            r = float(ridge)
        except (TypeError, ValueError):
            raise DataError(f"ridge must be a non-negative number, got {ridge!r}.") from None
        if not (math.isfinite(r) and r >= 0.0):
            raise DataError(f"ridge must be a non-negative finite number, got {ridge!r}. Use 0.0 for none, "
                            f"or a small value such as 1e-3 when there are few training samples.")
        self.ridge = r
        self.classes_: np.ndarray | None = None
        self.means_: np.ndarray | None = None
        self.covariance_: np.ndarray | None = None
        self.precision_: np.ndarray | None = None

    def fit(self, features: Any, labels: Any) -> MahalanobisScorer:
        """Estimate class means and the tied covariance from training ``features [N, D]`` and ``labels [N]``."""
        x = _as_matrix("features", features)
        y = _as_labels("labels", labels)
        if y.shape[0] != x.shape[0]:
            raise DataError(
                f"features has {x.shape[0]} rows but labels has {y.shape[0]}: they must describe the same "
                f"training samples in the same order."
            )
        classes, inverse = np.unique(y, return_inverse=True)
        inverse = inverse.reshape(-1)
        n, d, k = x.shape[0], x.shape[1], classes.size
        needed = 1 if self.ridge > 0.0 else d
        if n - k < needed:
            fix = (
                "pass more training rows"
                if self.ridge > 0.0
                else f"pass more training rows, reduce the feature dimension (e.g. PCA to fewer than {n - k + 1} "
                f"dims), or use MahalanobisScorer(ridge=1e-3)"
            )
            raise DataError(
                f"Cannot estimate the tied covariance for the Mahalanobis score: {n} training rows in {k} "
                f"classes leave {n - k} degree(s) of freedom, but features of dimension {d} need at least "
                f"{needed}{' (with ridge > 0)' if self.ridge > 0.0 else ' for a full-rank covariance'}. "
                f"Fix: {fix}."
            )
        counts = np.bincount(inverse, minlength=k).astype(np.float64)
        means = np.zeros((k, d), dtype=np.float64)
        np.add.at(means, inverse, x)
        means /= counts[:, None]
        centred = x - means[inverse]
        cov = centred.T @ centred / n
        scale = float(np.mean(np.diag(cov)))
        if scale <= 0.0:
            raise DataError(
                f"Cannot estimate the tied covariance for the Mahalanobis score: the {n} training features "
                f"do not vary around their class means (covariance is zero). Check that the features are "
                f"not constant (e.g. a dead or frozen layer) and that they come from the right layer."
            )
        reg = cov + self.ridge * scale * np.eye(d)
        self.classes_ = classes
        self.means_ = means
        self.covariance_ = cov
        self.precision_ = np.linalg.pinv(reg, hermitian=True)
        return self

    def distances(self, features: Any) -> np.ndarray:
        """Mahalanobis distance of each row of ``features [N, D]`` to each class mean: [N, n_classes]."""
        if self.means_ is None or self.precision_ is None:
            raise DataError("MahalanobisScorer is not fitted: call fit(train_features, train_labels) first.")
        x = _as_matrix("features", features)
        if x.shape[1] != self.means_.shape[1]:
            raise DataError(
                f"features have {x.shape[1]} columns but the scorer was fitted on {self.means_.shape[1]}: "
                f"score features from the same layer of the same model as the training features."
            )
        # One class at a time: an [N, C, D] difference tensor would not fit memory for ImageNet-size C.
        sq = np.empty((x.shape[0], self.means_.shape[0]), dtype=np.float64)
        for c, mean in enumerate(self.means_):
            diff = x - mean
            sq[:, c] = np.einsum("nd,nd->n", diff @ self.precision_, diff)
        return np.sqrt(np.maximum(sq, 0.0))

    def score(self, features: Any) -> np.ndarray:
        """Negative distance to the nearest class mean per row of ``features [N, D]``; higher = more ID."""
        return -self.distances(features).min(axis=1)


def ood_scores(
    logits: Any,
    features: Any | None = None,
    mahalanobis: MahalanobisScorer | None = None,
    temperature: float = 1.0,
) -> dict[str, np.ndarray]:
    """All scores for one set: ``msp``, ``max_logit``, ``energy`` and, given features + fitted scorer, ``mahalanobis``."""
    x = _as_matrix("logits", logits)
    out = {"msp": msp_score(x), "max_logit": max_logit_score(x), "energy": energy_score(x, temperature)}
    if (features is None) != (mahalanobis is None):
        raise DataError(
            "ood_scores needs both features and a fitted MahalanobisScorer for the mahalanobis score, got "
            f"features={'given' if features is not None else None} and "
            f"mahalanobis={'given' if mahalanobis is not None else None}. Pass both, or neither."
        )
    if features is not None and mahalanobis is not None:
        f = _as_matrix("features", features)
        if f.shape[0] != x.shape[0]:
            raise DataError(f"logits has {x.shape[0]} rows but features has {f.shape[0]}: they must describe the "
                            f"same samples in the same order.")
        out["mahalanobis"] = mahalanobis.score(f)
    return out


# ----------------------------------------------------------------------------------------------------
# metrics


def _average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    """scikit-learn's average precision: sum over distinct thresholds of (R_n - R_{n-1}) * P_n."""
    order = np.argsort(-score, kind="mergesort")
    s, y = score[order], positive[order].astype(np.float64)
    last_of_group = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tps = np.cumsum(y)[last_of_group]
    precision = tps / (last_of_group + 1)
    # (R_n - R_{n-1}) = new positives / n_pos; summing integer counts first keeps a perfect ranking at 1.0.
    return float(np.sum(np.diff(np.r_[0.0, tps]) * precision) / tps[-1])


def fpr_at_tpr(id_scores: Any, ood_scores: Any, tpr: float = 0.95) -> float:
    """Fraction of OOD samples accepted as ID at the threshold that accepts ``tpr`` of the ID samples.

    Precisely: with ``n`` ID scores and ``k = ceil(tpr * n)``, the threshold ``t`` is the k-th largest ID
    score; a sample is accepted as ID when ``score >= t``. That is the highest threshold accepting at least
    ``tpr`` of the ID set (ties at ``t`` can push the accepted share above ``tpr``; it never falls below).
    The result is ``#(ood >= t) / n_ood``: OOD scores tied with ``t`` count as accepted, the pessimistic
    and deterministic choice.
    """
    try:
        target = float(tpr)
    except (TypeError, ValueError):
        raise DataError(f"tpr must be a number in (0, 1], got {tpr!r}.") from None
    if not (0.0 < target <= 1.0):
        raise DataError(f"tpr must be in (0, 1], got {tpr!r}. Use 0.95 for FPR at 95% TPR.")
    s_id = _as_scores("id_scores", id_scores)
    s_ood = _as_scores("ood_scores", ood_scores)
    # round() guards against 0.95 * 20 = 18.999... style float error turning ceil(19) into 20.
    k = max(1, math.ceil(round(target * s_id.size, 9)))
    threshold = np.sort(s_id)[::-1][k - 1]
    return float(np.mean(s_ood >= threshold))


def ood_metrics(id_scores: Any, ood_scores: Any, tpr: float = 0.95) -> dict[str, float]:
    """AUROC, AUPR (OOD positive: ``aupr_out``; ID positive: ``aupr_in``) and ``fpr95`` for one score.

    Scores follow the module convention, higher = more ID. AUROC is the probability that a random ID sample
    scores above a random OOD one (ties count one half); it is the same with either class as positive.
    ``aupr_out`` ranks by ``-score`` with OOD as positive, ``aupr_in`` ranks by ``score`` with ID as
    positive, both as scikit-learn's ``average_precision_score``. The ``fpr95`` key holds
    :func:`fpr_at_tpr` at ``tpr`` (0.95 unless changed).
    """
    s_id = _as_scores("id_scores", id_scores)
    s_ood = _as_scores("ood_scores", ood_scores)
    score = np.r_[s_id, s_ood]
    is_id = np.r_[np.ones(s_id.size, dtype=np.int64), np.zeros(s_ood.size, dtype=np.int64)]
    return {
        "auroc": roc_auc_binary(is_id, score),
        "aupr_out": _average_precision(1 - is_id, -score),
        "aupr_in": _average_precision(is_id, score),
        "fpr95": fpr_at_tpr(s_id, s_ood, tpr),
    }


def ood_report(
    id_scores: Mapping[str, Any], ood_scores: Mapping[str, Any], tpr: float = 0.95
) -> dict[str, dict[str, float]]:
    """:func:`ood_metrics` for every score name: ``{name: {auroc, aupr_out, aupr_in, fpr95}}``.

    Both mappings must hold the same score names (e.g. the outputs of :func:`ood_scores` on the ID and the
    OOD set), so that no score is silently dropped from the report.
    """
    if not id_scores:
        raise DataError("id_scores has no scores: pass {score_name: array}, e.g. ood_scores(id_logits).")
    if set(id_scores) != set(ood_scores):
        only_id = sorted(set(id_scores) - set(ood_scores))
        only_ood = sorted(set(ood_scores) - set(id_scores))
        raise DataError(
            f"id_scores and ood_scores must hold the same score names; only in id_scores: {only_id}, only in "
            f"ood_scores: {only_ood}. Compute the same scores for both sets."
        )
    report: dict[str, dict[str, float]] = {}
    for name in id_scores:
        try:
            report[name] = ood_metrics(id_scores[name], ood_scores[name], tpr)
        except DataError as err:
            raise DataError(f"score {name!r}: {err}") from None
    return report
