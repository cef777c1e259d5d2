"""The regression gate: compare a current pytest-benchmark result with a baseline result.

Per benchmark (keyed by pytest-benchmark's `fullname`) and per metric, direction-aware:

- time: the per-round times in `stats.data` (median shown). A slowdown is a regression only when
  the effect is beyond its threshold AND a one-sided Mann-Whitney U test over the rounds says it is
  significant (p < alpha).
- time/control: the same test on the per-round ratio round_time / control_time, where both results
  carry `extra_info.control_round_s` aligned with `stats.data`. With `time_basis="auto"` this row
  decides the time verdict, and a raw-time or throughput regression that the ratio does not confirm
  is labelled `drift` (the machine, not the code, got slower) and does not fail the gate.
- throughput, MFU, latency (`extra_info` means): effect beyond threshold AND a one-sided Welch test
  from mean, `<key>_std` and the round count, when a `_std` is recorded.
- memory: nearly deterministic, so effect only (fraction AND absolute floor), no test; where the
  per-round peaks do vary (`peak_memory_mb_std`), the floor widens to 3 combined std (noise_band).

No pytest import here: the CLI, the pytest plugin and tools/gate_quality.py share this module.
See docs/gate.md for the rules and their reasons.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import statistics
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from gpt2_fixtures.results import baseline as baseline_io
from gpt2_fixtures.results import files
from gpt2_fixtures.results.metrics import EXTRA_METRICS, METRICS, TIME, TIME_RATIO, Metric

Result = Mapping[str, Any]
TimeBasis = Literal["auto", "raw"]

REGRESSION = "REGRESSION"
PASS = "pass"
IMPROVED = "improved"
DRIFT = "drift"
INCONCLUSIVE = "inconclusive"
NA = "n/a"
NEW = "new"
MISSING = "missing"


@dataclass(frozen=True)
class Threshold:
    """A change is beyond the threshold when |change| > rel AND |current - baseline| > floor."""

    rel: float  # fraction of the baseline: 0.10 is 10%
    floor: float = 0.0  # absolute, in the metric's unit (MB, ms, tok/s, ...)

    def __post_init__(self) -> None:
        if not (self.rel >= 0 and self.floor >= 0):
            raise ValueError(f"threshold must be non-negative, got {self.rel!r} and {self.floor!r}")

    def __str__(self) -> str:
        text = f"{self.rel * 100:g}%"
        return f"{text}:{self.floor:g}" if self.floor else text


# Defaults measured with tools/gate_quality.py (figures in docs/gate.md). Time-like metrics
# share one threshold: between identical processes on a shared 2-core CPU the control-normalised
# median moves by several percent, so smaller effects cannot be told from noise there. Memory is
# tight; its floor keeps allocator granularity (CUDA reserves in 2 MB blocks) from being news.
TIME_REL = 0.10
DEFAULT_THRESHOLDS: dict[str, Threshold] = {
    # the control ratio is a time: the `time` threshold covers both rows
    **{
        m.key: Threshold(TIME_REL)
        for m in METRICS.values()
        if m.test != "effect" and m != TIME_RATIO
    },
    "peak_memory_mb": Threshold(0.01, 1.0),
    "peak_reserved_mb": Threshold(0.01, 2.0),
}


def parse_threshold(text: str) -> tuple[str | None, str, Threshold]:
    """Parse `[PATTERN@]METRIC=PCT%[:FLOOR]`, e.g. `time=15%`, `test_infer*@peak_memory_mb=2%:5`.

    Raises ValueError with a message a user can act on.
    """
    pattern, _, spec = text.rpartition("@") if "@" in text else (None, "", text)
    metric, sep, value = spec.partition("=")
    metric = metric.strip()
    if not sep or metric not in DEFAULT_THRESHOLDS:
        known = ", ".join(DEFAULT_THRESHOLDS)
        raise ValueError(f"{text!r}: expected [PATTERN@]METRIC=PCT%[:FLOOR], METRIC one of {known}")
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

    def override(self, specs: Sequence[tuple[str | None, str, Threshold]]) -> Thresholds:
        base = dict(self.base)
        per_benchmark = list(self.per_benchmark)
        for pattern, metric, threshold in specs:
            if pattern is None:
                base[metric] = threshold
            else:
                per_benchmark.append((pattern, metric, threshold))
        return replace(self, base=base, per_benchmark=tuple(per_benchmark))

    def lookup(self, name: str, fullname: str, metric: str) -> Threshold:
        key = TIME.key if metric == TIME_RATIO.key else metric
        found = self.base[key]
        for pattern, m, threshold in self.per_benchmark:
            if m == key and _matches(pattern, name, fullname):
                found = threshold
        return found


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


@dataclass(frozen=True)
class GateSettings:
    thresholds: Thresholds = field(default_factory=Thresholds)
    alpha: float = 0.01  # significance level of the one-sided tests
    time_basis: TimeBasis = "auto"
    fail_on_missing: bool = False
    # How far the control workload's median may move between the two sides before a
    # time/control verdict is called inconclusive; None: CONTROL_TOLERANCES by control kind.
    control_tolerance: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if self.control_tolerance is not None and not self.control_tolerance > 0:
            raise ValueError(f"control_tolerance must be > 0, got {self.control_tolerance!r}")
        if self.time_basis not in ("auto", "raw"):
            raise ValueError(f"time_basis must be 'auto' or 'raw', got {self.time_basis!r}")


@dataclass(frozen=True)
class Row:
    benchmark: str  # short name, e.g. test_infer[sdpa-fp32-b1-s128]
    metric: str
    unit: str
    baseline: float | None
    current: float | None
    change: float | None  # fraction: +0.25 is 25% higher than the baseline
    p_value: float | None
    threshold: str
    verdict: str
    note: str = ""


@dataclass(frozen=True)
class GateResult:
    rows: tuple[Row, ...]
    new: tuple[str, ...]
    missing: tuple[str, ...]
    notes: tuple[str, ...]
    settings: GateSettings

    @property
    def regressions(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.verdict == REGRESSION)

    @property
    def failed(self) -> bool:
        return bool(self.regressions) or (self.settings.fail_on_missing and bool(self.missing))

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self) -> str:
        counts = f"{len(self.regressions)} regression(s), "
        inconclusive = sum(r.verdict == INCONCLUSIVE for r in self.rows)
        if inconclusive:
            counts += f"{inconclusive} inconclusive, "
        counts += f"{len(self.new)} new, "
        counts += f"{len(self.missing)} missing benchmark(s)"
        return f"gpt2 gate: {'FAIL' if self.failed else 'PASS'}: {counts}"


# --- statistics ------------------------------------------------------------------------------


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


def one_sided_mean_p(
    current: tuple[float, float, int], base: tuple[float, float, int]
) -> float | None:
    """Welch's t-test (scipy) from (mean, std, n) of each side, in the observed direction."""
    (m1, s1, n1), (m2, s2, n2) = current, base
    if n1 < 2 or n2 < 2 or m1 == m2:
        return None if (n1 < 2 or n2 < 2) else 1.0
    if s1 == 0 and s2 == 0:
        return 0.0  # no spread at all: the difference is certain
    from scipy.stats import ttest_ind_from_stats

    alternative = "greater" if m1 > m2 else "less"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = ttest_ind_from_stats(m1, s1, n1, m2, s2, n2, equal_var=False, alternative=alternative)
    p = float(res.pvalue)
    return None if math.isnan(p) else p


def judge(
    metric: Metric,
    base: float,
    current: float,
    p_value: float | None,
    threshold: Threshold,
    alpha: float,
) -> tuple[float, str]:
    """Return (change, verdict) for one metric; verdict is REGRESSION, improved or pass."""
    diff = current - base
    change = diff / abs(base) if base else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    beyond = abs(change) > threshold.rel and abs(diff) > threshold.floor
    significant = p_value is None or p_value < alpha
    if not (beyond and significant):
        return change, PASS
    worse = diff > 0 if metric.higher_is_worse else diff < 0
    return change, REGRESSION if worse else IMPROVED


# --- extracting samples from one benchmark entry ---------------------------------------------


def round_times(bench: Mapping[str, Any]) -> list[float] | None:
    data = bench.get("stats", {}).get("data")
    if isinstance(data, list) and data and all(_is_number(x) for x in data):
        return [float(x) for x in data]
    return None


def control_ratios(bench: Mapping[str, Any]) -> list[float] | None:
    """Per-round round_time / control_time, or None when the control is absent or misaligned."""
    times = round_times(bench)
    control = (bench.get("extra_info") or {}).get("control_round_s")
    if times is None or not isinstance(control, list) or len(control) != len(times):
        return None
    if not all(_is_number(c) and c > 0 for c in control):
        return None
    return [t / float(c) for t, c in zip(times, control, strict=True)]


def control_kind(bench: Mapping[str, Any]) -> str:
    """The control workload a result was normalised to: results of 0.1.x carry no
    ``control_kind`` and used the matmul loop. Ratios to different controls do not compare."""
    return str((bench.get("extra_info") or {}).get("control_kind") or "matmul")


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _number(x: Any) -> float | None:
    return float(x) if _is_number(x) else None


def _time_row_values(
    base: Mapping[str, Any], cur: Mapping[str, Any]
) -> tuple[float, float, float | None]:
    """Medians in ms and the p-value; falls back to Welch on the stats when rounds are absent."""
    b_data, c_data = round_times(base), round_times(cur)
    if b_data is not None and c_data is not None:
        p = one_sided_rounds_p(c_data, b_data)
        return statistics.median(b_data) * 1e3, statistics.median(c_data) * 1e3, p
    bs, cs = base["stats"], cur["stats"]
    p = one_sided_mean_p(
        (cs["mean"], cs.get("stddev", 0.0), int(cs.get("rounds", 0))),
        (bs["mean"], bs.get("stddev", 0.0), int(bs.get("rounds", 0))),
    )
    return bs["median"] * 1e3, cs["median"] * 1e3, p


# A memory peak that varies from round to round (CPU RSS of a training step does, by tens of MB)
# is not deterministic, and two runs' peaks differ by up to a few per-round standard deviations:
# such a difference is measurement noise, not news.
NOISE_BAND_SIGMAS = 3.0


def noise_band(metric: Metric, base: Mapping[str, Any], cur: Mapping[str, Any]) -> float:
    """Absolute change below which an effect-only metric is noise: 3 x the combined per-round
    standard deviations recorded as `<key>_std` (0 when absent)."""
    if metric.test != "effect":
        return 0.0
    stds = [_number((d.get("extra_info") or {}).get(f"{metric.key}_std")) for d in (base, cur)]
    return NOISE_BAND_SIGMAS * math.hypot(*(s or 0.0 for s in stds))


def _extra_values(
    metric: Metric, base: Mapping[str, Any], cur: Mapping[str, Any]
) -> tuple[float | None, float | None, float | None, str]:
    """(baseline, current, p, note) for an extra_info metric."""
    b_info, c_info = base.get("extra_info") or {}, cur.get("extra_info") or {}
    b_val, c_val = _number(b_info.get(metric.key)), _number(c_info.get(metric.key))
    if b_val is None or c_val is None:
        where = "baseline" if b_val is None else "current run"
        return b_val, c_val, None, f"not recorded in the {where}"
    b_std, c_std = (
        _number(b_info.get(f"{metric.key}_std")),
        _number(c_info.get(f"{metric.key}_std")),
    )
    if metric.test == "effect":
        kind_b, kind_c = b_info.get("memory_kind"), c_info.get("memory_kind")
        if kind_b != kind_c:
            return b_val, c_val, None, f"memory_kind differs: {kind_b} vs {kind_c}"
        return b_val, c_val, None, ""
    if b_std is None or c_std is None:
        return b_val, c_val, None, "no _std recorded: effect only"
    p = one_sided_mean_p(
        (c_val, c_std, int(cur["stats"].get("rounds", 0))),
        (b_val, b_std, int(base["stats"].get("rounds", 0))),
    )
    return b_val, c_val, p, ""


# --- comparing ---------------------------------------------------------------------------------


def compare(baseline: Result, current: Result, settings: GateSettings | None = None) -> GateResult:
    """Gate `current` against `baseline` (both validated pytest-benchmark documents)."""
    settings = settings or GateSettings()
    base_by = {b["fullname"]: b for b in baseline["benchmarks"]}
    cur_by = {b["fullname"]: b for b in current["benchmarks"]}
    rows: list[Row] = []
    notes: list[str] = []
    bases_used: set[str] = set()
    # Bonferroni over the benchmarks compared: a grid of 25 cases tested at 1% each would raise
    # a false alarm in about 1 run of 5 by chance alone; alpha bounds the whole comparison.
    n_shared = sum(1 for f in cur_by if f in base_by)
    alpha = settings.alpha / max(1, n_shared)
    for fullname, cur in cur_by.items():
        base = base_by.get(fullname)
        if base is None:
            rows.append(_lonely_row(cur, NEW, "not in the baseline"))
            continue
        bench_rows, basis = _compare_benchmark(base, cur, settings, alpha)
        bases_used.add(basis)
        rows.extend(bench_rows)
    new = tuple(b["name"] for f, b in cur_by.items() if f not in base_by)
    missing = tuple(b["name"] for f, b in base_by.items() if f not in cur_by)
    rows.extend(
        _lonely_row(b, MISSING, "not in the current run")
        for f, b in base_by.items()
        if f not in cur_by
    )
    notes.extend(_basis_notes(bases_used))
    if n_shared > 1:
        notes.append(
            f"significance: alpha {settings.alpha:g} for the whole comparison, split over "
            f"{n_shared} benchmarks (Bonferroni: each test needs p < {alpha:.2g})"
        )
    return GateResult(tuple(rows), new, missing, tuple(notes), settings)


def _basis_notes(bases: set[str]) -> list[str]:
    notes = []
    if "ratio" in bases:
        notes.append(
            "time judged on the per-round ratio to the control workload (time/control); raw-time "
            "and throughput regressions that the ratio does not confirm are shown as drift"
        )
    if "raw" in bases:
        notes.append(
            "time judged on raw per-round times (no aligned control_round_s of the same "
            "control_kind on both sides)"
        )
    return notes


def _lonely_row(bench: Mapping[str, Any], verdict: str, note: str) -> Row:
    return Row(bench["name"], "-", "", None, None, None, None, "", verdict, note)


def _compare_benchmark(
    base: Mapping[str, Any], cur: Mapping[str, Any], settings: GateSettings, alpha: float
) -> tuple[list[Row], str]:
    name, fullname = cur["name"], cur["fullname"]
    mismatch = _incomparable(base, cur)
    if mismatch:
        return [Row(name, "-", "", None, None, None, None, "", NA, mismatch)], "none"

    def row(metric: Metric, b: float | None, c: float | None, p: float | None, note: str) -> Row:
        thr = settings.thresholds.lookup(name, fullname, metric.key)
        if b is None or c is None or note.startswith("memory_kind"):
            return Row(name, metric.key, metric.unit, b, c, None, None, str(thr), NA, note)
        band = noise_band(metric, base, cur)
        if band > thr.floor:
            thr = replace(thr, floor=band)
            note = note or f"noise band {band:.3g} {metric.unit} from the per-round spread"
        change, verdict = judge(metric, b, c, p, thr, alpha)
        return Row(name, metric.key, metric.unit, b, c, change, p, str(thr), verdict, note)

    b_kind, c_kind = control_kind(base), control_kind(cur)
    time_note = "" if b_kind == c_kind else f"control workloads differ: {b_kind} vs {c_kind}"
    rows = [row(TIME, *_time_row_values(base, cur), time_note)]
    b_ratio, c_ratio = control_ratios(base), control_ratios(cur)
    ratio_row = None
    if settings.time_basis == "auto" and b_ratio and c_ratio and not time_note:
        p = one_sided_rounds_p(c_ratio, b_ratio)
        b_med, c_med = statistics.median(b_ratio), statistics.median(c_ratio)
        ratio_row = row(TIME_RATIO, b_med, c_med, p, "")
        ratio_row = _agreement_check(_speed_check(ratio_row, base, cur, settings), rows[0])
        rows.append(ratio_row)
    for metric in EXTRA_METRICS:
        b_val, c_val, p, note = _extra_values(metric, base, cur)
        if b_val is None and c_val is None:
            continue
        rows.append(row(metric, b_val, c_val, p, note))
    if ratio_row is None:
        return rows, "raw"
    return [_confirm(r, ratio_row) for r in rows], "ratio"


def control_median(bench: Mapping[str, Any]) -> float | None:
    """Median seconds of the control workload over the rounds, when it was recorded."""
    control = (bench.get("extra_info") or {}).get("control_round_s")
    if not isinstance(control, list) or not control or not all(map(_is_number, control)):
        return None
    return float(statistics.median(control))


def _speed_check(
    ratio_row: Row, base: Mapping[str, Any], cur: Mapping[str, Any], settings: GateSettings
) -> Row:
    """A time/control verdict, pass included, is inconclusive when the machine's own speed (the
    control's median) moved beyond the tolerance: the ratio is then no fair measure of the code
    (measured here: the control 80% slower in one process, its step 25% slower than that)."""
    b, c = control_median(base), control_median(cur)
    if ratio_row.verdict == NA or not b or not c:
        return ratio_row
    speed = max(b, c) / min(b, c) - 1  # the same for a machine 2x slower and 2x faster
    tolerance = control_tolerance(settings, control_kind(cur))
    if speed <= tolerance:
        return ratio_row
    note = (
        f"machine speed changed: control {b * 1e3:.3g} -> {c * 1e3:.3g} ms ({speed:.0%} apart, "
        f"tolerance {tolerance:.0%}); rerun, or gate with gpt2-bench ab"
    )
    return replace(ratio_row, verdict=INCONCLUSIVE, note=note)


def control_tolerance(settings: GateSettings, kind: str) -> float:
    """The tolerance set, else the default of the control's kind (``twin-train`` -> twin)."""
    if settings.control_tolerance is not None:
        return settings.control_tolerance
    return CONTROL_TOLERANCES.get(kind.split("-")[0], CONTROL_TOLERANCES["matmul"])


def _agreement_check(ratio_row: Row, time_row: Row) -> Row:
    """A time/control verdict that raw time contradicts (one a regression, the other an
    improvement, both significant) is inconclusive: the machine's speed changed in a way the
    control does not follow. Measured here: a co-tenant slowed the control 40-75% but the
    step less, so identical code looked 25-40% slower against that process."""
    opposite = {REGRESSION: IMPROVED, IMPROVED: REGRESSION}
    if opposite.get(ratio_row.verdict) != time_row.verdict:
        return ratio_row
    note = (
        f"raw time says {time_row.verdict} ({_fmt_change(time_row.change)}), the ratio "
        f"{ratio_row.verdict}: the machine's speed changed unlike the control; rerun, or gate "
        "with gpt2-bench ab"
    )
    return replace(ratio_row, verdict=INCONCLUSIVE, note=note)


def _confirm(r: Row, ratio_row: Row) -> Row:
    """A wall-clock regression counts only when the control ratio regressed too."""
    metric = METRICS.get(r.metric)
    if metric is None or not metric.time_derived or r.verdict != REGRESSION:
        return r
    if ratio_row.verdict == REGRESSION:
        return r
    if ratio_row.verdict == INCONCLUSIVE:
        return replace(r, verdict=INCONCLUSIVE, note="time/control is inconclusive")
    return replace(r, verdict=DRIFT, note="not confirmed by time/control")


def _incomparable(base: Mapping[str, Any], cur: Mapping[str, Any]) -> str:
    """A reason why two entries of the same name measure different things, or ''."""
    b_info, c_info = base.get("extra_info") or {}, cur.get("extra_info") or {}
    for key in ("device_name", "dtype", "model", "batch_size", "seq_len"):
        b, c = b_info.get(key), c_info.get(key)
        if b is not None and c is not None and b != c:
            return f"not compared: {key} differs ({b} vs {c})"
    return ""


def gate_documents(
    baseline: Result,
    current: Result,
    settings: GateSettings | None = None,
    allow_device_mismatch: bool = False,
) -> GateResult:
    """Check the environments (raises files.UnusableInput on a device mismatch) and compare."""
    env_notes = baseline_io.check_environment(baseline, current, allow_device_mismatch)
    result = compare(baseline, current, settings)
    return replace(result, notes=(*env_notes, *result.notes))


# --- rendering ---------------------------------------------------------------------------------

COLUMNS = ("benchmark", "metric", "baseline", "current", "change", "p-value", "verdict")


def _fmt_value(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    text = f"{x:.4g}" if abs(x) < 1e5 else f"{x:.0f}"
    return f"{text} {unit}".strip()


def _fmt_change(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 100:+.1f}%" if math.isfinite(x) else ("+inf" if x > 0 else "-inf")


def _fmt_p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def table_cells(result: GateResult) -> list[list[str]]:
    cells = []
    for r in result.rows:
        verdict = f"{r.verdict} ({r.note})" if r.note else r.verdict
        cells.append(
            [
                r.benchmark,
                r.metric,
                _fmt_value(r.baseline, r.unit),
                _fmt_value(r.current, r.unit),
                _fmt_change(r.change),
                _fmt_p(r.p_value),
                verdict,
            ]
        )
    return cells


def format_table(result: GateResult) -> str:
    """Plain-text table for a terminal, followed by the notes and one summary line."""
    cells = [list(COLUMNS), *table_cells(result)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.extend(f"note: {n}" for n in result.notes)
    lines.append(result.summary())
    return "\n".join(line.rstrip() for line in lines)


def to_markdown(result: GateResult) -> str:
    """Markdown for a CI job summary ($GITHUB_STEP_SUMMARY)."""
    status = "FAIL" if result.failed else "PASS"
    lines = [f"### gpt2-bench regression gate: {status}", ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    for cell in table_cells(result):
        cell[-1] = f"**{cell[-1]}**" if cell[-1].startswith(REGRESSION) else cell[-1]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cell) + " |")
    lines.append("")
    lines.extend(f"- {n}" for n in result.notes)
    lines.append(f"- {result.summary()}")
    return "\n".join(lines) + "\n"


def to_json(result: GateResult) -> dict[str, Any]:
    """A JSON-safe dict: verdict, exit code, rows, new/missing benchmarks, notes, settings."""

    def safe(x: float | None) -> float | str | None:
        return x if x is None or math.isfinite(x) else str(x)

    rows = [{**asdict(r), "change": safe(r.change)} for r in result.rows]
    s = result.settings
    return {
        "verdict": "fail" if result.failed else "pass",
        "exit_code": result.exit_code,
        "rows": rows,
        "new": list(result.new),
        "missing": list(result.missing),
        "notes": list(result.notes),
        "settings": {
            "alpha": s.alpha,
            "time_basis": s.time_basis,
            "fail_on_missing": s.fail_on_missing,
            "control_tolerance": s.control_tolerance,  # null: the defaults below, by kind
            "control_tolerance_defaults": dict(CONTROL_TOLERANCES),
            "thresholds": {k: str(v) for k, v in s.thresholds.base.items()},
            "per_benchmark": [[p, m, str(t)] for p, m, t in s.thresholds.per_benchmark],
        },
    }


def write_outputs(result: GateResult, markdown: str | None, json_path: str | None) -> None:
    """Write the Markdown and JSON renderings atomically; append Markdown to an existing summary.

    $GITHUB_STEP_SUMMARY is a file the job appends to, so Markdown is appended when the file
    already exists and is not empty.
    """
    if markdown:
        path = Path(markdown)
        previous = path.read_text() if path.is_file() else ""
        sep = "\n" if previous and not previous.endswith("\n") else ""
        files.atomic_write_text(path, previous + sep + to_markdown(result))
    if json_path:
        text = json.dumps(to_json(result), indent=2, allow_nan=False) + "\n"
        files.atomic_write_text(Path(json_path), text)


def marker_overrides(
    nodeid: str, thresholds: Mapping[str, Any]
) -> list[tuple[str | None, str, Threshold]]:
    """Per-benchmark thresholds from `@pytest.mark.gpt2_gate(time="20%", peak_memory_mb="2%:5")`.

    Raises ValueError naming the test and the bad value.
    """
    overrides: list[tuple[str | None, str, Threshold]] = []
    for metric, spec in thresholds.items():
        try:
            _, key, threshold = parse_threshold(f"{metric}={spec}")
        except ValueError as err:
            raise ValueError(f"{nodeid}: gpt2_gate marker: {err}") from None
        overrides.append((nodeid, key, threshold))
    return overrides


# --- command line: `gpt2-bench compare` --------------------------------------------------------


def _threshold_arg(text: str) -> tuple[str | None, str, Threshold]:
    try:
        return parse_threshold(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _alpha_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def _tolerance_arg(text: str) -> float:
    value = text[:-1] if text.endswith("%") else ""
    try:
        fraction = float(value) / 100
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a percentage such as 25%, got {text!r}"
        ) from None
    if not fraction > 0:
        raise argparse.ArgumentTypeError(f"must be above 0%, got {text}")
    return fraction


def gate_options() -> list[tuple[str, dict[str, Any]]]:
    """The gate's options, declared once: ``--NAME`` for `compare` and `ab`, ``--gpt2-NAME`` in
    the pytest plugin (whose parser is argparse too)."""
    defaults = ", ".join(f"{k}={v}" for k, v in DEFAULT_THRESHOLDS.items())
    settings = GateSettings()
    return [
        (
            "threshold",
            {
                "action": "append",
                "type": _threshold_arg,
                "default": [],
                "metavar": "[PATTERN@]METRIC=PCT%[:FLOOR]",
                # argparse %-formats help strings: the thresholds' own % signs are escaped.
                "help": "override a threshold, globally or for benchmarks matching PATTERN; "
                f"repeatable. Defaults: {defaults}".replace("%", "%%"),
            },
        ),
        (
            "alpha",
            {
                "type": _alpha_arg,
                "default": settings.alpha,
                "help": "significance level of the whole comparison, split over its benchmarks. "
                "Default: %(default)r",
            },
        ),
        (
            "time-basis",
            {
                "choices": ("auto", "raw"),
                "default": settings.time_basis,
                "help": "auto: judge time on the control ratio when both sides have one. "
                "Default: %(default)r",
            },
        ),
        (
            "control-tolerance",
            {
                "type": _tolerance_arg,
                "default": settings.control_tolerance,
                "metavar": "PCT%",
                "help": "how far apart the control workload's medians of the two sides may be "
                "(larger over smaller) before a time/control verdict is inconclusive. Default: "
                + ", ".join(
                    f"{v:.0%} for the {k} control" for k, v in CONTROL_TOLERANCES.items()
                ).replace("%", "%%"),
            },
        ),
        (
            "fail-on-missing",
            {
                "action": "store_true",
                "help": "fail when a baseline benchmark is missing from the current run",
            },
        ),
    ]


DEVICE_MISMATCH_OPTION: tuple[str, dict[str, Any]] = (
    "allow-device-mismatch",
    {
        "action": "store_true",
        "help": "compare even when the baseline was measured on another device",
    },
)


def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `compare` and `ab`."""
    for name, kwargs in gate_options():
        parser.add_argument(f"--{name}", **kwargs)
    parser.add_argument("--markdown", metavar="FILE", help="write (append) the verdict as Markdown")
    parser.add_argument("--json", metavar="FILE", help="write the verdict as JSON")


def settings_from(
    get: Callable[[str], Any], overrides: Sequence[tuple[str | None, str, Threshold]] = ()
) -> GateSettings:
    """GateSettings from the options of gate_options(), read by ``get(dest)`` (``dest`` as
    argparse names it, e.g. "time_basis"); ``overrides`` come after the command line's."""
    return GateSettings(
        thresholds=Thresholds().override([*get("threshold"), *overrides]),
        alpha=get("alpha"),
        time_basis=get("time_basis"),
        fail_on_missing=get("fail_on_missing"),
        control_tolerance=get("control_tolerance"),
    )


def settings_from_args(args: argparse.Namespace) -> GateSettings:
    return settings_from(lambda dest: getattr(args, dest))


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", help="baseline pytest-benchmark JSON")
    parser.add_argument("current", help="current pytest-benchmark JSON")
    name, kwargs = DEVICE_MISMATCH_OPTION
    parser.add_argument(f"--{name}", **kwargs)
    add_gate_arguments(parser)


def run_compare(args: argparse.Namespace) -> int:
    """`gpt2-bench compare`: exit 0 pass, 1 regression, 2 unusable input (one line on stderr)."""
    try:
        settings = settings_from_args(args)
        base = files.load_result(args.baseline)
        cur = files.load_result(args.current)
        result = gate_documents(base, cur, settings, args.allow_device_mismatch)
    except (files.UnusableInput, ValueError) as err:
        print(f"gpt2-bench compare: error: {err}", file=sys.stderr)
        return 2
    print(format_table(result))
    write_outputs(result, args.markdown, args.json)
    return result.exit_code
