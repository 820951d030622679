"""OOD scores and metrics against NumPy formulas, scikit-learn and SciPy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from headstart.errors import DataError
from headstart.metrics import (
    MahalanobisScorer,
    energy_score,
    fpr_at_tpr,
    max_logit_score,
    msp_score,
    ood_metrics,
    ood_report,
    ood_scores,
)


def _sklearn_reference(s_id: np.ndarray, s_ood: np.ndarray) -> dict[str, float]:
    score = np.r_[s_id, s_ood]
    is_id = np.r_[np.ones(s_id.size), np.zeros(s_ood.size)]
    return {
        "auroc": roc_auc_score(is_id, score),
        "aupr_out": average_precision_score(1 - is_id, -score),
        "aupr_in": average_precision_score(is_id, score),
    }


# ----------------------------------------------------------------------------------------------------
# metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_aupr_match_sklearn_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s_id = rng.normal(1.0, 1.0, size=137)
    s_ood = rng.normal(0.0, 1.5, size=61)
    got = ood_metrics(s_id, s_ood)
    for key, want in _sklearn_reference(s_id, s_ood).items():
        assert math.isclose(got[key], want, rel_tol=1e-12), key


def test_auroc_and_aupr_match_sklearn_with_many_ties() -> None:
    rng = np.random.default_rng(3)
    s_id = rng.integers(0, 5, size=80).astype(float)
    s_ood = rng.integers(-2, 3, size=50).astype(float)
    got = ood_metrics(s_id, s_ood)
    for key, want in _sklearn_reference(s_id, s_ood).items():
        assert math.isclose(got[key], want, rel_tol=1e-12), key


def test_fpr95_on_hand_made_example() -> None:
    # 20 ID scores 1..20: k = ceil(0.95 * 20) = 19, so the threshold is the 19th largest ID score, 2
    # (19 of 20 ID scores are >= 2, TPR exactly 0.95). OOD scores >= 2 are 2, 2.5, 3, 10, 25: 5 of 8.
    s_id = np.arange(1.0, 21.0)
    s_ood = np.array([0.0, 1.0, 2.0, 2.5, 3.0, 10.0, 25.0, 1.5])
    assert fpr_at_tpr(s_id, s_ood) == 5 / 8
    assert ood_metrics(s_id, s_ood)["fpr95"] == 5 / 8
    # 100 ID scores 0..99: k = 95, threshold 5 (float 0.95 * 100 must not round up to 96).
    assert fpr_at_tpr(np.arange(100.0), np.array([4.0, 5.0, 6.0, 4.99])) == 2 / 4
    # other targets: tpr=0.5 of 1..20 -> k = 10, threshold 11; tpr=1 -> threshold 1 (the minimum).
    assert fpr_at_tpr(s_id, s_ood, tpr=0.5) == 1 / 8
    assert fpr_at_tpr(s_id, s_ood, tpr=1.0) == 7 / 8


def test_fpr95_ties_are_deterministic_and_pessimistic() -> None:
    # All ID scores tie at 5: k = ceil(3.8) = 4, threshold 5; the OOD score tied at 5 counts as accepted.
    assert fpr_at_tpr([5.0, 5.0, 5.0, 5.0], [5.0, 4.0, 6.0]) == 2 / 3
    # 10 ID at 3 and 10 ID at 1: k = 19 lands in the group at 1, so threshold 1 and TPR is 1.0 (>= 0.95).
    s_id = np.r_[np.full(10, 3.0), np.full(10, 1.0)]
    assert fpr_at_tpr(s_id, [0.5, 1.0, 2.0, 3.0]) == 3 / 4
    # order of the inputs does not matter
    rng = np.random.default_rng(0)
    assert fpr_at_tpr(rng.permutation(s_id), [3.0, 2.0, 1.0, 0.5]) == 3 / 4


def test_perfect_separation() -> None:
    got = ood_metrics(np.linspace(1.0, 2.0, 50), np.linspace(-3.0, 0.9, 30))
    assert got == {"auroc": 1.0, "aupr_out": 1.0, "aupr_in": 1.0, "fpr95": 0.0}
    reversed_ = ood_metrics(np.linspace(-3.0, 0.9, 30), np.linspace(1.0, 2.0, 50))
    assert reversed_["auroc"] == 0.0 and reversed_["fpr95"] == 1.0


def test_ood_report_covers_every_score_and_accepts_torch() -> None:
    rng = np.random.default_rng(4)
    id_logits = rng.normal(size=(40, 3)) * 3.0
    ood_logits = rng.normal(size=(25, 3))
    report = ood_report(ood_scores(torch.tensor(id_logits)), ood_scores(ood_logits, temperature=1.0))
    assert set(report) == {"msp", "max_logit", "energy"}
    for name, row in report.items():
        assert set(row) == {"auroc", "aupr_out", "aupr_in", "fpr95"}
        want = ood_metrics(ood_scores(id_logits)[name], ood_scores(ood_logits)[name])
        assert row == pytest.approx(want)


# ----------------------------------------------------------------------------------------------------
# scores from logits


def test_logit_scores_match_numpy_formulas() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(30, 6)) * 4.0
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(msp_score(logits), softmax.max(axis=1), rtol=1e-12)
    np.testing.assert_allclose(max_logit_score(logits), logits.max(axis=1))
    np.testing.assert_allclose(energy_score(logits), np.log(np.exp(logits).sum(axis=1)), rtol=1e-12)
    np.testing.assert_allclose(energy_score(logits, temperature=2.0),
                               2.0 * np.log(np.exp(logits / 2.0).sum(axis=1)), rtol=1e-12)


def test_logit_scores_do_not_overflow_on_large_logits() -> None:
    logits = np.array([[1000.0, 0.0], [1000.0, 1000.0]])
    np.testing.assert_allclose(msp_score(logits), [1.0, 0.5])
    np.testing.assert_allclose(energy_score(logits), [1000.0, 1000.0 + math.log(2.0)])


# ----------------------------------------------------------------------------------------------------
# Mahalanobis


def _toy_gaussians(n: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(6)
    means = np.array([[0.0, 0.0], [4.0, 0.0]])
    cov = np.array([[1.0, 0.5], [0.5, 2.0]])
    y = np.repeat([0, 1], n)
    x = rng.multivariate_normal([0.0, 0.0], cov, size=2 * n) + means[y]
    return x, y, means, cov


def test_mahalanobis_fit_matches_numpy_and_recovers_the_gaussians() -> None:
    x, y, means, cov = _toy_gaussians()
    scorer = MahalanobisScorer().fit(x, y)
    centred = x - np.stack([x[y == c].mean(axis=0) for c in (0, 1)])[y]
    np.testing.assert_allclose(scorer.covariance_, np.cov(centred.T, bias=True), rtol=1e-10)
    np.testing.assert_allclose(scorer.means_, means, atol=0.1)
    np.testing.assert_allclose(scorer.covariance_, cov, atol=0.15)
    np.testing.assert_allclose(scorer.precision_, np.linalg.inv(scorer.covariance_), rtol=1e-8)


def test_mahalanobis_distances_match_scipy_and_far_points_score_lower() -> None:
    x, y, means, _ = _toy_gaussians()
    scorer = MahalanobisScorer().fit(x, y)
    points = np.array([[0.1, 0.0], [4.0, 0.1], [2.0, 1.0], [20.0, 20.0], [-15.0, 3.0]])
    dist = scorer.distances(points)
    try:
        from scipy.spatial.distance import mahalanobis
    except ImportError:  # pragma: no cover - scipy is optional
        def mahalanobis(u: np.ndarray, v: np.ndarray, vi: np.ndarray) -> float:
            return float(np.sqrt((u - v) @ vi @ (u - v)))
    for i, p in enumerate(points):
        for c in range(2):
            assert math.isclose(dist[i, c], mahalanobis(p, scorer.means_[c], scorer.precision_), rel_tol=1e-10)
    scores = scorer.score(points)
    np.testing.assert_allclose(scores, -dist.min(axis=1))
    assert max(scores[3], scores[4]) < min(scores[0], scores[1], scores[2])
    # the distances with the true parameters agree with the fitted ones to sampling error
    true_vi = np.linalg.inv(np.array([[1.0, 0.5], [0.5, 2.0]]))
    assert math.isclose(dist[3, 1], mahalanobis(points[3], means[1], true_vi), rel_tol=0.05)


def test_mahalanobis_ridge_allows_few_samples_and_ood_scores_uses_it() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(6, 10)), np.array([0, 0, 0, 1, 1, 1])
    scorer = MahalanobisScorer(ridge=1e-3).fit(x, y)
    assert np.all(np.isfinite(scorer.score(rng.normal(size=(4, 10)))))
    out = ood_scores(rng.normal(size=(4, 2)), features=rng.normal(size=(4, 10)), mahalanobis=scorer)
    assert set(out) == {"msp", "max_logit", "energy", "mahalanobis"} and out["mahalanobis"].shape == (4,)


# ----------------------------------------------------------------------------------------------------
# errors


def test_metric_errors() -> None:
    with pytest.raises(DataError, match="id_scores is empty"):
        ood_metrics([], [1.0])
    with pytest.raises(DataError, match="ood_scores is empty"):
        fpr_at_tpr([1.0], np.array([]))
    with pytest.raises(DataError, match="ood_scores has NaN or infinite values in 1 of 2"):
        ood_metrics([1.0, 2.0], [np.nan, 0.0])
    with pytest.raises(DataError, match="id_scores has NaN or infinite values"):
        ood_metrics([np.inf, 2.0], [0.0])
    with pytest.raises(DataError, match=r"1-D array.*shape \(2, 2\)"):
        ood_metrics(np.ones((2, 2)), [0.0])
    with pytest.raises(DataError, match=r"tpr must be in \(0, 1\]"):
        fpr_at_tpr([1.0], [0.0], tpr=95)
    with pytest.raises(DataError, match=r"only in id_scores: \['energy'\], only in ood_scores: \[\]"):
        ood_report({"msp": [1.0], "energy": [1.0]}, {"msp": [0.0]})
    with pytest.raises(DataError, match="score 'msp': ood_scores has NaN"):
        ood_report({"msp": [1.0]}, {"msp": [np.nan]})
    with pytest.raises(DataError, match="id_scores has no scores"):
        ood_report({}, {})


def test_score_errors() -> None:
    with pytest.raises(DataError, match=r"logits must be a 2-D array.*shape \(3,\)"):
        msp_score(np.ones(3))
    with pytest.raises(DataError, match=r"logits is empty \(shape \(0, 3\)\)"):
        energy_score(np.ones((0, 3)))
    with pytest.raises(DataError, match="logits has NaN or infinite values in 1 of 2 rows"):
        max_logit_score(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(DataError, match="temperature must be a positive finite number, got 0"):
        energy_score(np.ones((2, 2)), temperature=0)
    with pytest.raises(DataError, match="Pass both, or neither"):
        ood_scores(np.ones((2, 2)), features=np.ones((2, 3)))


def test_mahalanobis_errors() -> None:
    rng = np.random.default_rng(8)
    with pytest.raises(DataError, match=r"3 training rows in 2 classes leave 1 degree.*dimension 5 need at "
                                        r"least 5.*MahalanobisScorer\(ridge=1e-3\)"):
        MahalanobisScorer().fit(rng.normal(size=(3, 5)), [0, 0, 1])
    with pytest.raises(DataError, match=r"leave 0 degree.*with ridge > 0"):
        MahalanobisScorer(ridge=0.1).fit(rng.normal(size=(2, 5)), [0, 1])
    with pytest.raises(DataError, match="covariance is zero"):
        MahalanobisScorer().fit(np.ones((10, 2)), [0] * 5 + [1] * 5)
    with pytest.raises(DataError, match="features has 10 rows but labels has 9"):
        MahalanobisScorer().fit(rng.normal(size=(10, 2)), [0] * 9)
    with pytest.raises(DataError, match="not fitted"):
        MahalanobisScorer().score(np.ones((1, 2)))
    with pytest.raises(DataError, match="ridge must be a non-negative finite number"):
        MahalanobisScorer(ridge=-1.0)
    scorer = MahalanobisScorer().fit(rng.normal(size=(20, 2)), [0] * 10 + [1] * 10)
    with pytest.raises(DataError, match="features have 3 columns but the scorer was fitted on 2"):
        scorer.score(np.ones((1, 3)))
    with pytest.raises(DataError, match="logits has 2 rows but features has 3"):
        ood_scores(np.ones((2, 2)), features=np.ones((3, 2)), mahalanobis=scorer)
