"""Samples out of one validated benchmark entry: per-round times, control ratios, per-round
latencies, and the between-process spreads a calibrated baseline stores."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from gpt2_fixtures.results.metrics import TIME, Metric

CALIBRATION_KEY = "gpt2_calibration"


def info(bench: Mapping[str, Any]) -> Mapping[str, Any]:
    return bench.get("extra_info") or {}


def round_times(bench: Mapping[str, Any]) -> list[float] | None:
    """Per-round seconds (`stats.data`), or None when the result was saved without them."""
    data = bench.get("stats", {}).get("data")
    if isinstance(data, list) and data:
        return [float(x) for x in data]
    return None


def control_rounds(bench: Mapping[str, Any]) -> list[float] | None:
    """Per-round control seconds aligned with `stats.data`, or None."""
    times, control = round_times(bench), info(bench).get("control_round_s")
    if times is None or not isinstance(control, list) or len(control) != len(times):
        return None
    return [float(c) for c in control]


def control_ratios(bench: Mapping[str, Any]) -> list[float] | None:
    """Per-round round_time / control_time, or None when the control is absent or misaligned."""
    times, control = round_times(bench), control_rounds(bench)
    if times is None or control is None:
        return None
    return [t / c for t, c in zip(times, control, strict=True)]


def control_kind(bench: Mapping[str, Any]) -> str:
    """The control workload a result was normalised to: results of 0.1.x carry no
    ``control_kind`` and used the matmul loop. Ratios to different controls do not compare."""
    return str(info(bench).get("control_kind") or "matmul")


def control_median(bench: Mapping[str, Any]) -> float | None:
    """Median seconds of the control workload over the rounds, when it was recorded."""
    control = info(bench).get("control_round_s")
    if not isinstance(control, list) or not control:
        return None
    return float(statistics.median(control))


def metric_rounds(bench: Mapping[str, Any], metric: Metric) -> list[float] | None:
    """Per-round values of a metric in its unit (time in ms), or None when not recorded."""
    if metric is TIME:
        times = round_times(bench)
        return None if times is None else [t * 1e3 for t in times]
    raw = info(bench).get(metric.rounds_key) if metric.rounds_key else None
    if not isinstance(raw, list) or round_times(bench) is None:
        return None
    if not metric.rounds_rate:
        return [float(x) for x in raw]
    batch = info(bench).get("batch_size") or 1
    return [float(batch) * 1e3 / float(x) for x in raw]


def normalised_rounds(bench: Mapping[str, Any], metric: Metric) -> list[float] | None:
    """Per-round values normalised by the control: a time divided by the control's seconds, a
    rate multiplied by them (so both stay still when the whole machine slows down)."""
    values, control = metric_rounds(bench, metric), control_rounds(bench)
    if values is None or control is None:
        return None
    if metric.higher_is_worse:  # a time in ms over the control's seconds: a plain ratio
        return [v / 1e3 / c for v, c in zip(values, control, strict=True)]
    return [v * c for v, c in zip(values, control, strict=True)]


def mean_std_n(bench: Mapping[str, Any], key: str) -> tuple[float, float, int] | None:
    """(mean, std, rounds) of an extra_info mean with its `_std`, or None without the std."""
    mean, std = info(bench).get(key), info(bench).get(f"{key}_std")
    if mean is None or std is None:
        return None
    return float(mean), float(std), int(bench["stats"]["rounds"])


def calibration(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The between-process spreads of a calibrated baseline (`gpt2-bench baseline R1 R2 ...`)."""
    section = doc.get(CALIBRATION_KEY)
    return section if isinstance(section, dict) else None


def spread(doc: Mapping[str, Any], fullname: str, metric_key: str) -> float | None:
    """A benchmark's between-process spread of one metric (a fraction of the metric), or None
    when the baseline is not calibrated for it."""
    section = calibration(doc)
    if section is None:
        return None
    value = (section.get("benchmarks") or {}).get(fullname, {}).get(metric_key)
    return float(value) if isinstance(value, int | float) else None


def typical_spreads(doc: Mapping[str, Any]) -> dict[tuple[str, str], float]:
    """Per metric, the median spread over the baseline's benchmarks, keyed ``("", metric)``,
    and over those of each phase, keyed ``(phase, metric)``. Three processes estimate one
    benchmark's spread poorly (two degrees of freedom); the medians are steadier floors under
    it. The phase's matters where the grid's is lower: a CPU training step's resident peak
    moves by a logits buffer between processes, an inference step's hardly."""
    section = calibration(doc) or {}
    phases = {b.get("fullname"): phase(b) for b in doc.get("benchmarks") or []}
    by_group: dict[tuple[str, str], list[float]] = {}
    for fullname, spreads in (section.get("benchmarks") or {}).items():
        for key, value in spreads.items():
            if not isinstance(value, int | float):
                continue
            by_group.setdefault(("", key), []).append(float(value))
            if phases.get(fullname):
                by_group.setdefault((phases[fullname], key), []).append(float(value))
    return {group: statistics.median(values) for group, values in by_group.items()}


def phase(bench: Mapping[str, Any]) -> str:
    """The benchmark's phase (``extra_info.phase``: train, infer, ...), or '' when unknown."""
    return str(info(bench).get("phase") or "")
