"""Benchmark entries as rows (:class:`CaseResult`), and the arithmetic on them with its noise.

Every speedup and every change against a baseline comes with a 95% interval: from the per-round
samples (``stats.data``) when the file has them (Hodges-Lehmann / Mann-Whitney interval of the
ratio of round times), else from mean, std and rounds (normal approximation on the log ratio).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpt2_fixtures.config import PHASE_TABLE, PHASES
from gpt2_fixtures.results.gate.stats import Z_95, mean_change_ci, rounds_change, rounds_change_ci

REFERENCE_OPTIMIZATION = "eager-fp32"

# Benchmark function name -> phase, for result files whose extra_info lacks "phase".
_PHASE_BY_FUNCTION = {p.benchmark: p.name for p in PHASE_TABLE}
# The id part of a benchmark name: "<optimization>-b<batch>-s<seq_len>[-<extra>...]".
_CASE_ID = re.compile(r"^(?P<opt>.+?)-b(?P<batch>\d+)-s(?P<seq>\d+)(?:-(?P<variant>.*))?$")


# --------------------------------------------------------------------------------------------
# Rows


@dataclass(frozen=True)
class CaseResult:
    """One benchmark entry reduced to what the tables and plots need."""

    name: str
    key: str  # matches a case across result files (pytest-benchmark's fullname)
    phase: str
    optimization: str
    model: str | None
    device: str | None
    batch_size: int | None
    seq_len: int | None
    median_s: float
    stddev_s: float
    rounds: int
    extra: Mapping[str, Any] = field(default_factory=dict)
    # What else the id names besides optimization and shape, e.g. "n32" (generate: 32 new tokens) or
    # "ddp w2" (distributed: strategy and world size). Part of the shape key.
    variant: str = ""
    mean_s: float | None = None
    round_s: tuple[float, ...] = ()  # per-round times, when the file kept them

    def metric(self, key: str) -> float | None:
        """A numeric ``extra_info`` value, or None when absent, null or not a finite number."""
        return finite(self.extra.get(key))

    @property
    def median_ms(self) -> float:
        return self.median_s * 1e3

    @property
    def cv(self) -> float | None:
        """Coefficient of variation of the round times (std / mean)."""
        mean = self.mean_s or self.median_s
        return self.stddev_s / mean if mean > 0 and self.rounds > 1 else None

    @property
    def shape_key(self) -> tuple[Any, ...]:
        """Cases that share this key differ only in the optimization."""
        return (self.phase, self.model, self.device, self.batch_size, self.seq_len, self.variant)

    @property
    def series(self) -> str:
        """A line, bar colour or heatmap panel in the plots: the optimization and its variant."""
        return f"{self.optimization} {self.variant}" if self.variant else self.optimization


def finite(value: Any) -> float | None:
    """The one finite-number check of the report: bools and NaN/inf are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _split_name(name: str) -> tuple[str, str]:
    function, _, param = name.partition("[")
    return function, param.rstrip("]")


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def case_from_benchmark(bench: Mapping[str, Any]) -> CaseResult:
    """Build a row from one ``benchmarks[]`` entry; ids fill in what ``extra_info`` lacks."""
    name = str(bench["name"])
    extra = dict(bench.get("extra_info") or {})
    stats = bench["stats"]
    function, param = _split_name(name)
    parsed = _CASE_ID.match(param)
    batch = _int_or_none(extra.get("batch_size"))
    seq = _int_or_none(extra.get("seq_len"))
    optimization = str(
        extra.get("optimization") or (parsed.group("opt") if parsed else param or name)
    )
    data = tuple(x for v in stats.get("data") or () if (x := finite(v)) is not None)
    return CaseResult(
        name=name,
        key=str(bench.get("fullname") or name),
        phase=str(extra.get("phase") or _PHASE_BY_FUNCTION.get(function, function)),
        optimization=optimization,
        model=extra.get("model"),
        device=extra.get("device"),
        batch_size=batch if batch is not None or not parsed else int(parsed.group("batch")),
        seq_len=seq if seq is not None or not parsed else int(parsed.group("seq")),
        median_s=float(stats["median"]),
        stddev_s=float(stats.get("stddev") or 0.0),
        rounds=int(stats.get("rounds") or len(data)),
        extra=extra,
        variant=_variant(parsed, optimization),
        mean_s=finite(stats.get("mean")),
        round_s=data,
    )


def _variant(parsed: re.Match[str] | None, optimization: str) -> str:
    """The id's words before the optimization (a strategy) and after the shape (``n32``, ``w2``)."""
    if parsed is None:
        return ""
    head = parsed.group("opt")
    prefix = head[: -len(optimization)].rstrip("-") if head.endswith(optimization) else ""
    return " ".join(filter(None, [prefix, parsed.group("variant") or ""]))


def cases_from_benchmarks(benchmarks: Iterable[Mapping[str, Any]]) -> list[CaseResult]:
    return [case_from_benchmark(b) for b in benchmarks]


def phases_in(cases: Iterable[CaseResult]) -> list[str]:
    found = dict.fromkeys(c.phase for c in cases)
    return [p for p in PHASES if p in found] + sorted(p for p in found if p not in PHASES)


# --------------------------------------------------------------------------------------------
# Arithmetic


@dataclass(frozen=True)
class Ratio:
    """A ratio (speedup, or 1 + a relative change) and its 95% interval when one is known."""

    value: float
    low: float | None = None
    high: float | None = None

    @property
    def known(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def significant(self) -> bool | None:
        """True when the interval excludes 1 (no change); None when there is no interval."""
        if self.low is None or self.high is None:
            return None
        return not self.low <= 1.0 <= self.high


def speedup(reference_median: float | None, median: float | None) -> float | None:
    """How many times faster than the reference: reference time / this time (>1 is faster)."""
    if reference_median is None or median is None or reference_median <= 0 or median <= 0:
        return None
    return reference_median / median


def relative_change(new: float | None, old: float | None) -> float | None:
    """(new - old) / old: +0.05 is 5% more than the baseline; None when not comparable."""
    if new is None or old is None or old == 0:
        return None
    return (new - old) / old


def rounds_interval(num: Sequence[float], den: Sequence[float]) -> tuple[float, float] | None:
    """95% interval of the ratio num/den of two sets of positive round times: the gate's own
    interval of the change (``stats.rounds_change_ci``), so the report and the verdict never
    disagree. None with too few rounds for any interval."""
    low, high = rounds_change_ci([x for x in num if x > 0], [x for x in den if x > 0])
    return None if low is None or high is None else (1 + low, 1 + high)


def _normal_log_interval(
    value: float, parts: Sequence[tuple[float | None, float, int]]
) -> tuple[float, float] | None:
    """Interval of a ratio of two means from (mean, std, n) each: delta method on the log."""
    var = 0.0
    for mean, std, n in parts:
        if mean is None or mean <= 0 or n < 2:
            return None
        var += (std / mean) ** 2 / n
    half = Z_95 * math.sqrt(var)
    return value * math.exp(-half), value * math.exp(half)


def time_ratio(num: CaseResult, den: CaseResult) -> Ratio | None:
    """num's time over den's: with rounds on both sides the estimate that goes with its interval
    (Hodges-Lehmann), else the ratio of medians with a normal interval."""
    value = speedup(num.median_s, den.median_s)
    if value is None:
        return None
    interval = rounds_interval(num.round_s, den.round_s)
    if interval is not None:  # the estimate that goes with the interval, as the gate shows it
        value = 1 + rounds_change(num.round_s, den.round_s)
    else:
        parts = [(c.mean_s, c.stddev_s, c.rounds) for c in (num, den)]
        interval = _normal_log_interval(value, parts)
    return Ratio(value, *interval) if interval else Ratio(value)


def metric_ratio(new: CaseResult, old: CaseResult, key: str, std_key: str) -> Ratio | None:
    """new/old of one extra_info metric; the interval needs both std values (Welch, normal)."""
    a, b = new.metric(key), old.metric(key)
    if a is None or b is None or b <= 0 or a < 0:
        return None
    sa, sb = new.metric(std_key), old.metric(std_key)
    if sa is None or sb is None:
        return Ratio(a / b)
    low, high = mean_change_ci((a, sa, new.rounds), (b, sb, old.rounds))
    if low is None or high is None:
        return Ratio(a / b)
    return Ratio(a / b, 1 + low, 1 + high)


def reference_cases(
    cases: Sequence[CaseResult], reference: str = REFERENCE_OPTIMIZATION
) -> dict[tuple[Any, ...], CaseResult]:
    return {c.shape_key: c for c in cases if c.optimization == reference}


def speedup_ratios(
    cases: Sequence[CaseResult], reference: str = REFERENCE_OPTIMIZATION
) -> dict[str, Ratio | None]:
    """Speedup (with interval) of every case against the reference optimization, same shape."""
    refs = reference_cases(cases, reference)
    out: dict[str, Ratio | None] = {}
    for c in cases:
        ref = refs.get(c.shape_key)
        out[c.key] = None if ref is None else time_ratio(ref, c)
    return out


def speedups(
    cases: Sequence[CaseResult], reference: str = REFERENCE_OPTIMIZATION
) -> dict[str, float | None]:
    """Speedup of every case against the reference optimization: same phase, model, shape."""
    return {k: r.value if r else None for k, r in speedup_ratios(cases, reference).items()}


def noisy_cases(cases: Sequence[CaseResult], limit: float) -> list[CaseResult]:
    """Cases whose round times vary by more than ``limit`` (CV), the noisiest first."""
    noisy = [c for c in cases if (c.cv or 0.0) > limit]
    return sorted(noisy, key=lambda c: -(c.cv or 0.0))
