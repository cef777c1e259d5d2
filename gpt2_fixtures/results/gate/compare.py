"""Comparing two results: every baseline benchmark gets a verdict, every metric a row.

Rules and their reasons: docs/gate.md.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gpt2_fixtures.results import baseline as baseline_io
from gpt2_fixtures.results import files
from gpt2_fixtures.results.gate import samples
from gpt2_fixtures.results.gate.model import (
    CALIBRATED_TIME_REL,
    CONTROL_TOLERANCES,
    DRIFT,
    IMPROVED,
    INCONCLUSIVE,
    MISSING,
    NA,
    NEW,
    NOT_SELECTED,
    PASS,
    REGRESSION,
    TIME_REL,
    GateResult,
    GateSettings,
    Row,
    Threshold,
    lonely_row,
)
from gpt2_fixtures.results.gate.stats import (
    MIN_ROUNDS,
    holm_levels,
    judge,
    log_welch_p,
    mean_change_ci,
    min_rounds_p,
    one_sided_mean_p,
    one_sided_rounds_p,
    rounds_change_ci,
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
    alpha: float  # per-test significance level at the start of Holm's step-down (Bonferroni)
    baseline_doc: Result
    # the median spread per ("", metric) over the grid and per (phase, metric)
    typical: Mapping[tuple[str, str], float]
    # (name, metric) -> the level Holm's step-down granted a test it rejected
    levels: Mapping[tuple[str, str], float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.cur["name"])

    def level(self, metric: Metric) -> float:
        """The significance level this benchmark's test of ``metric`` is judged at."""
        return self.levels.get((self.name, metric.key), self.alpha)

    def threshold(self, metric: Metric) -> Threshold:
        """The configured threshold, raised for a calibrated baseline of n processes to
        k x spread x sqrt(1 + 1/n): the current process differs from the pooled baseline by one
        process's spread plus that of the mean of n. The spread is the benchmark's own, at least
        the median over the grid's benchmarks and over those of its phase."""
        thr, explicit = self.settings.thresholds.find(self.name, self.cur["fullname"], metric.key)
        own = samples.spread(self.baseline_doc, self.base["fullname"], metric.key)
        if own is None:
            return thr
        if not explicit and thr.rel == TIME_REL:
            # the measured spread, not the uncalibrated default, guards against process noise
            thr = Threshold(CALIBRATED_TIME_REL, thr.floor)
        of_phase = self.typical.get((samples.phase(self.base), metric.key), 0.0)
        spread = max(own, of_phase, self.typical.get(("", metric.key), 0.0))
        n = int((samples.calibration(self.baseline_doc) or {}).get("processes") or 1)
        k = self.settings.spread_k
        calibrated = k * spread * math.sqrt(1 + 1 / n)
        if calibrated <= thr.rel:
            return Threshold(thr.rel, thr.floor, f"calibrated: {k:g} x {spread:.2%} spread is less")
        return Threshold(calibrated, thr.floor, f"{k:g} x {spread:.2%} between-process spread")


def compare(baseline: Result, current: Result, settings: GateSettings | None = None) -> GateResult:
    """Gate `current` against `baseline`; raises files.UnusableInput on an unusable document."""
    settings = settings or GateSettings()
    files.validate_result(baseline, "baseline")
    files.validate_result(current, "current run")
    base_by = {b["fullname"]: b for b in baseline["benchmarks"]}
    cur_by = {b["fullname"]: b for b in current["benchmarks"]}
    shared = [f for f in cur_by if f in base_by]
    # A grid of 25 cases tested at 1% each would raise a false alarm in about 1 run of 5 by
    # chance alone: alpha bounds the whole comparison, per metric, by Holm's step-down over the
    # benchmarks compared. It starts at Bonferroni's alpha / m and is as safe, but a test that
    # comes after rejected ones is held to alpha / (m - rejected), so a change that slows every
    # case is not judged as if each case were the only one moved (Holm 1979).
    alpha = settings.alpha / max(1, len(shared))
    typical = samples.typical_spreads(baseline)
    pairs = [
        _Pair(base_by[f], cur, settings, alpha, baseline, typical)
        for f, cur in cur_by.items()
        if f in base_by
    ]
    judged = [_compare_benchmark(pair) for pair in pairs]
    tests = [(r.benchmark, r.metric, r.p_value) for bench_rows, _ in judged for r in bench_rows]
    levels = holm_levels(tests, settings.alpha, len(shared))
    if levels:  # p-values do not depend on the levels: judge again at the levels granted
        judged = [_compare_benchmark(replace(pair, levels=levels)) for pair in pairs]
    by_name = {pair.cur["fullname"]: bench for pair, bench in zip(pairs, judged, strict=True)}
    rows: list[Row] = []
    bases_used: set[str] = set()
    for fullname, cur in cur_by.items():
        if fullname not in base_by:
            rows.append(_new_row(cur, baseline))
            continue
        bench_rows, basis = by_name[fullname]
        bases_used.add(basis)
        rows.extend(bench_rows)
    failed = [c for c in files.failed_cases(current) if c["fullname"] not in cur_by]
    rows.extend(_failed_row(case, base_by.get(case["fullname"]), baseline) for case in failed)
    failed_names = {c["fullname"] for c in failed}
    absent = [b for f, b in base_by.items() if f not in cur_by and f not in failed_names]
    deselected = files.not_selected(current)
    for b in absent:
        rows.append(_absent_row(b, b["fullname"] in deselected, settings))
    notes = [*_basis_notes(bases_used), *_calibration_notes(baseline)]
    if len(shared) > 1:
        notes.append(
            f"significance: alpha {settings.alpha:g} for the whole comparison, per metric, by "
            f"Holm's step-down over {len(shared)} benchmarks (the smallest p needs "
            f"p < {alpha:.2g}, the next p < {settings.alpha / max(1, len(shared) - 1):.2g}, ...)"
        )
    return GateResult(
        rows=tuple(rows),
        new=tuple(b["name"] for f, b in cur_by.items() if f not in base_by),
        missing=tuple(r.benchmark for r in rows if r.verdict == MISSING),
        notes=tuple(notes),
        settings=settings,
        failed_cases=tuple(c["name"] for c in failed),
        compared=len(shared),
    )


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
            "time judged on raw per-round times (no aligned control_round_s of the same "
            "control_kind on both sides)"
        )
    return notes


def _calibration_notes(baseline: Result) -> list[str]:
    section = samples.calibration(baseline)
    if section is None:
        return [
            "baseline is uncalibrated (one process): thresholds are the configured ones; "
            "`gpt2-bench baseline R1 R2 R3 OUT` pools separate runs into a calibrated baseline"
        ]
    return [
        f"baseline calibrated from {section.get('processes')} processes: threshold per "
        "benchmark = max(the configured effect, k x its between-process spread x "
        "sqrt(1 + 1/processes))"
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


def _compare_benchmark(pair: _Pair) -> tuple[list[Row], str]:
    mismatch = _incomparable(pair)
    if mismatch:
        return [lonely_row(pair.name, NA, mismatch)], "none"
    b_kind, c_kind = samples.control_kind(pair.base), samples.control_kind(pair.cur)
    same_control = b_kind == c_kind
    use_ratio = pair.settings.time_basis == "auto" and same_control
    rows: list[Row] = []
    confirmers: dict[str, Row] = {}
    for metric in (TIME, *(m for m in EXTRA_METRICS if m.rounds_key)):
        raw = _raw_rounds_row(pair, metric)
        if raw is None:
            continue
        if metric is TIME and not same_control:
            differ = f"control workloads differ: {b_kind} vs {c_kind}"
            raw = replace(raw, note="; ".join(filter(None, (differ, raw.note))))
        rows.append(raw)
        norm = _normalised_row(pair, metric) if use_ratio else None
        if norm is not None:
            rows.append(norm)
            confirmers[metric.key] = norm
    ratio_row = confirmers.get(TIME.key)
    judged = {r.metric for r in rows}
    for metric in EXTRA_METRICS:
        extra = None if metric.key in judged else _mean_or_effect_row(pair, metric)
        rows += [extra] if extra is not None else []
    rows = [_confirm(r, confirmers.get(r.metric, ratio_row), pair.settings) for r in rows]
    return rows, "ratio" if ratio_row is not None else "raw"


def _row(pair: _Pair, metric: Metric, b: float | None, c: float | None, **kw: Any) -> Row:
    """A row judged by effect (and test, when p_value is given), or n/a without both values."""
    thr = kw.pop("threshold", None) or pair.threshold(metric)
    note, p, low, high = kw.get("note", ""), kw.get("p"), kw.get("low"), kw.get("high")
    if b is None or c is None or kw.get("verdict") in (NA, INCONCLUSIVE):
        verdict = kw.get("verdict") or NA
        change = None if b is None or c is None or not b else (c - b) / abs(b)
        return Row(
            pair.name, metric.key, metric.unit, b, c, change, low, high, p, str(thr), verdict, note
        )
    change, verdict = judge(metric, b, c, p, thr, pair.level(metric))
    return Row(
        pair.name, metric.key, metric.unit, b, c, change, low, high, p, str(thr), verdict, note
    )


def _rounds_row(pair: _Pair, metric: Metric, b: list[float], c: list[float], note: str) -> Row:
    """A per-round metric: Mann-Whitney where it can reach alpha, else Welch on log rounds;
    below MIN_ROUNDS rounds a side, no verdict."""
    b_med, c_med = statistics.median(b), statistics.median(c)
    if min(len(b), len(c)) < MIN_ROUNDS:
        why = f"too few rounds ({len(b)} and {len(c)}; {MIN_ROUNDS} needed): not judged"
        return _row(pair, metric, b_med, c_med, verdict=INCONCLUSIVE, note=why)
    low, high = rounds_change_ci(c, b)
    # the test is chosen at the strictest level, so p does not change with Holm's levels
    if min_rounds_p(len(c), len(b)) < pair.alpha:
        p = one_sided_rounds_p(c, b)
    else:
        p = log_welch_p(c, b)
        fallback = (
            f"Mann-Whitney cannot reach p < {pair.alpha:.2g} with {len(b)} and {len(c)} "
            "rounds: Welch t-test on log rounds"
        )
        note = "; ".join(filter(None, (note, fallback)))
        row = _row(pair, metric, b_med, c_med, p=p, low=low, high=high, note=note)
        if row.verdict == PASS and abs(row.change or 0) > pair.threshold(metric).rel:
            # beyond the threshold, and the fallback cannot tell: not a pass
            why = f"too few rounds ({len(b)} and {len(c)}) to tell a change of this size"
            return replace(row, verdict=INCONCLUSIVE, note=why)
        return row
    return _row(pair, metric, b_med, c_med, p=p, low=low, high=high, note=note)


def _raw_rounds_row(pair: _Pair, metric: Metric) -> Row | None:
    b, c = samples.metric_rounds(pair.base, metric), samples.metric_rounds(pair.cur, metric)
    if b is not None and c is not None:
        return _rounds_row(pair, metric, b, c, "")
    if metric is not TIME:
        return None  # judged from its mean below
    # no per-round samples on a side: Welch's test from the stats
    bs, cs = pair.base["stats"], pair.cur["stats"]
    b_t = (bs["mean"] * 1e3, (bs.get("stddev") or 0.0) * 1e3, int(bs["rounds"]))
    c_t = (cs["mean"] * 1e3, (cs.get("stddev") or 0.0) * 1e3, int(cs["rounds"]))
    b_med, c_med = bs["median"] * 1e3, cs["median"] * 1e3
    if min(b_t[2], c_t[2]) < MIN_ROUNDS:
        why = f"too few rounds ({b_t[2]} and {c_t[2]}; {MIN_ROUNDS} needed): not judged"
        return _row(pair, TIME, b_med, c_med, verdict=INCONCLUSIVE, note=why)
    low, high = mean_change_ci(c_t, b_t)
    p = one_sided_mean_p(c_t, b_t)
    return _row(pair, TIME, b_med, c_med, p=p, low=low, high=high, note="no per-round samples")


def _normalised_row(pair: _Pair, metric: Metric) -> Row | None:
    b = samples.normalised_rounds(pair.base, metric)
    c = samples.normalised_rounds(pair.cur, metric)
    if b is None or c is None:
        return None
    row = _rounds_row(pair, NORMALISED[metric.key], b, c, "")
    return row if pair.settings.device_mismatch else _speed_check(row, pair)


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


def _mean_or_effect_row(pair: _Pair, metric: Metric) -> Row | None:
    """An extra_info metric from its mean and `_std` (Welch), or memory by effect alone."""
    b_val = samples.info(pair.base).get(metric.key)
    c_val = samples.info(pair.cur).get(metric.key)
    if b_val is None and c_val is None:
        return None
    if b_val is None:
        return _row(pair, metric, None, c_val, verdict=NEW, note="not recorded in the baseline")
    if c_val is None:
        return _row(pair, metric, b_val, None, note="not recorded in the current run")
    if metric.test == "effect":
        return _memory_row(pair, metric, float(b_val), float(c_val))
    b_t, c_t = samples.mean_std_n(pair.base, metric.key), samples.mean_std_n(pair.cur, metric.key)
    if b_t is None or c_t is None:
        return _row(pair, metric, b_val, c_val, note="no _std recorded: effect only")
    low, high = mean_change_ci(c_t, b_t)
    return _row(pair, metric, b_val, c_val, p=one_sided_mean_p(c_t, b_t), low=low, high=high)


def _memory_row(pair: _Pair, metric: Metric, b_val: float, c_val: float) -> Row:
    kind_b = samples.info(pair.base).get("memory_kind")
    kind_c = samples.info(pair.cur).get("memory_kind")
    if kind_b != kind_c:
        note = f"memory_kind differs: {kind_b} vs {kind_c}"
        return _row(pair, metric, b_val, c_val, verdict=NA, note=note)
    thr = pair.threshold(metric)
    std = samples.info(pair.base).get(metric.std_key) or 0.0
    band = NOISE_BAND_SIGMAS * float(std)
    note = ""
    if band > thr.floor:
        thr = Threshold(thr.rel, band, thr.why)
        note = f"noise band {band:.3g} {metric.unit}: {NOISE_BAND_SIGMAS:g} x the baseline's std"
    return _row(pair, metric, b_val, c_val, threshold=thr, note=note)


def _confirm(r: Row, confirmer: Row | None, settings: GateSettings) -> Row:
    """A wall-clock change counts only when its control-normalised row agrees: a regression or
    an improvement there that the ratio does not show is the machine (drift)."""
    metric = METRICS.get(r.metric)
    if metric is None or not metric.time_derived or r.verdict in (NA, INCONCLUSIVE, NEW):
        return r
    if confirmer is None and settings.device_mismatch:
        return replace(r, verdict=INCONCLUSIVE, note="device differs and no control ratio")
    if confirmer is None or r.verdict not in (REGRESSION, IMPROVED):
        return r
    if confirmer.verdict == r.verdict:
        return r
    if confirmer.verdict == INCONCLUSIVE and r.verdict == REGRESSION:
        return replace(r, verdict=INCONCLUSIVE, note=f"{confirmer.metric} is inconclusive")
    return replace(r, verdict=DRIFT, note=f"not confirmed by {confirmer.metric}")


def gate_documents(
    baseline: Result,
    current: Result,
    settings: GateSettings | None = None,
    allow_device_mismatch: bool = False,
) -> GateResult:
    """Check the environments (raises files.UnusableInput on a device mismatch) and compare."""
    settings = settings or GateSettings()
    env_notes = baseline_io.check_environment(baseline, current, allow_device_mismatch)
    if allow_device_mismatch and any(n.startswith("device differs") for n in env_notes):
        settings = replace(settings, device_mismatch=True)
        env_notes.append(
            "devices differ: time judged on the control ratio only (raw wall-clock rows are "
            "information); a case without a control ratio is inconclusive"
        )
    result = compare(baseline, current, settings)
    return replace(result, notes=(*env_notes, *result.notes))
