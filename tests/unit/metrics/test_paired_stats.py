"""Paired statistics: the same p-values as scipy's ttest_rel and wilcoxon, quiet on degenerate inputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from headstart.errors import ConfigError, DataError
from headstart.metrics.paired import (
    cohens_dz,
    compare_to_baseline,
    mean_std,
    paired_ttest,
    wilcoxon_signed_rank,
)

TTEST_CASES = [
    ([0.81, 0.83, 0.80], [0.79, 0.80, 0.80]),
    ([0.70, 0.72, 0.69, 0.74], [0.75, 0.74, 0.73, 0.78]),  # a below b: negative differences
    ([1.0, 2.5, 3.1, 4.7, 5.2], [1.4, 2.0, 3.9, 4.1, 6.0]),  # mixed signs
    ([0.5, 0.6], [0.4, 0.65]),
    (list(np.linspace(0.0, 1.0, 12)), list(np.linspace(0.0, 1.0, 12) ** 2)),
]


@pytest.mark.parametrize(("a", "b"), TTEST_CASES)
def test_paired_ttest_matches_scipy_ttest_rel(a, b) -> None:
    ref = stats.ttest_rel(a, b)
    got = paired_ttest(a, b)
    d = np.asarray(a) - np.asarray(b)
    assert got["n"] == len(a) and got["df"] == len(a) - 1 == ref.df
    assert got["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert got["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert got["mean_diff"] == pytest.approx(d.mean(), rel=1e-12)
    assert got["sd_diff"] == pytest.approx(d.std(ddof=1), rel=1e-12)


def test_paired_ttest_negative_difference_has_negative_t() -> None:
    got = paired_ttest([0.70, 0.72, 0.69, 0.74], [0.75, 0.74, 0.73, 0.78])
    assert got["mean_diff"] < 0 and got["t"] < 0 and 0 < got["p"] < 0.05


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0.9, 0.8, 0.7], [0.85, 0.78, 0.6]),  # n=3: smallest two-sided exact p is 0.25
        ([1.1, 2.4, 3.9, 4.2, 5.0], [1.0, 2.0, 3.0, 5.0, 4.75]),  # n=5
        ([0.83, 0.85, 0.79, 0.88, 0.81, 0.86, 0.84, 0.80],
         [0.80, 0.86, 0.74, 0.84, 0.81 - 0.045, 0.79, 0.84 - 0.065, 0.82]),  # n=8
    ],
)
def test_wilcoxon_matches_scipy_exact_on_untied_data(a, b) -> None:
    ref = stats.wilcoxon(a, b)
    got = wilcoxon_signed_rank(a, b)
    assert got["method"] == "exact" and got["n"] == len(a)
    assert len({round(x, 9) for x in np.abs(np.subtract(a, b))}) == len(a)  # untied, even after rounding
    assert got["statistic"] == ref.statistic
    assert got["p"] == pytest.approx(ref.pvalue, rel=1e-12)


def test_wilcoxon_n25_matches_scipy_default_and_normal_approximation() -> None:
    # scipy's default method='auto' stays exact for untied data up to 50 pairs, and so do we; its normal
    # approximation (method='asymptotic', no continuity correction by default) is what we use above 50
    # pairs or with ties beyond 13 pairs: check both against n=25 pairs.
    rng = np.random.default_rng(7)
    a = rng.normal(0.80, 0.02, 25)
    b = a - rng.normal(0.005, 0.01, 25)
    got = wilcoxon_signed_rank(a, b)
    assert got["method"] == "exact"
    assert got["p"] == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-12)
    assert got["statistic"] == stats.wilcoxon(a, b).statistic

    a_tied, b_tied = np.round(a * 64) / 64, np.round(b * 64) / 64  # exact ties and zeros: normal path
    got = wilcoxon_signed_rank(a_tied, b_tied)
    assert got["method"] == "normal" and got["n_nonzero"] < 25
    assert got["p"] == pytest.approx(stats.wilcoxon(a_tied, b_tied, method="asymptotic").pvalue, rel=1e-12)
    assert got["p"] == pytest.approx(stats.wilcoxon(a_tied, b_tied).pvalue, rel=1e-12)

    big_a, big_b = rng.normal(0, 1, 60), rng.normal(0.3, 1, 60)  # above 50 pairs: normal even untied
    got = wilcoxon_signed_rank(big_a, big_b)
    assert got["method"] == "normal"
    assert got["p"] == pytest.approx(stats.wilcoxon(big_a, big_b).pvalue, rel=1e-12)


def test_wilcoxon_small_tied_sample_enumerates_like_scipy() -> None:
    a, b = [0.8, 0.8, 0.9, 0.7, 0.85, 0.9], [0.7, 0.7, 0.9, 0.6, 0.8, 0.75]  # tied |d| and one zero
    got = wilcoxon_signed_rank(a, b)
    assert got["method"] == "enumerated" and got["n_nonzero"] == 5
    assert got["p"] == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-12)


def test_wilcoxon_float_rounding_ties_are_ties() -> None:
    # 0.86-0.85 and 0.57-0.56 are the same 1-point gain, apart in the last float bits only (scipy ranks
    # them 1 and 2); they rank as a tie, exactly like the same gains written as whole points.
    a, b = [0.86, 0.57, 0.87, 0.91, 0.80], [0.85, 0.56, 0.86, 0.88, 0.82]
    assert len(set((np.asarray(a) - np.asarray(b)).tolist())) == 4
    got = wilcoxon_signed_rank(a, b)
    ref = stats.wilcoxon([1, 1, 1, 3, -2])
    assert got["method"] == "enumerated" and got["statistic"] == ref.statistic == 4.0
    assert got["p"] == pytest.approx(ref.pvalue, rel=1e-12)


def test_cohens_dz_by_hand() -> None:
    # differences 0.02, 0.03, 0.00: mean 0.01667, sd = sqrt(((0.00333)^2 + (0.01333)^2 + (0.01667)^2) / 2)
    a, b = [0.82, 0.83, 0.80], [0.80, 0.80, 0.80]
    mean = 0.05 / 3
    sd = math.sqrt(((0.02 - mean) ** 2 + (0.03 - mean) ** 2 + (0.0 - mean) ** 2) / 2)
    assert cohens_dz(a, b) == pytest.approx(mean / sd, rel=1e-9)
    assert cohens_dz(b, a) == pytest.approx(-mean / sd, rel=1e-9)


def test_mean_std() -> None:
    assert mean_std([0.8, 0.9, 1.0]) == pytest.approx((0.9, 0.1))
    assert mean_std([0.7]) == (0.7, 0.0)
    mean, std = mean_std([])
    assert math.isnan(mean) and math.isnan(std)


def test_single_pair_cannot_be_tested_and_stays_quiet() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = paired_ttest([0.9], [0.8])
        dz = cohens_dz([0.9], [0.8])
        w = wilcoxon_signed_rank([0.9], [0.8])
    assert t["n"] == 1 and math.isnan(t["t"]) and math.isnan(t["p"])
    assert t["mean_diff"] == pytest.approx(0.1)
    assert math.isnan(dz)
    assert w["n"] == 1 and w["p"] == 1.0  # 1 pair: the two sign assignments are equally likely


def test_zero_variance_differences_are_quiet_and_decided() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same_gain = paired_ttest([0.8, 0.7, 0.9], [0.7, 0.6, 0.8])  # every seed +0.1 (up to rounding)
        same_loss = paired_ttest([0.7, 0.6, 0.8], [0.8, 0.7, 0.9])
        identical = paired_ttest([0.8, 0.7, 0.9], [0.8, 0.7, 0.9])
        dz_gain = cohens_dz([0.8, 0.7, 0.9], [0.7, 0.6, 0.8])
        dz_zero = cohens_dz([0.8, 0.7, 0.9], [0.8, 0.7, 0.9])
        w_zero = wilcoxon_signed_rank([0.8, 0.7, 0.9], [0.8, 0.7, 0.9])
    assert same_gain["p"] == 0.0 and same_gain["t"] == math.inf and same_gain["sd_diff"] == 0.0
    assert same_loss["p"] == 0.0 and same_loss["t"] == -math.inf
    assert identical["p"] == 1.0 and identical["t"] == 0.0 and identical["mean_diff"] == 0.0
    assert dz_gain == math.inf and dz_zero == 0.0
    assert w_zero["p"] == 1.0 and w_zero["statistic"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy divides by a zero std on the way
        assert stats.wilcoxon([0.8, 0.7, 0.9], [0.8, 0.7, 0.9]).pvalue == 1.0


@pytest.mark.parametrize("fn", [paired_ttest, wilcoxon_signed_rank, cohens_dz])
def test_length_mismatch_is_a_clear_error(fn) -> None:
    with pytest.raises(ValueError, match=r"a has 3 value\(s\) but b has 2.*one value per seed"):
        fn([0.8, 0.7, 0.9], [0.8, 0.7])
    with pytest.raises(DataError, match="NaN"):
        fn([0.8, math.nan], [0.8, 0.7])


def _row(strategy: str, seed, acc) -> dict:
    return {"strategy": strategy, "seed": seed, "test_acc": acc}


def test_compare_to_baseline_pairs_by_seed() -> None:
    rows = [
        _row("full", 0, 0.80), _row("full", 1, 0.82), _row("full", 2, 0.81), _row("full", 3, 0.83),
        _row("partial:2", "2", "0.84"), _row("partial:2", "0", "0.83"), _row("partial:2", 1, 0.85),
        _row("probe", 0, 0.70), _row("probe", 1, None), _row("probe", 2, math.nan), _row("probe", 4, 0.9),
    ]
    out = compare_to_baseline(rows, "test_acc", "full")
    assert [e["group"] for e in out] == ["full", "partial:2", "probe"]

    base = out[0]
    assert base["is_baseline"] and base["n_runs"] == 4 and base["seeds"] == [0, 1, 2, 3]
    assert base["mean"] == pytest.approx(0.815)
    assert all(base[k] is None for k in ("n_pairs", "mean_diff", "t", "p_t", "p_wilcoxon", "dz", "baseline_mean"))

    partial = out[1]  # CSV strings pair with ints; seed 3 exists only in full and is dropped
    a, b = [0.83, 0.85, 0.84], [0.80, 0.82, 0.81]
    assert partial["seeds"] == [0, 1, 2] and partial["n_pairs"] == 3 and partial["n_runs"] == 3
    assert partial["mean"] == pytest.approx(0.84) and partial["baseline_mean"] == pytest.approx(0.81)
    assert partial["mean_diff"] == pytest.approx(0.03)
    assert partial["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert partial["p_t"] == 0.0  # +0.03 on every seed: zero variance

    probe = out[2]  # None and NaN are ignored, seed 4 has no partner
    assert probe["n_runs"] == 2 and probe["seeds"] == [0] and probe["n_pairs"] == 1
    assert probe["mean_diff"] == pytest.approx(-0.10)
    assert math.isnan(probe["p_t"]) and math.isnan(probe["dz"])


def test_compare_to_baseline_matches_scipy_on_noisy_pairs() -> None:
    full = [0.80, 0.82, 0.81, 0.79, 0.84]
    lora = [0.83, 0.82, 0.85, 0.80, 0.86]
    rows = [_row("full", s, v) for s, v in enumerate(full)] + [_row("lora", s, v) for s, v in enumerate(lora)]
    entry = compare_to_baseline(rows, "test_acc", "full")[1]
    assert entry["p_t"] == pytest.approx(stats.ttest_rel(lora, full).pvalue, rel=1e-10)
    assert entry["t"] == pytest.approx(stats.ttest_rel(lora, full).statistic, rel=1e-10)
    assert entry["p_wilcoxon"] == pytest.approx(stats.wilcoxon(lora, full).pvalue, rel=1e-12)


def test_compare_to_baseline_errors() -> None:
    rows = [_row("full", 0, 0.8), _row("lora", 0, 0.82)]
    with pytest.raises(ConfigError, match=r"baseline 'ful' is not one of.*Did you mean 'full'"):
        compare_to_baseline(rows, "test_acc", "ful")
    with pytest.raises(DataError, match=r"two runs with seed=0"):
        compare_to_baseline([*rows, _row("lora", "0", 0.9)], "test_acc", "full")
    with pytest.raises(DataError, match=r"row 1 has no 'seed'"):
        compare_to_baseline([rows[0], {"strategy": "lora", "test_acc": 0.9}], "test_acc", "full")
