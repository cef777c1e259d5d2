"""The gate's statistics: one-sided tests over rounds or means, what a test can reach, the
confidence interval of a change, Holm's step-down, and the one decision rule. The report shows
the same interval (rounds_change_ci). scipy is imported only when a test runs."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

from gpt2_fixtures.results.gate.verdicts import IMPROVED, INCONCLUSIVE, PASS, REGRESSION, Threshold
from gpt2_fixtures.results.metrics import Metric

K = TypeVar("K", bound=Hashable)

# Below this many rounds per side no rank or t-test is run: one or two rounds never decide.
MIN_ROUNDS = 3
Z_95 = 1.959963984540054  # two-sided 95% normal quantile


Alternative = Literal["greater", "less"]


def one_sided_rounds_p(
    current: Sequence[float], base: Sequence[float], alternative: Alternative
) -> float | None:
    """Mann-Whitney U (scipy): p of "current is ``alternative`` than base"."""
    if len(current) < 2 or len(base) < 2:
        return None
    from scipy.stats import mannwhitneyu  # heavy import, only when a test runs

    return float(mannwhitneyu(current, base, alternative=alternative).pvalue)


def min_rounds_p(n1: int, n2: int) -> float:
    """The smallest one-sided p-value Mann-Whitney can give for n1 and n2 rounds (complete
    separation): 1 / C(n1 + n2, n1). When it is not below alpha the test cannot fail anything
    (asv checks the same before it trusts the test). 0.0 where it is below any float (pooled
    histories hold hundreds of rounds: 1 / C(1200, 600) overflows a float division)."""
    ways = math.comb(n1 + n2, n1)
    return 1.0 / ways if ways < 1e300 else 0.0


def log_welch_p(
    current: Sequence[float], base: Sequence[float], alternative: Alternative
) -> float | None:
    """Welch's t-test on log values: the fallback where too few rounds leave Mann-Whitney unable
    to reach alpha. Logs make a multiplicative slowdown additive and round times' right skew
    closer to normal."""
    if len(current) < MIN_ROUNDS or len(base) < MIN_ROUNDS:
        return None
    lc, lb = [math.log(x) for x in current], [math.log(x) for x in base]
    return one_sided_mean_p(
        (statistics.fmean(lc), statistics.stdev(lc), len(lc)),
        (statistics.fmean(lb), statistics.stdev(lb), len(lb)),
        alternative,
    )


def one_sided_mean_p(
    current: tuple[float, float, int], base: tuple[float, float, int], alternative: Alternative
) -> float | None:
    """Welch's t-test (scipy) from (mean, std, n) of each side: p of "current is
    ``alternative`` than base"."""
    (m1, s1, n1), (m2, s2, n2) = current, base
    if n1 < 2 or n2 < 2:
        return None
    if s1 == 0 and s2 == 0:  # no spread at all: the difference, or its absence, is certain
        return 0.0 if (m1 > m2 if alternative == "greater" else m1 < m2) else 1.0
    from scipy.stats import ttest_ind_from_stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = ttest_ind_from_stats(m1, s1, n1, m2, s2, n2, equal_var=False, alternative=alternative)
    p = float(res.pvalue)
    return None if math.isnan(p) else p


def _log_shifts(current: Sequence[float], base: Sequence[float]) -> NDArray[np.float64]:
    """Every pairwise difference of log values, sorted: n1 x n2 of them, which a history's
    pooled segments (hundreds of rounds a side) make too many for a Python loop."""
    lc, lb = np.log(np.asarray(current, dtype=float)), np.log(np.asarray(base, dtype=float))
    return np.sort(np.subtract.outer(lc, lb), axis=None)


def rounds_change(current: Sequence[float], base: Sequence[float]) -> float:
    """The relative change that goes with the test and its interval: the Hodges-Lehmann shift
    of log values (the median of all pairwise differences), turned back into a fraction. Unlike
    the ratio of medians it always lies inside rounds_change_ci."""
    return math.expm1(float(np.median(_log_shifts(current, base))))


def rounds_change_ci(
    current: Sequence[float], base: Sequence[float]
) -> tuple[float | None, float | None]:
    """95% interval of the relative change: the distribution-free interval of the shift of
    log values that goes with the Mann-Whitney test (Hodges-Lehmann, normal approximation of
    the rank index), turned back into a fraction."""
    n1, n2 = len(current), len(base)
    if n1 < MIN_ROUNDS or n2 < MIN_ROUNDS:
        return None, None
    diffs = _log_shifts(current, base)
    half = Z_95 * math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    k = max(0, math.floor(n1 * n2 / 2 - half))
    if k >= len(diffs) // 2:
        return None, None
    return math.expm1(float(diffs[k])), math.expm1(float(diffs[-k - 1]))


def mean_change_ci(
    current: tuple[float, float, int], base: tuple[float, float, int]
) -> tuple[float | None, float | None]:
    """95% interval of (current - base) / base from two means, their stds and counts."""
    (m1, s1, n1), (m2, s2, n2) = current, base
    if n1 < 2 or n2 < 2 or not m2:
        return None, None
    half = Z_95 * math.sqrt(s1 * s1 / n1 + s2 * s2 / n2)
    return (m1 - m2 - half) / abs(m2), (m1 - m2 + half) / abs(m2)


def holm_levels(tests: Iterable[tuple[K, float | None]], alpha: float) -> dict[K, float]:
    """Holm's step-down (Holm 1979, "A simple sequentially rejective multiple test procedure")
    over one family, every test of the comparison: the k-th smallest of m p-values (k from 0)
    is tested at alpha / (m - k) as long as every smaller one was rejected. Returns the level of
    each test it rejects; the others are not significant. The chance of any false rejection in
    the family stays at most alpha, as with Bonferroni's alpha / m, and it is never less
    powerful. A test without a p-value counts in m (it was made) and is never rejected."""
    tests = list(tests)
    ps = sorted((p, i) for i, (_, p) in enumerate(tests) if p is not None)
    levels: dict[K, float] = {}
    for k, (p, i) in enumerate(ps):
        level = alpha / (len(tests) - k)
        if not p < level:
            break
        levels[tests[i][0]] = level
    return levels


@dataclass(frozen=True)
class Evidence:
    """What the data say about one row's change: a fraction of the baseline (+0.25 is 25%
    worse for a time, better for a rate), its 95% interval, and one-sided p-values in the
    regression and the improvement direction (None: no test, the change is exact)."""

    change: float
    low: float | None = None
    high: float | None = None
    p_worse: float | None = None
    p_better: float | None = None
    rounds: int = 0  # rounds a side (the smaller), for the estimate of how many would decide
    tested: bool = True  # False: an exact quantity judged by its change alone

    def worse(self, higher_is_worse: bool) -> tuple[float, float | None]:
        """(the change, the interval's bound) on the regression side, as a worsening fraction."""
        if higher_is_worse:
            return self.change, self.high
        return -self.change, None if self.low is None else -self.low


def decide(
    metric: Metric,
    base: float,
    ev: Evidence,
    threshold: Threshold,
    level: float,
    better_level: float,
) -> tuple[str, str]:
    """The one decision rule (docs/gate.md): (verdict, reason).

    REGRESSION: the change is beyond the threshold on the worse side and significant there (and,
    where the threshold carries one, beyond what process noise reaches: ``Threshold.noise``, a
    capped calibrated threshold's or one process a side's; short of it the row is inconclusive);
    improved: the same on the better side (``better_level``: improvements fail nothing, so they
    are held to Bonferroni's level, outside Holm's family);
    pass: the interval's bound on the worse side is within the threshold (non-inferiority);
    otherwise inconclusive, with the reason.
    """
    worse, bound = ev.worse(metric.higher_is_worse)
    scale = abs(base)

    def beyond(x: float) -> bool:
        return x > threshold.rel and x * scale > threshold.floor

    significant = not ev.tested or (ev.p_worse is not None and ev.p_worse < level)
    if beyond(worse) and significant:
        if worse > threshold.noise:
            return REGRESSION, ""
        return INCONCLUSIVE, _within_noise(ev, threshold)
    if not ev.tested:
        return (IMPROVED if beyond(-worse) else PASS), ""
    if beyond(-worse) and ev.p_better is not None and ev.p_better < better_level:
        return IMPROVED, ""
    if bound is not None and not beyond(bound):
        return PASS, ""
    return INCONCLUSIVE, _undecided(ev, worse, bound, threshold, level)


def _within_noise(ev: Evidence, threshold: Threshold) -> str:
    if threshold.noise_why:  # a known reach of process noise, not this benchmark's calibration
        return (
            f"{ev.change:+.1%} is beyond the {threshold.rel:.1%} threshold but within the "
            f"{threshold.noise:.0%} that {threshold.noise_why}: no evidence beyond process noise; "
            "judge it against a calibrated baseline (gpt2-bench baseline with several processes)"
        )
    return (
        f"{ev.change:+.1%} is beyond the {threshold.rel:.1%} threshold (capped) but within the "
        f"{threshold.noise:.0%} that this benchmark's processes spread over: no evidence beyond "
        "process noise; recalibrate on a quiet machine, or judge several processes a side "
        "(gpt2-bench ab --repeats)"
    )


def _undecided(
    ev: Evidence, worse: float, bound: float | None, threshold: Threshold, level: float
) -> str:
    if bound is None:
        return "no interval for the change (no rounds or no std recorded): cannot show it within"
    where = f"the interval reaches {bound:.1%} worse, past the {threshold.rel:.1%} threshold"
    # the interval narrows as 1/sqrt(rounds): the change is decided once the interval's
    # half-width (at the level the decision needs) fits between the change and the threshold
    stretch = 1.0
    if worse > threshold.rel:
        where = f"{ev.change:+.1%} is beyond the {threshold.rel:.1%} threshold but not significant"
        stretch = NormalDist().inv_cdf(1 - min(level, 0.5)) / Z_95 if level > 0 else 1.0
    half = abs(bound - worse) * stretch
    gap = abs(threshold.rel - worse)
    if not ev.rounds or not half or gap < 0.005:
        return f"{where}: at the threshold itself, more rounds will hardly decide"
    needed = math.ceil(ev.rounds * (half / gap) ** 2)
    return f"{where}: about {needed:,} rounds a side would decide"


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median: order statistics k and n + 1 - k, with k
    the largest for which a binomial(n, 1/2) count below k has probability at most
    (1 - level) / 2 (Hollander, Wolfe and Chicken, Nonparametric Statistical Methods, 3.6).
    With too few values for that, the whole range. Used by the measuring tools (the bare-loop
    check, the adaptive-rounds estimate), not by the gate's two-sample verdicts."""
    xs, n = sorted(values), len(values)
    below, k = 0.0, 0
    for j in range(n + 1):
        below += math.comb(n, j) / 2**n
        if below > (1 - level) / 2:
            break
        k = j + 1
    k = max(k, 1)
    return xs[k - 1], xs[n - k]
