"""Comparing two results: every baseline benchmark gets a verdict, every metric a row.

Rules and their reasons: docs/gate.md.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gpt2_fixtures.results import files
from gpt2_fixtures.results.fingerprint import check_environment
from gpt2_fixtures.results.gate import samples
from gpt2_fixtures.results.gate.counters import counter_rows
from gpt2_fixtures.results.gate.stats import (
    MIN_ROUNDS,
    Alternative,
    Evidence,
    decide,
    holm_levels,
    log_welch_p,
    mean_change_ci,
    min_rounds_p,
    one_sided_mean_p,
    one_sided_rounds_p,
    rounds_change,
    rounds_change_ci,
)
from gpt2_fixtures.results.gate.verdicts import (
    CALIBRATED_CAP,
    CALIBRATED_TIME_REL,
    CONTROL_TOLERANCES,
    DRIFT,
    INCONCLUSIVE,
    MISSING,
    NA,
    NEW,
    NOT_SELECTED,
    PASS,
    REGRESSION,
    RESIDENT_CPU_NOISE,
    RESIDENT_CPU_REL,
    TIME_REL,
    GateResult,
    GateSettings,
    Row,
    Threshold,
    lonely_row,
)
from gpt2_fixtures.results.metrics import EXTRA_METRICS, METRICS, NORMALISED, TIME, Metric

Result = Mapping[str, Any]

# A memory peak that varies between settled steps (CPU RSS of a training step does, by one
# logits buffer) is noise up to this many of the baseline's standard deviations. Only the
# baseline's spread counts, so a change that adds variance cannot widen its own band.
NOISE_BAND_SIGMAS = 1.5


@dataclass(frozen=True)
class _Pair:
    """One benchmark on both sides, with what judging its rows needs."""

    base: Mapping[str, Any]
    cur: Mapping[str, Any]
    settings: GateSettings
    baseline_doc: Result
    # the median spread per ("", metric) over the grid and per (phase, metric)
    typical: Mapping[tuple[str, str], float]
    # the strictest level of the comparison's family (alpha / number of tests): a test is chosen
    # by what it can reach there, so p-values do not depend on the levels granted
    strictest: float = 1.0
    # (benchmark, metric) -> the level Holm's step-down granted a regression test it rejected
    levels: Mapping[tuple[str, str], float] | None = None
    # processes pooled into the current run (`gpt2-bench baseline` on the current side too)
    current_processes: int = 1

    @property
    def name(self) -> str:
        return str(self.cur["name"])

    def level(self, metric: Metric) -> float:
        """The level a regression test is judged at: Holm's where it granted one; before Holm
        ran (the first pass) every test is provisionally at alpha, so that its p is recorded."""
        if self.levels is None:
            return self.settings.alpha
        return self.levels.get((self.name, metric.key), 0.0)

    @property
    def better_level(self) -> float:
        """Improvements are held to the strictest level (Bonferroni's alpha / tests)."""
        return self.settings.alpha if self.levels is None else self.strictest

    def threshold(self, metric: Metric) -> Threshold:
        """The configured threshold, raised for a calibrated baseline of n processes to
        k x spread x sqrt(1/m + 1/n) (m: the current run's processes, 1 unless it was pooled
        too), capped at CALIBRATED_CAP; a default one on a CPU's resident
        memory at least RESIDENT_CPU_REL (docs/gate.md, "Baselines" and "Memory")."""
        thr, explicit = self.settings.thresholds.find(self.name, self.cur["fullname"], metric.key)
        own = samples.spread(self.baseline_doc, self.base["fullname"], metric.key)
        if metric.exact:  # no noise between processes to widen it
            return thr
        if own is not None:
            thr = self._calibrated(thr, explicit, own, metric)
        thr = thr if explicit else _resident_floor(thr, metric, self.base)
        return thr if own is not None else _one_process_noise(thr, metric, self.base)

    def _calibrated(self, thr: Threshold, explicit: bool, own: float, metric: Metric) -> Threshold:
        if not explicit and thr.rel == TIME_REL:
            # the measured spread, not the uncalibrated default, guards against process noise
            thr = Threshold(CALIBRATED_TIME_REL, thr.floor)
        of_phase = self.typical.get((samples.phase(self.base), metric.key), 0.0)
        spread = max(own, of_phase, self.typical.get(("", metric.key), 0.0))
        n = processes(self.baseline_doc)
        k = self.settings.spread_k
        # the difference of a mean of m processes and one of n: s x sqrt(1/m + 1/n)
        calibrated = k * spread * math.sqrt(1 / self.current_processes + 1 / n)
        if calibrated <= thr.rel:
            return Threshold(thr.rel, thr.floor, f"calibrated: {k:g} x {spread:.2%} spread is less")
        if calibrated > CALIBRATED_CAP:
            why = f"capped: {k:g} x {spread:.2%} spread is {calibrated:.0%}; recalibrate"
            return Threshold(CALIBRATED_CAP, thr.floor, why, noise=calibrated)
        return Threshold(calibrated, thr.floor, f"{k:g} x {spread:.2%} between-process spread")


def processes(doc: Result) -> int:
    """How many processes a result was pooled from by `gpt2-bench baseline` (1: one run)."""
    return int((samples.calibration(doc) or {}).get("processes") or 1)


def _resident_floor(thr: Threshold, metric: Metric, base: Mapping[str, Any]) -> Threshold:
    """A CPU's resident memory is judged at RESIDENT_CPU_REL at least: it is not exact, and
    three calibration processes underestimate how far identical processes differ there."""
    if _resident(metric, base) and thr.rel < RESIDENT_CPU_REL:
        why = "a CPU's resident memory: not exact; step_allocated_mb judges the step at 1%"
        return Threshold(RESIDENT_CPU_REL, thr.floor, why)
    return thr


def _one_process_noise(thr: Threshold, metric: Metric, base: Mapping[str, Any]) -> Threshold:
    """A CPU's resident memory against an uncalibrated baseline: a change is evidence of a
    regression only beyond RESIDENT_CPU_NOISE, what one process a side cannot rule out."""
    if not _resident(metric, base) or thr.noise >= RESIDENT_CPU_NOISE:
        return thr
    why = "one process a side allows for a CPU's resident memory (twice the 18.6% seen"
    why += " between identical processes)"
    return replace(thr, noise=RESIDENT_CPU_NOISE, noise_why=why)


def _resident(metric: Metric, base: Mapping[str, Any]) -> bool:
    cpu = samples.info(base).get("memory_kind") == "cpu_rss"
    return cpu and metric.test == "effect" and not metric.exact


def compare(baseline: Result, current: Result, settings: GateSettings | None = None) -> GateResult:
    """Gate `current` against `baseline`; raises files.UnusableInput on an unusable document."""
    settings = settings or GateSettings()
    files.validate_result(baseline, "baseline")
    files.validate_result(current, "current run")
    base_by = {b["fullname"]: b for b in baseline["benchmarks"]}
    cur_by = {b["fullname"]: b for b in current["benchmarks"]}
    typical = samples.typical_spreads(baseline)
    pooled = processes(current)
    pairs = [
        _Pair(base_by[f], cur, settings, baseline, typical, current_processes=pooled)
        for f, cur in cur_by.items()
        if f in base_by
    ]
    # alpha bounds the whole comparison: Holm's step-down over every test of every benchmark
    # (Holm 1979). The first pass records the p-values; the test chosen for a row depends only
    # on the strictest level (alpha / tests), so the second pass judges the same p-values.
    m = sum(len(_compare_benchmark(pair).tests) for pair in pairs)
    strictest = settings.alpha / max(1, m)
    pairs = [replace(pair, strictest=strictest) for pair in pairs]
    tests = [t for pair in pairs for t in _compare_benchmark(pair).tests]
    levels = holm_levels(tests, settings.alpha)
    judged = [_compare_benchmark(replace(pair, levels=levels)) for pair in pairs]
    rows, bases_used = _assemble(pairs, judged, cur_by, base_by, baseline)
    failed = [c for c in files.failed_cases(current) if c["fullname"] not in cur_by]
    rows.extend(_failed_row(case, base_by.get(case["fullname"]), baseline) for case in failed)
    failed_names = {c["fullname"] for c in failed}
    absent = [b for f, b in base_by.items() if f not in cur_by and f not in failed_names]
    deselected = files.not_selected(current)
    rows.extend(_absent_row(b, b["fullname"] in deselected, settings) for b in absent)
    notes = [
        *_basis_notes(bases_used),
        *_calibration_notes(baseline, pooled),
        *_shard_notes(current),
    ]
    if m > 1:
        notes.append(
            f"significance: alpha {settings.alpha:g} for the whole comparison, by Holm's "
            f"step-down over its {m} tests (the smallest p needs p < {strictest:.2g}, the next "
            f"p < {settings.alpha / max(1, m - 1):.2g}, ...)"
        )
    return GateResult(
        rows=tuple(rows),
        new=tuple(b["name"] for f, b in cur_by.items() if f not in base_by),
        missing=tuple(r.benchmark for r in rows if r.verdict == MISSING),
        notes=tuple(notes),
        settings=settings,
        failed_cases=tuple(c["name"] for c in failed),
        compared=len(pairs),
    )


def _assemble(
    pairs: list[_Pair],
    judged: list[_Judged],
    cur_by: Mapping[str, Mapping[str, Any]],
    base_by: Mapping[str, Mapping[str, Any]],
    baseline: Result,
) -> tuple[list[Row], set[str]]:
    by_name = {pair.cur["fullname"]: bench for pair, bench in zip(pairs, judged, strict=True)}
    rows: list[Row] = []
    bases_used: set[str] = set()
    for fullname, cur in cur_by.items():
        if fullname not in base_by:
            rows.append(_new_row(cur, baseline))
            continue
        bases_used.add(by_name[fullname].basis)
        rows.extend(by_name[fullname].rows)
    return rows, bases_used


def _new_row(cur: Mapping[str, Any], baseline: Result) -> Row:
    was_failed = {c["fullname"]: c for c in files.failed_cases(baseline)}.get(cur["fullname"])
    if was_failed:
        return lonely_row(cur["name"], NEW, f"failed in the baseline ({was_failed['reason']})")
    return lonely_row(cur["name"], NEW, "not in the baseline")


def _failed_row(case: Mapping[str, Any], base: Mapping[str, Any] | None, baseline: Result) -> Row:
    """A case the current run recorded as out of memory or failed: a regression, unless the
    baseline failed the same way (then nothing can be compared)."""
    if case["kind"] == "oom":
        peak = (samples.info(base) if base else {}).get("peak_memory_mb")
        facts = [f"baseline peak {peak:,.0f} MB" if peak is not None else "not in the baseline"]
        if case.get("peak_memory_mb") is not None:
            facts.append(f"{case['peak_memory_mb']:,.0f} MB reached")
        note = f"out of memory ({'; '.join(facts)})"
    else:
        note = f"failed: {case['reason']}" + ("" if base else " (not in the baseline)")
    before = {c["fullname"]: c for c in files.failed_cases(baseline)}.get(case["fullname"])
    if before is not None and before["kind"] == case["kind"]:
        return lonely_row(case["name"], NA, f"{note}; failed the same way in the baseline")
    return lonely_row(case["name"], REGRESSION, note)


def _absent_row(base: Mapping[str, Any], deselected: bool, settings: GateSettings) -> Row:
    if deselected:
        return lonely_row(base["name"], NOT_SELECTED, "deselected (-k, -m or --gpt2-shard)")
    if not settings.fail_on_missing:
        return lonely_row(base["name"], NOT_SELECTED, "not in the current run (a subset)")
    return lonely_row(
        base["name"], MISSING, "in the baseline but neither measured nor recorded as failed"
    )


def _basis_notes(bases: set[str]) -> list[str]:
    notes = []
    if "ratio" in bases:
        notes.append(
            "time judged on the per-round ratio to the control workload (time/control; "
            "ttft/tpot/decode likewise); raw wall-clock changes that the ratio does not "
            "confirm are shown as drift"
        )
    if "raw" in bases:
        notes.append(
            "time judged on raw per-round times (--time-basis raw, or no control workload "
            "on either side; a side that lacks what the other has is not judged)"
        )
    return notes


def _shard_notes(current: Result) -> list[str]:
    shards = files.shards(current)
    if not shards.get("missing"):
        return []
    absent = ", ".join(f"{i}/{shards['count']}" for i in shards["missing"])
    return [f"shard {absent} never arrived: its cases are missing, not deselected"]


def _calibration_notes(baseline: Result, pooled: int) -> list[str]:
    """``pooled``: the processes the current run was pooled from (``processes``)."""
    if samples.calibration(baseline) is None:
        return [
            "baseline is uncalibrated (one process): thresholds are the configured ones; "
            "`gpt2-bench baseline R1 R2 R3 OUT` pools separate runs into a calibrated baseline"
        ]
    n = processes(baseline)
    current = f", the current run pooled from {pooled}" if pooled > 1 else ""
    return [
        f"baseline calibrated from {n} processes{current}: threshold per benchmark = max(the "
        f"configured effect, k x the baseline's between-process spread x sqrt(1/{pooled} + 1/{n}))"
    ]


def _incomparable(pair: _Pair) -> str:
    """A reason why two entries of the same name measure different things, or ''."""
    b_info, c_info = samples.info(pair.base), samples.info(pair.cur)
    keys = ("device_name", "dtype", "model", "batch_size", "seq_len")
    for key in keys[1:] if pair.settings.device_mismatch else keys:
        b, c = b_info.get(key), c_info.get(key)
        if b is not None and c is not None and b != c:
            return f"not compared: {key} differs ({b} vs {c})"
    return ""


@dataclass(frozen=True)
class _Judged:
    rows: list[Row]
    basis: str  # "ratio", "raw" or "none": how time was judged
    # ((benchmark, metric), one-sided p of the regression direction) of every test made
    tests: list[tuple[tuple[str, str], float | None]] = field(default_factory=list)


def _compare_benchmark(pair: _Pair) -> _Judged:
    mismatch = _incomparable(pair)
    if mismatch:
        return _Judged([lonely_row(pair.name, NA, mismatch)], "none")
    basis = samples.basis(pair.base, pair.cur, pair.settings.time_basis)
    judged: list[tuple[Row, Evidence | None]] = []
    confirmers: dict[str, Row] = {}
    for metric in (TIME, *(m for m in EXTRA_METRICS if m.rounds_key and m.judged)):
        raw = _raw_rounds_row(pair, metric)
        if raw is None:
            continue
        judged.append(raw)
        norm = _normalised_row(pair, metric) if basis.ratio else None
        if norm is not None:
            judged.append(norm)
            confirmers[metric.key] = norm[0]
    done = {r.metric for r, _ in judged}
    for metric in EXTRA_METRICS:
        if metric.judged and metric.key not in done and metric.test != "counter":
            extra = _mean_or_effect_row(pair, metric)
            judged += [extra] if extra is not None else []
    judged += [(row, None) for row in _counter_rows(pair)]
    time_ratio = confirmers.get(TIME.key)
    rows = [_on_basis(r, _confirmer(r, confirmers, time_ratio), basis, pair) for r, _ in judged]
    tests = [((r.benchmark, r.metric), ev.p_worse) for r, ev in judged if ev and ev.tested]
    used = "ratio" if time_ratio is not None else "raw" if basis.raw_by_choice else "none"
    return _Judged(rows, used, tests)


def _counter_rows(pair: _Pair) -> list[Row]:
    """The exact tier (gate/counters.py): judged by equality, outside Holm's family."""
    base, cur = samples.info(pair.base), samples.info(pair.cur)
    return counter_rows(pair.name, pair.cur["fullname"], base, cur, pair.settings)


def _confirmer(r: Row, confirmers: Mapping[str, Row], time_ratio: Row | None) -> Row | None:
    """The normalised row that confirms a wall-clock row: its own where it has per-round values
    (TTFT is not confirmed by the whole call), the time ratio for means such as throughput."""
    metric = METRICS.get(r.metric)
    if metric is TIME or (metric is not None and metric.rounds_key):
        return confirmers.get(r.metric)
    return time_ratio


def _row(
    pair: _Pair, metric: Metric, b: float | None, c: float | None, ev: Evidence | None, note: str
) -> tuple[Row, Evidence | None]:
    """A row judged by the one decision rule, or inconclusive without evidence (the note says
    why), or n/a without both values."""
    thr = pair.threshold(metric) if b is not None else Threshold(0.0)
    return _decided(pair, metric, b, c, ev, note, thr), ev


def _decided(
    pair: _Pair,
    metric: Metric,
    b: float | None,
    c: float | None,
    ev: Evidence | None,
    note: str,
    thr: Threshold,
) -> Row:
    if b is None or c is None or ev is None:
        verdict = NA if b is None or c is None else INCONCLUSIVE
        change = None if b is None or c is None or not b else (c - b) / abs(b)
        return Row(pair.name, metric.key, metric.unit, b, c, change, None, None, None, str(thr),
                   verdict, note)  # fmt: skip
    verdict, why = decide(metric, b, ev, thr, pair.level(metric), pair.better_level)
    shown_p = ev.p_worse if _toward_worse(metric, ev.change) else ev.p_better
    note = "; ".join(filter(None, (note, why)))
    return Row(pair.name, metric.key, metric.unit, b, c, ev.change, ev.low, ev.high, shown_p,
               str(thr), verdict, note)  # fmt: skip


def _toward_worse(metric: Metric, change: float) -> bool:
    return change > 0 if metric.higher_is_worse else change < 0


def _directions(metric: Metric) -> tuple[Alternative, Alternative]:
    """(worse, better) as scipy's alternatives of "current vs baseline"."""
    return ("greater", "less") if metric.higher_is_worse else ("less", "greater")


def _rounds_evidence(pair: _Pair, metric: Metric, b: list[float], c: list[float]) -> Evidence:
    """Per-round samples: Mann-Whitney where it can reach the strictest level, else Welch on log
    rounds; the interval goes with the Mann-Whitney test (Hodges-Lehmann)."""
    low, high = rounds_change_ci(c, b)
    worse, better = _directions(metric)
    test = one_sided_rounds_p if min_rounds_p(len(c), len(b)) < pair.strictest else log_welch_p
    return Evidence(
        change=rounds_change(c, b),
        low=low,
        high=high,
        p_worse=test(c, b, worse),
        p_better=test(c, b, better),
        rounds=min(len(b), len(c)),
    )


def _mean_evidence(
    metric: Metric, b: tuple[float, float, int], c: tuple[float, float, int]
) -> Evidence:
    """(mean, std, n) on each side: Welch's test and the normal interval of the means; the
    change is that of the means, the same statistic the test weighs."""
    low, high = mean_change_ci(c, b)
    worse, better = _directions(metric)
    return Evidence(
        change=(c[0] - b[0]) / abs(b[0]),
        low=low,
        high=high,
        p_worse=one_sided_mean_p(c, b, worse),
        p_better=one_sided_mean_p(c, b, better),
        rounds=min(b[2], c[2]),
    )


def _too_few(n_b: int, n_c: int) -> str:
    return f"too few rounds ({n_b} and {n_c}; {MIN_ROUNDS} needed): not judged"


def _rounds_row(
    pair: _Pair, metric: Metric, b: list[float], c: list[float]
) -> tuple[Row, Evidence | None]:
    b_med, c_med = statistics.median(b), statistics.median(c)
    if min(len(b), len(c)) < MIN_ROUNDS:
        return _row(pair, metric, b_med, c_med, None, _too_few(len(b), len(c)))
    note = ""
    if min_rounds_p(len(c), len(b)) >= pair.strictest:
        note = (
            f"Mann-Whitney cannot reach p < {pair.strictest:.2g} with {len(b)} and {len(c)} "
            "rounds: Welch t-test on log rounds"
        )
    return _row(pair, metric, b_med, c_med, _rounds_evidence(pair, metric, b, c), note)


def _raw_rounds_row(pair: _Pair, metric: Metric) -> tuple[Row, Evidence | None] | None:
    b, c = samples.metric_rounds(pair.base, metric), samples.metric_rounds(pair.cur, metric)
    if b is not None and c is not None:
        return _rounds_row(pair, metric, b, c)
    if metric is not TIME:
        return None  # judged from its mean below
    # no per-round samples on a side: Welch's test from the stats' means
    b_t, c_t = samples.stats_mean_std_n(pair.base), samples.stats_mean_std_n(pair.cur)
    lacking = samples.lacking_rounds(pair.base, pair.cur)
    if min(b_t[2], c_t[2]) < MIN_ROUNDS:
        return _row(pair, TIME, b_t[0], c_t[0], None, _too_few(b_t[2], c_t[2]))
    return _row(pair, TIME, b_t[0], c_t[0], _mean_evidence(TIME, b_t, c_t), lacking)


def _normalised_row(pair: _Pair, metric: Metric) -> tuple[Row, Evidence | None] | None:
    around = samples.has_control_around(pair.base, pair.cur)
    b = samples.normalised_rounds(pair.base, metric, around)
    c = samples.normalised_rounds(pair.cur, metric, around)
    if b is None or c is None:
        return None
    row, ev = _rounds_row(pair, NORMALISED[metric.key], b, c)
    return (row if pair.settings.device_mismatch else _speed_check(row, pair)), ev


def _speed_check(row: Row, pair: _Pair) -> Row:
    """A normalised verdict, pass included, is inconclusive when the machine's own speed (the
    control's median) moved beyond the tolerance: the ratio is then no fair measure of the code
    (measured here: the control 80% slower in one process, its step 25% slower than that)."""
    b, c = samples.control_median(pair.base), samples.control_median(pair.cur)
    if row.verdict in (NA, INCONCLUSIVE) or not b or not c:
        return row
    speed = max(b, c) / min(b, c) - 1  # the same for a machine 2x slower and 2x faster
    tolerance = control_tolerance(pair.settings, samples.control_kind(pair.cur))
    if speed <= tolerance:
        return row
    note = (
        f"machine speed changed: control {b * 1e3:.3g} -> {c * 1e3:.3g} ms ({speed:.0%} apart, "
        f"tolerance {tolerance:.0%}); rerun, or gate with gpt2-bench ab"
    )
    return replace(row, verdict=INCONCLUSIVE, note=note)


def control_tolerance(settings: GateSettings, kind: str) -> float:
    """The tolerance set, else the default of the control's kind (``twin-train`` -> twin)."""
    if settings.control_tolerance is not None:
        return settings.control_tolerance
    return CONTROL_TOLERANCES.get(kind.split("-")[0], CONTROL_TOLERANCES["matmul"])


def _mean_or_effect_row(pair: _Pair, metric: Metric) -> tuple[Row, Evidence | None] | None:
    """An extra_info metric from its mean and `_std` (Welch), or memory by effect alone."""
    b_val = samples.info(pair.base).get(metric.key)
    c_val = samples.info(pair.cur).get(metric.key)
    if b_val is None and c_val is None:
        return None
    if b_val is None:
        thr = Threshold(0.0)
        row = _decided(pair, metric, None, c_val, None, "not recorded in the baseline", thr)
        return replace(row, verdict=NEW), None
    if c_val is None:
        return _row(pair, metric, b_val, None, None, "not recorded in the current run")
    if metric.test == "effect":
        return _memory_row(pair, metric, float(b_val), float(c_val))
    b_r, c_r = samples.rate_rounds(pair.base, metric), samples.rate_rounds(pair.cur, metric)
    if b_r is not None and c_r is not None:
        return _rounds_row(pair, metric, b_r, c_r)
    b_t, c_t = samples.mean_std_n(pair.base, metric.key), samples.mean_std_n(pair.cur, metric.key)
    if b_t is None or c_t is None:
        side = "baseline" if b_t is None else "current run"
        return _row(pair, metric, b_val, c_val, None, f"no {metric.std_key} in the {side}")
    if min(b_t[2], c_t[2]) < MIN_ROUNDS:
        return _row(pair, metric, b_val, c_val, None, _too_few(b_t[2], c_t[2]))
    return _row(pair, metric, b_t[0], c_t[0], _mean_evidence(metric, b_t, c_t), "")


def _memory_row(
    pair: _Pair, metric: Metric, b_val: float, c_val: float
) -> tuple[Row, Evidence | None]:
    kind_b = samples.info(pair.base).get("memory_kind")
    kind_c = samples.info(pair.cur).get("memory_kind")
    ev = Evidence(change=(c_val - b_val) / abs(b_val) if b_val else 0.0, tested=False)
    if kind_b != kind_c:
        note = f"memory_kind differs: {kind_b} vs {kind_c}"
        return replace(_row(pair, metric, b_val, c_val, ev, note)[0], verdict=NA), None
    thr = pair.threshold(metric)
    std = samples.info(pair.base).get(metric.std_key) or 0.0
    band = NOISE_BAND_SIGMAS * float(std)
    note = ""
    if band > thr.floor and not metric.exact:
        thr = replace(thr, floor=band)
        note = f"noise band {band:.3g} {metric.unit}: {NOISE_BAND_SIGMAS:g} x the baseline's std"
    if not b_val and c_val:  # nothing before, something now: a change of any size
        ev = Evidence(change=math.inf, tested=False)
    return _decided(pair, metric, b_val, c_val, ev, note, thr), ev


def _on_basis(r: Row, confirmer: Row | None, basis: samples.Basis, pair: _Pair) -> Row:
    """A wall-clock row on the basis the two sides allow (docs/gate.md, "One decision rule"):
    its change is the machine's (drift) only when the control moved the same way and the
    normalised row does not confirm it; without a way to tell, it is not judged."""
    metric = METRICS.get(r.metric)
    if metric is None or r.verdict in (NA, NEW):
        return r
    if pair.settings.stack_change and (metric.time_derived or metric.threshold_of):
        return _stack_row(r, pair)
    if not metric.time_derived:
        return r
    if confirmer is None and pair.settings.device_mismatch:
        return replace(r, verdict=INCONCLUSIVE, note="device differs and no control ratio")
    if basis.raw_by_choice:
        return r
    if confirmer is None:
        return _unconfirmed(r, metric, basis, pair)
    if r.verdict == confirmer.verdict or r.verdict == PASS:
        return r
    if pair.settings.device_mismatch or basis.explains(metric, r.change):
        return replace(r, verdict=DRIFT, note=f"not confirmed by {confirmer.metric}; "
                       f"{basis.control_note}")  # fmt: skip
    return r  # the control did not move this way: the wall-clock change is judged


def _unconfirmed(r: Row, metric: Metric, basis: samples.Basis, pair: _Pair) -> Row:
    """A wall-clock row with no normalised row to confirm it. Judged as measured only where the
    control was measured on both sides and did not move; otherwise not judged, saying which
    file lacks what (never a silent change of basis)."""
    lacking = basis.lacking or samples.lacking_list(pair.base, pair.cur, metric.rounds_key)
    if basis.control_unmoved and r.verdict != INCONCLUSIVE:
        note = (
            f"judged on wall-clock: {lacking}, and the control did not move ({basis.control_note})"
        )
        return replace(r, note="; ".join(filter(None, (r.note, note))))
    note = f"not judged: {lacking}; or gate with --time-basis raw"
    return replace(r, verdict=INCONCLUSIVE, note=note)


def _stack_row(r: Row, pair: _Pair) -> Row:
    """The software stack under the control changed: the control moved with it, so a time row
    never passes (nor improves) on its own; a regression stays one."""
    if r.verdict in (REGRESSION, INCONCLUSIVE):
        return r
    stack = ", ".join(pair.settings.stack_change)
    note = f"stack differs ({stack}): judge it with gpt2-bench ab --base-python"
    return replace(r, verdict=INCONCLUSIVE, note=note)


def gate_documents(
    baseline: Result,
    current: Result,
    settings: GateSettings | None = None,
    allow_device_mismatch: bool = False,
) -> GateResult:
    """Check the environments (raises files.UnusableInput on a device mismatch) and compare."""
    settings = settings or GateSettings()
    env = check_environment(baseline, current, allow_device_mismatch)
    env_notes = list(env.notes)
    settings = replace(settings, stack_change=env.stack)
    if env.device_mismatch:
        settings = replace(settings, device_mismatch=True)
        env_notes.append(
            "devices differ: time judged on the control ratio only (raw wall-clock rows are "
            "information); a case without a control ratio is inconclusive"
        )
    result = compare(baseline, current, settings)
    return replace(result, notes=(*env_notes, *result.notes))
