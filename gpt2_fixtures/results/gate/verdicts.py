"""The gate's value objects: verdicts, thresholds, settings, rows and the result of a comparison."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from gpt2_fixtures.results.metrics import METRICS, rate_of

TimeBasis = Literal["auto", "raw"]
InconclusivePolicy = Literal["pass", "fail"]

REGRESSION = "REGRESSION"
PASS = "pass"
IMPROVED = "improved"
DRIFT = "drift"
INCONCLUSIVE = "inconclusive"
NA = "n/a"
NEW = "new"
MISSING = "missing"
NOT_SELECTED = "not selected"
# verdicts of rows that were not judged: a comparison holding one is never PASS (exit 3)
UNJUDGED = (INCONCLUSIVE, NA)


@dataclass(frozen=True)
class Threshold:
    """A change is beyond the threshold when |change| > rel AND |current - baseline| > floor."""

    rel: float  # fraction of the baseline: 0.10 is 10%
    floor: float = 0.0  # absolute, in the metric's unit (MB, ms, tok/s, ...)
    why: str = field(default="", compare=False)  # where a calibrated value came from
    # A capped threshold's uncapped value: how far process noise alone reaches on this
    # benchmark. A change between the threshold and it is no evidence of a regression
    # (stats.decide); 0: the threshold itself covers the noise.
    noise: float = field(default=0.0, compare=False)
    # where ``noise`` comes from when it is not the benchmark's own calibrated spread
    noise_why: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not (self.rel >= 0 and self.floor >= 0):
            raise ValueError(f"threshold must be non-negative, got {self.rel!r} and {self.floor!r}")

    def __str__(self) -> str:
        if math.isinf(self.rel):
            return "information only"
        text = f"{self.rel * 100:.3g}%"
        text = f"{text}:{self.floor:.3g}" if self.floor else text
        return f"{text} ({self.why})" if self.why else text


# Defaults measured with tools/gate_quality.py (figures in docs/gate.md). Time-like metrics
# share one threshold: between identical processes on a shared 2-core CPU the control-normalised
# median moves by several percent, so smaller effects cannot be told from noise there. Memory is
# tight; its floor (metrics.py) keeps allocator granularity from being news. A calibrated
# baseline raises a benchmark's threshold to k x its between-process spread.
TIME_REL = 0.10
MEMORY_REL = 0.01
# Against a calibrated baseline the time-like default is the smallest change worth failing a
# pull request for: the benchmark's own k x spread, not this, guards against process noise
# there (figures: docs/gate.md). An explicit --threshold is used as given.
CALIBRATED_TIME_REL = 0.05
# A calibrated threshold is never wider than this: one contended calibration process must not
# blind the gate (a row at the cap says so; docs/gate.md, "Baselines").
CALIBRATED_CAP = 0.20
# A CPU's resident readings are not exact: identical processes differ by 1-3% in peak RSS and up
# to 19% in a case's footprint (where glibc's pages land; docs/gate.md "Memory"), more than three
# calibration processes show. They are judged at this at least; step_allocated_mb, exact, keeps 1%.
RESIDENT_CPU_REL = 0.10
# Against a baseline of one process, nothing measures how far identical processes differ, and on
# a CPU their resident readings do: footprints of the same training case differed by up to
# 18.6% between single processes (AMD EPYC, 2026-12-02; 11.5-12.8% on the Intel machine). One
# process a side, a resident change is evidence only beyond twice that; short of it the row is
# inconclusive and names the calibrated baseline that would judge it (docs/gate.md, "Memory").
RESIDENT_CPU_NOISE = 0.40
# Exact counters (operators, host syncs, graph breaks, ...) fail at any increase by default.
COUNTER_REL = 0.0
# `--threshold METRIC=info`: the metric is shown, never judged (e.g. operator counts)
INFO_ONLY = "info"


def _default_rel(test: str) -> float:
    return {"effect": MEMORY_REL, "counter": COUNTER_REL}.get(test, TIME_REL)


DEFAULT_THRESHOLDS: dict[str, Threshold] = {
    # normalised rows (time/control, ttft_ms/control, ...) use their raw metric's threshold
    m.key: Threshold(_default_rel(m.test), m.floor)
    for m in METRICS.values()
    if m.threshold_of is None
}


def parse_threshold(text: str) -> tuple[str | None, str, Threshold]:
    """Parse `[PATTERN@]METRIC=PCT%[:FLOOR]`, e.g. `time=15%`, `test_infer*@peak_memory_mb=2%:5`,
    or `[PATTERN@]METRIC=info` (shown, never judged: e.g. `ops_per_step=info`).

    Raises ValueError with a message a user can act on.
    """
    pattern, _, spec = text.rpartition("@") if "@" in text else (None, "", text)
    metric, sep, value = spec.partition("=")
    metric = metric.strip()
    if not sep or metric not in DEFAULT_THRESHOLDS:
        known = ", ".join(DEFAULT_THRESHOLDS)
        raise ValueError(f"{text!r}: expected [PATTERN@]METRIC=PCT%[:FLOOR], METRIC one of {known}")
    if value.strip() == INFO_ONLY:
        return (pattern or None), metric, Threshold(math.inf)
    rel_text, _, floor_text = value.partition(":")
    rel_text = rel_text.strip()
    if not rel_text.endswith("%"):
        raise ValueError(f"{text!r}: the relative part needs a % sign, e.g. {metric}=10%")
    try:
        threshold = Threshold(float(rel_text[:-1]) / 100, float(floor_text) if floor_text else 0.0)
    except ValueError as err:
        raise ValueError(f"{text!r}: {err}") from None
    return (pattern or None), metric, threshold


@dataclass(frozen=True)
class Thresholds:
    """Defaults, then global overrides, then per-benchmark overrides (the last match wins)."""

    base: Mapping[str, Threshold] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    # (pattern, metric, threshold): the pattern is an exact name/fullname or an fnmatch pattern
    per_benchmark: tuple[tuple[str, str, Threshold], ...] = ()

    # metrics whose global threshold was set on the command line (not the default)
    explicit: frozenset[str] = frozenset()

    def override(self, specs: Sequence[tuple[str | None, str, Threshold]]) -> Thresholds:
        base = dict(self.base)
        per_benchmark = list(self.per_benchmark)
        explicit = set(self.explicit)
        for pattern, metric, threshold in specs:
            if pattern is None:
                base[metric] = threshold
                explicit.add(metric)
            else:
                per_benchmark.append((pattern, metric, threshold))
        return replace(
            self, base=base, per_benchmark=tuple(per_benchmark), explicit=frozenset(explicit)
        )

    def lookup(self, name: str, fullname: str, metric: str) -> Threshold:
        return self.find(name, fullname, metric)[0]

    def find(self, name: str, fullname: str, metric: str) -> tuple[Threshold, bool]:
        """The threshold of one benchmark's metric, and whether a user set it. A rate the user
        left alone follows a threshold the user set on what it is the rate of (samples/s and
        tokens/s: time; the decode rate: tpot_ms): they are one measurement, and ``time=15%``
        must not pass a +12% step while its samples/s row fails it."""
        known = METRICS.get(metric)
        key = known.threshold_key if known else metric
        found, explicit = self._set(name, fullname, key)
        source = rate_of(METRICS[key]) if key in METRICS and not explicit else None
        if source is not None:
            of, of_set = self._set(name, fullname, source)
            if of_set:
                return _as_rate(of, source), True
        return found, explicit

    def _set(self, name: str, fullname: str, key: str) -> tuple[Threshold, bool]:
        found, explicit = self.base[key], key in self.explicit
        for pattern, m, threshold in self.per_benchmark:
            if m == key and _matches(pattern, name, fullname):
                found, explicit = threshold, True
        return found, explicit


def _as_rate(of: Threshold, key: str) -> Threshold:
    """A threshold on a duration as the same change of its rate: r slower is a rate r / (1 + r)
    lower (15% -> 13.04%); information only stays so. The floor is in ms: it does not carry."""
    if math.isinf(of.rel):
        return Threshold(math.inf)
    return Threshold(of.rel / (1 + of.rel), 0.0, f"{key}={of.rel * 100:.3g}% as a rate")


def _matches(pattern: str, name: str, fullname: str) -> bool:
    # exact first: ids contain `[`, which fnmatch reads as a character class
    if pattern in (name, fullname):
        return True
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(fullname, pattern)


# Default control tolerances. The matmul loop absorbs a moderate change of the machine's speed,
# not a large one (measured here: the loop 75% slower, the step 42%): 40%. The twin slows as the
# step does (measured here: a contended process ran step and twin 65-69% slower, their ratio
# within 1% of the other processes'; in four gate-quality runs, no A/A false alarm at 100%): 100%.
CONTROL_TOLERANCES = {"matmul": 0.4, "twin": 1.0}
# A calibrated baseline's threshold is SPREAD_K x the between-process spread (a standard
# deviation estimated from a few processes, so generously more than 2).
SPREAD_K = 3.0


@dataclass(frozen=True)
class GateSettings:
    thresholds: Thresholds = field(default_factory=Thresholds)
    alpha: float = 0.01  # significance level of the whole comparison (Holm over all its tests)
    time_basis: TimeBasis = "auto"
    # a baseline benchmark absent from the current run fails the gate; False (compare --subset)
    # reports it "not selected"
    fail_on_missing: bool = True
    # How far the control workload's median may move between the two sides before a
    # time/control verdict is called inconclusive; None: CONTROL_TOLERANCES by control kind.
    control_tolerance: float | None = None
    # what a comparison that was not fully judged exits with: None 3, "pass" 0, "fail" 1
    inconclusive: InconclusivePolicy | None = None
    spread_k: float = SPREAD_K
    # set by gate_documents when the devices differ and the user allowed it: time is judged on
    # the control ratio only, and the machine-speed check does not apply
    device_mismatch: bool = False
    # set by gate_documents: the software stack under the control differs (e.g. "torch 2.13.0
    # -> 2.14.0"); time rows then never pass on their own
    stack_change: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if self.control_tolerance is not None and not self.control_tolerance > 0:
            raise ValueError(f"control_tolerance must be > 0, got {self.control_tolerance!r}")
        if self.time_basis not in ("auto", "raw"):
            raise ValueError(f"time_basis must be 'auto' or 'raw', got {self.time_basis!r}")
        if self.inconclusive not in (None, "pass", "fail"):
            raise ValueError(f"inconclusive must be 'pass' or 'fail', got {self.inconclusive!r}")
        if not self.spread_k > 0:
            raise ValueError(f"spread_k must be > 0, got {self.spread_k!r}")


@dataclass(frozen=True)
class Row:
    benchmark: str  # short name, e.g. test_infer[sdpa-fp32-b1-s128]
    metric: str
    unit: str
    baseline: float | None
    current: float | None
    change: float | None  # fraction: +0.25 is 25% higher than the baseline
    change_low: float | None  # 95% confidence interval of the change, where one is known
    change_high: float | None
    p_value: float | None
    threshold: str
    verdict: str
    note: str = ""


def lonely_row(name: str, verdict: str, note: str) -> Row:
    """A row for a whole benchmark (new, missing, failed, not compared)."""
    return Row(name, "-", "", None, None, None, None, None, None, "", verdict, note)


@dataclass(frozen=True)
class GateResult:
    rows: tuple[Row, ...]
    new: tuple[str, ...]
    missing: tuple[str, ...]
    notes: tuple[str, ...]
    settings: GateSettings
    failed_cases: tuple[str, ...] = ()  # names recorded out of memory or failed
    compared: int = 0  # benchmarks present on both sides and judged metric by metric

    @property
    def regressions(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.verdict == REGRESSION)

    @property
    def missing_failures(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.verdict == MISSING)

    @property
    def unjudged(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.verdict in UNJUDGED)

    @property
    def verdict(self) -> str:
        """ "fail" (a regression or a missing benchmark), "not-judged" or "pass"."""
        if self.regressions or (self.settings.fail_on_missing and self.missing_failures):
            return "fail"
        if self.unjudged or not self.compared:
            return "not-judged"
        return "pass"

    @property
    def exit_code(self) -> int:
        """0 pass, 1 regression, 3 not fully judged (or 0/1 as --inconclusive says)."""
        verdict = self.verdict
        if verdict == "not-judged":
            return {None: 3, "pass": 0, "fail": 1}[self.settings.inconclusive]
        return 1 if verdict == "fail" else 0

    @property
    def failed(self) -> bool:
        return self.exit_code == 1

    def summary(self) -> str:
        counts = [f"{len(self.regressions)} regression(s)"]
        if self.failed_cases:
            counts[0] += f" ({len(self.failed_cases)} out of memory or failed)"
        counts.append(f"{len(self.missing)} missing")
        unjudged = {v: sum(r.verdict == v for r in self.rows) for v in UNJUDGED}
        counts += [f"{n} {v}" for v, n in unjudged.items() if n]
        selected = sum(r.verdict == NOT_SELECTED for r in self.rows)
        counts += [f"{selected} not selected"] if selected else []
        counts.append(f"{len(self.new)} new")
        if not self.compared:
            counts.append("no benchmark compared")
        status = {"fail": "FAIL", "pass": "PASS", "not-judged": "NOT FULLY JUDGED"}[self.verdict]
        if self.verdict == "not-judged" and self.settings.inconclusive:
            status += f" (--inconclusive {self.settings.inconclusive})"
        return f"gpt2 gate: {status}: {', '.join(counts)} (exit {self.exit_code})"
