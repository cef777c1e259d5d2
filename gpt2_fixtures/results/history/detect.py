"""Change points in one benchmark's series: ruptures proposes, the gate decides.

PELT (ruptures, l2 cost) on the per-commit values proposes where the level moves; then each
boundary is judged by the gate itself (gate.compare) on the rounds pooled on both sides, exactly
as `gpt2-bench ab` pools its runs: effect beyond the threshold, one-sided significance, the
control ratio's confirmation and the machine-speed check. A boundary the gate does not call a
regression or an improvement is removed and its neighbours merge, until every boundary left is
one the gate would also judge. docs/history.md explains the choices.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gpt2_fixtures.results import files, gate, pooling
from gpt2_fixtures.results.history.series import DeviceGroup, Point, entries_at
from gpt2_fixtures.results.metrics import METRICS, TIME, TIME_RATIO, Metric

CONFIRMED = (gate.REGRESSION, gate.IMPROVED)
BOOTSTRAP_RESAMPLES = 1000


@dataclass
class Series:
    """One benchmark and metric on one device: the points that recorded it, oldest first."""

    group: DeviceGroup
    fullname: str
    name: str
    model: str
    metric: Metric
    points: list[Point]
    entries: list[list[Mapping[str, Any]]]  # per point: that benchmark's entries
    values: np.ndarray  # per point: median round (s), median ratio, or the extra_info mean
    _pooled: dict[tuple[int, int], dict[str, Any] | None] = field(default_factory=dict)

    def pooled(self, lo: int, hi: int) -> dict[str, Any] | None:
        """The points lo..hi-1 as one result document (pooling.pool_results), or None."""
        if (lo, hi) not in self._pooled:
            docs = [
                {"machine_info": p.docs[0].get("machine_info") or {}, "benchmarks": [e]}
                for p, es in zip(self.points[lo:hi], self.entries[lo:hi], strict=True)
                for e in es
            ]
            try:
                self._pooled[lo, hi] = pooling.pool_results(docs, "history segment")
            except files.UnusableInput:
                self._pooled[lo, hi] = None
        return self._pooled[lo, hi]


@dataclass(frozen=True)
class Judgment:
    lo: int
    k: int  # first point of the right side
    hi: int
    row: gate.Row | None

    @property
    def confirmed(self) -> bool:
        return self.row is not None and self.row.verdict in CONFIRMED

    @property
    def strength(self) -> float:
        return abs(self.row.change) if self.row and self.row.change is not None else 0.0


@dataclass(frozen=True)
class ChangePoint:
    device: str
    benchmark: str
    fullname: str
    model: str
    metric: str
    unit: str
    last_good: str  # full SHA (or run date) of the last point at the old level
    first_bad: str  # ... and of the first at the new level (for an improvement: the better one)
    last_good_label: str
    first_bad_label: str
    when: str  # ISO time of first_bad
    before: float | None
    after: float | None
    change: float | None
    change_low: float | None
    change_high: float | None
    p_value: float | None
    threshold: str
    direction: str  # "regression" or "improvement"
    kind: str  # "step": the level moved between two commits; "gradual": over several
    still_in_place: bool = False
    index: int = 0  # position of first_bad in the series


# --- building series --------------------------------------------------------------------------


def point_value(metric: Metric, entries: Sequence[Mapping[str, Any]]) -> float | None:
    """The per-commit value PELT looks at: what the gate's row shows for that metric."""
    if metric == TIME:
        rounds = [x for e in entries for x in (gate.round_times(e) or [])]
        return statistics.median(rounds) if rounds else None
    if metric == TIME_RATIO:
        ratios = [r for e in entries for r in (gate.control_ratios(e) or [])]
        return statistics.median(ratios) if len(ratios) else None
    values = [(e.get("extra_info") or {}).get(metric.key) for e in entries]
    numbers = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return statistics.fmean(numbers) if numbers else None


def build_series(group: DeviceGroup, key: tuple[str, str], metric: Metric) -> Series | None:
    points, entries, values = [], [], []
    for point in group.points:
        found = entries_at(point, key)
        value = point_value(metric, found) if found else None
        if value is not None:
            points.append(point)
            entries.append(found)
            values.append(value)
    if metric == TIME_RATIO and points:
        # ratios to different control workloads do not compare: follow the newest one's
        kind = gate.control_kind(entries[-1][0])
        keep = [i for i, es in enumerate(entries) if gate.control_kind(es[0]) == kind]
        points, entries = [points[i] for i in keep], [entries[i] for i in keep]
        values = [values[i] for i in keep]
    if not points:
        return None
    name = str(entries[0][0]["name"])
    return Series(
        group, key[0], name, key[1], metric, points, entries, np.asarray(values, dtype=float)
    )


# --- candidates and confirmation --------------------------------------------------------------


def candidates(values: np.ndarray, min_size: int) -> list[int]:
    """PELT change points (indices of the first point of each new segment), liberally: the
    gate throws out those that are noise. The penalty scales with the noise between neighbouring
    commits (a robust sigma from the median absolute first difference)."""
    n = len(values)
    if n < 2 * min_size:
        return []
    import ruptures as rpt  # only when a series is long enough to split

    scale = float(np.median(np.abs(values))) or 1.0
    x = values / scale
    sigma = 1.4826 * float(np.median(np.abs(np.diff(x)))) / math.sqrt(2)
    pen = max(2 * math.log(n) * sigma**2, 1e-8)
    # KernelCPD with the linear kernel is PELT on the l2 cost, in ruptures' C code: the same
    # change points as rpt.Pelt(model="l2"), about 200x faster on 50 points
    algo = rpt.KernelCPD(kernel="linear", min_size=min_size).fit(x.reshape(-1, 1))
    return [int(b) for b in algo.predict(pen=pen)[:-1]]


def judge_split(series: Series, lo: int, k: int, hi: int, settings: gate.GateSettings) -> Judgment:
    """The gate's row for this metric, points lo..k-1 as the baseline and k..hi-1 as current."""
    return Judgment(lo, k, hi, gate_row(series, (lo, k), (k, hi), settings))


def gate_row(
    series: Series, base: tuple[int, int], current: tuple[int, int], settings: gate.GateSettings
) -> gate.Row | None:
    """gate.compare on two ranges of points, pooled; the row of this series' metric."""
    left, right = series.pooled(*base), series.pooled(*current)
    if left is None or right is None:
        return None
    result = gate.compare(left, right, settings)
    return next((r for r in result.rows if r.metric == series.metric.key), None)


def confirmed_bounds(series: Series, settings: gate.GateSettings, min_size: int) -> list[Judgment]:
    """Drop the weakest unconfirmed boundary and merge its segments until all are confirmed."""
    bounds = candidates(series.values, min_size)
    n = len(series.values)
    cache: dict[tuple[int, int, int], Judgment] = {}
    while bounds:
        edges = [0, *bounds, n]
        judged = []
        for i, k in enumerate(bounds):
            key = (edges[i], k, edges[i + 2])
            if key not in cache:
                cache[key] = judge_split(series, *key, settings)
            judged.append(cache[key])
        weak = [j for j in judged if not j.confirmed]
        if not weak:
            return judged
        bounds.remove(min(weak, key=lambda j: j.strength).k)
    return []


# --- reporting one series ---------------------------------------------------------------------


def analyse(series: Series, settings: gate.GateSettings, min_size: int) -> list[ChangePoint]:
    """Confirmed change points, oldest first; the newest regression is marked still_in_place
    when the newest segment is still a regression against the level before it."""
    judged = confirmed_bounds(series, settings, min_size)
    changes = [_change_point(series, j, settings, min_size) for j in judged]
    regressions = [i for i, c in enumerate(changes) if c.direction == "regression"]
    if not regressions:
        return changes
    last = regressions[-1]
    j = judged[last]
    n = len(series.values)
    if j.hi == n:
        in_place = True
    else:  # later changes: is the newest level still worse than the one before the regression?
        row = gate_row(series, (j.lo, j.k), (judged[-1].k, n), settings)
        in_place = row is not None and row.verdict == gate.REGRESSION
    changes[last] = replace(changes[last], still_in_place=in_place)
    return changes


def _change_point(
    series: Series, j: Judgment, settings: gate.GateSettings, min_size: int
) -> ChangePoint:
    row = j.row
    assert row is not None  # confirmed judgments carry a row
    before, after = series.points[j.k - 1], series.points[j.k]
    low, high = _interval(series, j, row)
    return ChangePoint(
        device=series.group.label,
        benchmark=series.name,
        fullname=series.fullname,
        model=series.model,
        metric=row.metric,
        unit=row.unit,
        last_good=before.commit or before.label,
        first_bad=after.commit or after.label,
        last_good_label=before.label,
        first_bad_label=after.label,
        when=after.when.isoformat(),
        before=row.baseline,
        after=row.current,
        change=row.change,
        change_low=low,
        change_high=high,
        p_value=row.p_value,
        threshold=row.threshold,
        direction="regression" if row.verdict == gate.REGRESSION else "improvement",
        kind=_kind(series, j, settings, min_size),
        index=j.k,
    )


def _kind(series: Series, j: Judgment, settings: gate.GateSettings, min_size: int) -> str:
    """A step when the gate already judges the change between the min_size commits on either
    side of the boundary alone; otherwise the level crept there over several commits."""
    near = gate_row(
        series, (max(j.lo, j.k - min_size), j.k), (j.k, min(j.hi, j.k + min_size)), settings
    )
    same = near is not None and j.row is not None and near.verdict == j.row.verdict
    return "step" if same else "gradual"


def _interval(series: Series, j: Judgment, row: gate.Row) -> tuple[float | None, float | None]:
    """The gate's own interval when its rows carry one; else a 95% percentile bootstrap of the
    change: over the pooled rounds for time metrics (median), over the per-commit values for
    the others (mean), with a fixed seed so a report is reproducible."""
    low, high = getattr(row, "change_low", None), getattr(row, "change_high", None)
    if low is not None and high is not None:
        return low, high
    left, right = _samples(series, j.lo, j.k), _samples(series, j.k, j.hi)
    if len(left) < 2 or len(right) < 2:
        return None, None
    stat = np.median if series.metric in (TIME, TIME_RATIO) else np.mean
    rng = np.random.default_rng(0)
    b = stat(rng.choice(left, (BOOTSTRAP_RESAMPLES, len(left))), axis=1)
    c = stat(rng.choice(right, (BOOTSTRAP_RESAMPLES, len(right))), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = c / b - 1
    ratios = ratios[np.isfinite(ratios)]
    if not len(ratios):
        return None, None
    return float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))


def _samples(series: Series, lo: int, hi: int) -> np.ndarray:
    chunks: list[float] = []
    for entries in series.entries[lo:hi]:
        if series.metric == TIME:
            chunks.extend(x for e in entries for x in (gate.round_times(e) or []))
        elif series.metric == TIME_RATIO:
            chunks.extend(x for e in entries for x in (gate.control_ratios(e) or []))
        else:
            value = point_value(series.metric, entries)
            chunks.extend([] if value is None else [value])
    return np.asarray(chunks, dtype=float)


def metric_named(key: str) -> Metric:
    """The registry's metric (ValueError naming the known ones)."""
    if key not in METRICS:
        raise ValueError(f"unknown metric {key!r}; known: {', '.join(METRICS)}")
    return METRICS[key]
