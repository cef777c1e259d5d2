"""The gate's statistics: one-sided tests over rounds or means, what a test can reach, and the
confidence interval of a change. scipy is imported only when a test runs."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Iterable, Sequence

from gpt2_fixtures.results.gate.model import IMPROVED, PASS, REGRESSION, Threshold
from gpt2_fixtures.results.metrics import Metric

# Below this many rounds per side no rank or t-test is run: one or two rounds never decide.
MIN_ROUNDS = 3
Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def one_sided_rounds_p(current: Sequence[float], base: Sequence[float]) -> float | None:
    """Mann-Whitney U (scipy) in the direction of the observed shift of the medians."""
    if len(current) < 2 or len(base) < 2:
        return None
    from scipy.stats import mannwhitneyu  # heavy import, only when a test runs

    shift = statistics.median(current) - statistics.median(base)
    if shift == 0:
        return 1.0
    alternative = "greater" if shift > 0 else "less"
    return float(mannwhitneyu(current, base, alternative=alternative).pvalue)


def min_rounds_p(n1: int, n2: int) -> float:
    """The smallest one-sided p-value Mann-Whitney can give for n1 and n2 rounds (complete
    separation): 1 / C(n1 + n2, n1). When it is not below alpha the test cannot fail anything
    (asv checks the same before it trusts the test). 0.0 where it is below any float (pooled
    histories hold hundreds of rounds: 1 / C(1200, 600) overflows a float division)."""
    ways = math.comb(n1 + n2, n1)
    return 1.0 / ways if ways < 1e300 else 0.0


def log_welch_p(current: Sequence[float], base: Sequence[float]) -> float | None:
    """Welch's t-test on log values, one-sided in the observed direction: the fallback where
    too few rounds leave Mann-Whitney unable to reach alpha. Logs make a multiplicative
    slowdown additive and round times' right skew closer to normal."""
    if len(current) < MIN_ROUNDS or len(base) < MIN_ROUNDS:
        return None
    lc, lb = [math.log(x) for x in current], [math.log(x) for x in base]
    return one_sided_mean_p(
        (statistics.fmean(lc), statistics.stdev(lc), len(lc)),
        (statistics.fmean(lb), statistics.stdev(lb), len(lb)),
    )


def one_sided_mean_p(
    current: tuple[float, float, int], base: tuple[float, float, int]
) -> float | None:
    """Welch's t-test (scipy) from (mean, std, n) of each side, in the observed direction."""
    (m1, s1, n1), (m2, s2, n2) = current, base
    if n1 < 2 or n2 < 2:
        return None
    if m1 == m2:
        return 1.0
    if s1 == 0 and s2 == 0:
        return 0.0  # no spread at all: the difference is certain
    from scipy.stats import ttest_ind_from_stats

    alternative = "greater" if m1 > m2 else "less"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = ttest_ind_from_stats(m1, s1, n1, m2, s2, n2, equal_var=False, alternative=alternative)
    p = float(res.pvalue)
    return None if math.isnan(p) else p


def rounds_change_ci(
    current: Sequence[float], base: Sequence[float]
) -> tuple[float | None, float | None]:
    """95% interval of the relative change: the distribution-free interval of the shift of
    log values that goes with the Mann-Whitney test (Hodges-Lehmann, normal approximation of
    the rank index), turned back into a fraction."""
    n1, n2 = len(current), len(base)
    if n1 < MIN_ROUNDS or n2 < MIN_ROUNDS:
        return None, None
    lb = [math.log(x) for x in base]
    diffs = sorted(math.log(c) - b for c in current for b in lb)
    half = Z_95 * math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    k = max(0, math.floor(n1 * n2 / 2 - half))
    if k >= len(diffs) // 2:
        return None, None
    return math.expm1(diffs[k]), math.expm1(diffs[-k - 1])


def mean_change_ci(
    current: tuple[float, float, int], base: tuple[float, float, int]
) -> tuple[float | None, float | None]:
    """95% interval of (current - base) / base from two means, their stds and counts."""
    (m1, s1, n1), (m2, s2, n2) = current, base
    if n1 < 2 or n2 < 2 or not m2:
        return None, None
    half = Z_95 * math.sqrt(s1 * s1 / n1 + s2 * s2 / n2)
    return (m1 - m2 - half) / abs(m2), (m1 - m2 + half) / abs(m2)


def holm_levels(
    tests: Iterable[tuple[str, str, float | None]], alpha: float, m: int
) -> dict[tuple[str, str], float]:
    """Holm's step-down (Holm 1979, "A simple sequentially rejective multiple test procedure"),
    per metric over ``m`` benchmarks: the k-th smallest p-value (k from 0) is tested at
    alpha / (m - k) as long as every smaller one was rejected. Returns the level of each
    (benchmark, metric) test it rejects; the others stay at Bonferroni's alpha / m, which they
    do not pass either. The family-wise error rate stays at most alpha, as with Bonferroni."""
    by_metric: dict[str, list[tuple[float, str]]] = {}
    for name, metric, p in tests:
        if p is not None:
            by_metric.setdefault(metric, []).append((p, name))
    levels: dict[tuple[str, str], float] = {}
    for metric, ps in by_metric.items():
        size = max(m, len(ps))
        for k, (p, name) in enumerate(sorted(ps)):
            level = alpha / (size - k)
            if not p < level:
                break
            levels[(name, metric)] = level
    return levels


def judge(
    metric: Metric,
    base: float,
    current: float,
    p_value: float | None,
    threshold: Threshold,
    alpha: float,
) -> tuple[float, str]:
    """Return (change, verdict) for one metric; verdict is REGRESSION, improved or pass.

    ``p_value`` None means the metric has no test (memory): the effect alone decides.
    """
    diff = current - base
    change = diff / abs(base) if base else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    beyond = abs(change) > threshold.rel and abs(diff) > threshold.floor
    significant = p_value is None or p_value < alpha
    if not (beyond and significant):
        return change, PASS
    worse = diff > 0 if metric.higher_is_worse else diff < 0
    return change, REGRESSION if worse else IMPROVED
