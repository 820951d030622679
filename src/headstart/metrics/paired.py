"""Paired statistics on per-seed numbers: is strategy A really better than strategy B?

``headstart compare`` trains every strategy with the same seeds on the same splits, so run ``i`` of A and
run ``i`` of B share their data order and initialisation noise. Pairing them by seed removes that shared
noise: a paired test on a handful of seeds can see a difference that an unpaired one cannot. The tests
here are computed in plain numpy (plus ``scipy.special`` for the t and normal tails) and match
``scipy.stats.ttest_rel`` and ``scipy.stats.wilcoxon`` with default arguments, without their warnings on
the degenerate cases a 3-seed grid hits all the time (one pair, identical differences, all ties).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import product
from typing import Any

import numpy as np
from scipy.special import ndtr, stdtr

from headstart.errors import ConfigError, DataError, did_you_mean, format_choices

__all__ = [
    "cohens_dz",
    "compare_to_baseline",
    "mean_std",
    "paired_ttest",
    "wilcoxon_signed_rank",
]

EXACT_MAX_N = 50
"""Untied samples up to this size get the exact Wilcoxon null distribution (scipy's ``method='auto'``)."""

ENUMERATE_MAX_N = 13
"""Tied (or zero-holding) samples up to this size get every sign assignment enumerated, as scipy does."""

_REL_TOL = 1e-12
"""Differences that agree to this relative precision are 'all equal' (0.8-0.7 vs 0.7-0.6 is rounding)."""


# ----------------------------------------------------------------------------------------------------
# input checks


def _as_vector(name: str, values: Any) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a sequence of numbers (one per seed), got {values!r}.") from None
    if arr.ndim != 1:
        raise DataError(f"{name} must be a 1-D sequence of numbers (one per seed), got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise DataError(
            f"{name} holds NaN or inf ({arr.tolist()}): drop the seeds without a value from both sides "
            f"before pairing (compare_to_baseline does this for you)."
        )
    return arr


def _differences(a: Any, b: Any) -> tuple[np.ndarray, float]:
    """``a - b`` after checking both are finite 1-D vectors of the same length, and the inputs' scale."""
    x, y = _as_vector("a", a), _as_vector("b", b)
    if x.shape != y.shape:
        raise DataError(
            f"paired test: a has {x.size} value(s) but b has {y.size}; a paired test needs one value per "
            f"seed on both sides, in the same seed order. Keep only the seeds both strategies finished."
        )
    scale = float(max(np.max(np.abs(x), initial=0.0), np.max(np.abs(y), initial=0.0)))
    return x - y, scale


def _constant(d: np.ndarray, scale: float) -> bool:
    """True when all differences are equal up to float rounding of inputs of size ``scale``."""
    return d.size > 0 and float(np.ptp(d)) <= _REL_TOL * max(scale, 1e-300)


# ----------------------------------------------------------------------------------------------------
# tests and effect sizes


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1) of per-seed numbers: the spread a new seed would show.

    A single value has std 0.0 (not NaN, so a one-seed table still prints); no value gives (nan, nan).
    """
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    if arr.size == 1:
        return float(arr[0]), 0.0
    return float(arr.mean()), float(arr.std(ddof=1))


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Two-sided paired t-test of ``a`` vs ``b`` (same seeds, same order); matches ``scipy.stats.ttest_rel``.

    Returns ``n``, ``mean_diff`` (mean of a - b), ``sd_diff`` (ddof=1), ``t``, ``df`` and ``p``. Fewer than
    two pairs cannot be tested (t and p are NaN). When every difference is the same (a common sight with
    accuracy on a small test set) the variance is zero: p is 1.0 if that difference is 0, else 0.0, and t
    is 0 or ±inf, with no warning.
    """
    d, scale = _differences(a, b)
    n = int(d.size)
    mean = float(d.mean()) if n else math.nan
    out: dict[str, float] = {"n": n, "mean_diff": mean, "sd_diff": math.nan, "t": math.nan,
                             "df": max(n - 1, 0), "p": math.nan}
    if n < 2:
        return out
    if _constant(d, scale):
        out["sd_diff"] = 0.0
        zero = abs(mean) <= _REL_TOL * max(scale, 1e-300)
        out["t"] = 0.0 if zero else math.copysign(math.inf, mean)
        out["p"] = 1.0 if zero else 0.0
        return out
    sd = float(d.std(ddof=1))
    t = mean / (sd / math.sqrt(n))
    out.update(sd_diff=sd, t=t, p=float(min(1.0, 2.0 * stdtr(n - 1, -abs(t)))))
    return out


def cohens_dz(a: Sequence[float], b: Sequence[float]) -> float:
    """Cohen's d_z = mean(a - b) / sd(a - b): the paired effect size, in units of the seed-to-seed spread.

    NaN for fewer than two pairs; ±inf (or 0.0) when every difference is the same.
    """
    d, scale = _differences(a, b)
    if d.size < 2:
        return math.nan
    mean = float(d.mean())
    if _constant(d, scale):
        return 0.0 if abs(mean) <= _REL_TOL * max(scale, 1e-300) else math.copysign(math.inf, mean)
    return mean / float(d.std(ddof=1))


def _subset_sum_counts(m: int) -> np.ndarray:
    """counts[k] = number of subsets of {1..m} summing to k: the exact null of W+ times 2**m."""
    counts = np.zeros(m * (m + 1) // 2 + 1, dtype=np.int64)
    counts[0] = 1
    for r in range(1, m + 1):
        counts[r:] = counts[r:] + counts[:-r]
    return counts


def _average_ranks(values: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Ranks 1..n of ``values``, values within ``tol`` of a group's smallest sharing its average rank.

    Also returns the tie-group sizes. The tolerance matters: accuracies are multiples of 1/N, and
    0.86 - 0.85 and 0.85 - 0.84 are the same 1-example gain but differ in the last float bits.
    """
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks = np.empty(values.size, dtype=np.float64)
    sizes: list[int] = []
    start = 0
    while start < values.size:
        stop = start + 1
        while stop < values.size and sorted_vals[stop] - sorted_vals[start] <= tol:
            stop += 1
        ranks[order[start:stop]] = (start + 1 + stop) / 2.0
        sizes.append(stop - start)
        start = stop
    return ranks, np.asarray(sizes, dtype=np.float64)


def wilcoxon_signed_rank(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of ``a`` vs ``b``; matches ``scipy.stats.wilcoxon(a, b)``.

    It asks the same question as the t-test without assuming normal differences, which a few seeds cannot
    check. Zero differences are dropped (scipy's default ``zero_method='wilcox'``). Differences equal up to
    float rounding (1e-12 relative) count as ties or zeros, where scipy would see distinct values; exact
    ties and untied data give scipy's numbers. The p-value follows
    scipy's default ``method='auto'``: exact null distribution for up to 50 pairs without ties or zeros;
    with ties or zeros, every sign assignment enumerated for up to 13 pairs, else the normal
    approximation with tie correction (no continuity correction); always the normal approximation above
    50 pairs. Note that n pairs cannot reach p below 2 / 2**n: 5 seeds never give p < 0.05.

    Returns ``n`` (pairs), ``n_nonzero``, ``statistic`` (min of W+ and W-), ``p`` and ``method`` (one of
    "exact", "enumerated", "normal", or "none" for no pairs).
    """
    d, scale = _differences(a, b)
    n = int(d.size)
    if n == 0:
        return {"n": 0, "n_nonzero": 0, "statistic": math.nan, "p": math.nan, "method": "none"}
    tol = _REL_TOL * scale
    nonzero = d[np.abs(d) > tol]
    m = int(nonzero.size)
    if m == 0:  # no difference at all: nothing speaks against the null
        return {"n": n, "n_nonzero": 0, "statistic": 0.0, "p": 1.0, "method": "exact"}
    ranks, tie_sizes = _average_ranks(np.abs(nonzero), tol)
    ties = bool(np.any(tie_sizes > 1))
    w_plus = float(ranks[nonzero > 0].sum())
    w_minus = float(ranks[nonzero < 0].sum())
    statistic = min(w_plus, w_minus)

    if n <= EXACT_MAX_N and not ties and m == n:
        counts = _subset_sum_counts(m)
        k = round(w_plus)
        cdf = float(counts[: k + 1].sum())
        sf = float(counts[k:].sum())
        p = min(1.0, 2.0 * min(cdf, sf) / 2.0**m)
        method = "exact"
    elif n <= ENUMERATE_MAX_N:
        signs = np.array(list(product((0.0, 1.0), repeat=m)))  # 2**m x m, every sign assignment
        null = signs @ ranks
        tol = 1e-9 * max(w_plus, 1.0)
        less = float(np.count_nonzero(null <= w_plus + tol))
        greater = float(np.count_nonzero(null >= w_plus - tol))
        p = min(1.0, 2.0 * min(less, greater) / null.size)
        method = "enumerated"
    else:
        tie_term = float(np.sum(tie_sizes**3 - tie_sizes))
        se = math.sqrt((m * (m + 1) * (2 * m + 1) - tie_term / 2.0) / 24.0)
        z = (w_plus - m * (m + 1) / 4.0) / se
        p = min(1.0, 2.0 * float(ndtr(-abs(z))))
        method = "normal"
    return {"n": n, "n_nonzero": m, "statistic": statistic, "p": p, "method": method}


# ----------------------------------------------------------------------------------------------------
# grid comparison


def _number(value: Any) -> float:
    """A metric value from a dict or a CSV cell as float; NaN for missing, empty or non-numeric."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return math.nan


def _seed_key(value: Any) -> Hashable:
    """Seeds from a CSV ('3', '3.0') and from Python (3) pair up: integral values become int."""
    number = _number(value)
    if math.isfinite(number) and number == int(number):
        return int(number)
    return str(value).strip()


def _sorted_seeds(seeds: Iterable[Hashable]) -> list[Hashable]:
    return sorted(seeds, key=lambda s: (0, s, "") if isinstance(s, int) else (1, 0, str(s)))


def _required(row: Mapping[str, Any], key: str, index: int) -> Any:
    if key not in row or row[key] is None or str(row[key]).strip() == "":
        raise DataError(
            f"compare_to_baseline: row {index} has no {key!r} (keys: {format_choices(sorted(row))}); every "
            f"run needs its {key!r} to be paired. Fill it in or drop the row."
        )
    return row[key]


def compare_to_baseline(
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    baseline: str,
    group_key: str = "strategy",
    pair_key: str = "seed",
) -> list[dict[str, Any]]:
    """Per group: mean ± std of ``metric`` and paired tests against ``baseline`` on the seeds both ran.

    ``rows`` are one dict per run (a results.csv read as dicts is fine: numbers may be strings). Rows
    whose metric is missing, None or NaN are ignored, and only seeds present in both the group and the
    baseline are paired. Groups keep their first-seen order; the baseline gets a row too, with the paired
    fields set to None. ``mean``, ``std`` and ``n_runs`` cover all of a group's runs; ``baseline_mean``,
    ``mean_diff``, ``t``, ``p_t`` (paired t-test), ``p_wilcoxon``, ``dz`` (Cohen's d_z) and ``seeds``
    cover the paired seeds only, so ``mean - baseline_mean`` equals ``mean_diff`` when every seed paired.
    """
    values: dict[str, dict[Hashable, float]] = {}
    for i, row in enumerate(rows):
        group = str(_required(row, group_key, i))
        per_seed = values.setdefault(group, {})
        value = _number(row.get(metric))
        if not math.isfinite(value):
            continue
        seed = _seed_key(_required(row, pair_key, i))
        if seed in per_seed:
            raise DataError(
                f"compare_to_baseline: {group_key} {group!r} has two runs with {pair_key}={seed!r} and a "
                f"{metric!r} value; pairing needs one run per {pair_key}. Drop the duplicate (e.g. an "
                f"earlier attempt of the same run) before comparing."
            )
        per_seed[seed] = value
    if baseline not in values:
        raise ConfigError(
            f"compare_to_baseline: baseline {baseline!r} is not one of the {group_key} values in the runs "
            f"({format_choices(values)}).{did_you_mean(baseline, values)} Pass one of them as baseline."
        )

    base = values[baseline]
    out: list[dict[str, Any]] = []
    for group, per_seed in values.items():
        mean, std = mean_std(per_seed.values())
        entry: dict[str, Any] = {"group": group, "is_baseline": group == baseline, "n_runs": len(per_seed),
                                 "mean": mean, "std": std}
        if group == baseline:
            entry.update(n_pairs=None, baseline_mean=None, mean_diff=None, t=None, p_t=None,
                         p_wilcoxon=None, dz=None, seeds=_sorted_seeds(per_seed))
            out.append(entry)
            continue
        seeds = _sorted_seeds(set(per_seed) & set(base))
        a = [per_seed[s] for s in seeds]
        b = [base[s] for s in seeds]
        ttest = paired_ttest(a, b)
        entry.update(
            n_pairs=len(seeds),
            baseline_mean=mean_std(b)[0],
            mean_diff=ttest["mean_diff"],
            t=ttest["t"],
            p_t=ttest["p"],
            p_wilcoxon=wilcoxon_signed_rank(a, b)["p"],
            dz=cohens_dz(a, b),
            seeds=seeds,
        )
        out.append(entry)
    return out
