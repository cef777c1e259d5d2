"""Samples out of one validated benchmark entry: per-round times, control ratios, per-round
latencies, and the between-process spreads a calibrated baseline stores."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpt2_fixtures.results.files import CALIBRATION_KEY
from gpt2_fixtures.results.gate.stats import rounds_change_ci
from gpt2_fixtures.results.metrics import TIME, Metric


def info(bench: Mapping[str, Any]) -> Mapping[str, Any]:
    return bench.get("extra_info") or {}


def round_times(bench: Mapping[str, Any]) -> list[float] | None:
    """Per-round seconds (`stats.data`), or None when the result was saved without them."""
    data = bench.get("stats", {}).get("data")
    if isinstance(data, list) and data:
        return [float(x) for x in data]
    return None


def rate_rounds(bench: Mapping[str, Any], metric: Metric) -> list[float] | None:
    """Per-round values of a rate recorded from the median round (``metric.from_time``): the
    value x median seconds / each round's seconds; None without rounds or the value."""
    times, value = round_times(bench), info(bench).get(metric.key)
    if times is None or not isinstance(value, int | float) or not metric.from_time:
        return None
    median = statistics.median(times)
    return [float(value) * median / t for t in times]


AFTER_KEY = "control_after_round_s"


def _aligned(bench: Mapping[str, Any], key: str) -> list[float] | None:
    times, values = round_times(bench), info(bench).get(key)
    if times is None or not isinstance(values, list) or len(values) != len(times):
        return None
    return [float(c) for c in values]


def control_rounds(bench: Mapping[str, Any], around: bool = True) -> list[float] | None:
    """Per-round control seconds aligned with `stats.data`, or None. With ``around``, where the
    control also ran right after every round (`control_after_round_s`, since 0.5.0): the
    geometric mean of the runs before and after each round, which follows the machine's speed
    during the round better than the one before it alone (docs/measuring.md, "The control on
    both sides of a round"); without it, the run before."""
    before = _aligned(bench, "control_round_s")
    after = _aligned(bench, AFTER_KEY) if around and before is not None else None
    if before is None or after is None:
        return before
    return [math.sqrt(b * a) for b, a in zip(before, after, strict=True)]


def has_control_around(*benches: Mapping[str, Any]) -> bool:
    """Every side recorded the control after each round too: only then are both sides judged on
    the controls around their rounds (one basis for both sides, or none)."""
    return all(_aligned(b, AFTER_KEY) is not None for b in benches)


def control_ratios(bench: Mapping[str, Any], around: bool = True) -> list[float] | None:
    """Per-round round_time / control_time (``control_rounds``), or None when the control is
    absent or misaligned."""
    times, control = round_times(bench), control_rounds(bench, around)
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


def normalised_rounds(
    bench: Mapping[str, Any], metric: Metric, around: bool = True
) -> list[float] | None:
    """Per-round values normalised by the control (``control_rounds``): a time divided by the
    control's seconds, a rate multiplied by them (so both stay still when the whole machine
    slows down)."""
    values, control = metric_rounds(bench, metric), control_rounds(bench, around)
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


def stats_mean_std_n(bench: Mapping[str, Any]) -> tuple[float, float, int]:
    """(mean ms, std ms, rounds) of pytest-benchmark's stats, for a result without rounds."""
    stats = bench["stats"]
    return stats["mean"] * 1e3, (stats.get("stddev") or 0.0) * 1e3, int(stats["rounds"])


def _sides(base: Mapping[str, Any], cur: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [("baseline", base), ("current run", cur)]


def lacking_rounds(base: Mapping[str, Any], cur: Mapping[str, Any]) -> str:
    """Which side was saved without per-round samples, and how to record them; or ''."""
    sides = [side for side, b in _sides(base, cur) if round_times(b) is None]
    if not sides:
        return ""
    return (
        f"the {' and the '.join(sides)} has no stats.data (per-round samples: save with "
        "--benchmark-json, or --benchmark-save-data with --benchmark-autosave)"
    )


def lacking_list(base: Mapping[str, Any], cur: Mapping[str, Any], key: str | None) -> str:
    """Which side lacks the per-round list ``key`` aligned with its rounds; or ''."""
    if key is None:
        return ""
    sides = [
        side
        for side, b in _sides(base, cur)
        if not (isinstance(info(b).get(key), list) and round_times(b) is not None)
    ]
    return f"the {' and the '.join(sides)} has no {key}" if sides else ""


def _lacking_control(base: Mapping[str, Any], cur: Mapping[str, Any]) -> str:
    """Why the two sides cannot be normalised by one control, or ''."""
    rounds = lacking_rounds(base, cur)
    if rounds:
        return rounds
    no_kind = [side for side, b in _sides(base, cur) if not info(b).get("control_kind")]
    if no_kind:
        return f"the {' and the '.join(no_kind)} records no control_kind"
    b_kind, c_kind = control_kind(base), control_kind(cur)
    if b_kind != c_kind:
        return f"control workloads differ: {b_kind} vs {c_kind}"
    return lacking_list(base, cur, "control_round_s")


@dataclass(frozen=True)
class Basis:
    """How the two sides' time can be judged: on the ratio to one control, and whether that
    control moved (the machine's speed) between them."""

    ratio: bool  # both sides carry aligned rounds of the same control
    raw_by_choice: bool  # --time-basis raw, or no control on either side
    lacking: str  # why there is no ratio ('' when there is)
    # the control's change (a fraction; + is slower) and its 95% interval, where measured
    control_change: float | None = None
    control_low: float | None = None
    control_high: float | None = None

    @property
    def control_unmoved(self) -> bool:
        """The control's interval holds 0: no evidence that the machine's speed moved."""
        low, high = self.control_low, self.control_high
        return low is not None and high is not None and low <= 0 <= high

    def explains(self, metric: Metric, change: float | None) -> bool:
        """The control moved the way that accounts for this change: a slower machine raises
        times and lowers rates."""
        low, high = self.control_low, self.control_high
        if change is None or low is None or high is None or self.control_unmoved:
            return False
        slower = low > 0
        return slower == (change > 0) if metric.higher_is_worse else slower == (change < 0)

    @property
    def control_note(self) -> str:
        if self.control_change is None:
            return ""
        interval = ""
        if self.control_low is not None and self.control_high is not None:
            interval = f" [{self.control_low:+.1%}, {self.control_high:+.1%}]"
        return f"control {self.control_change:+.1%}{interval}"


def basis(base: Mapping[str, Any], cur: Mapping[str, Any], time_basis: str) -> Basis:
    """What the two sides allow, and how far the control moved between them."""
    lacking = _lacking_control(base, cur)
    # the control's own change: its runs before the rounds, as recorded
    b_ctrl, c_ctrl = control_rounds(base, around=False), control_rounds(cur, around=False)
    change = low = high = None
    if b_ctrl and c_ctrl and control_kind(base) == control_kind(cur):
        b_med = statistics.median(b_ctrl)
        change = statistics.median(c_ctrl) / b_med - 1
        low, high = rounds_change_ci(c_ctrl, b_ctrl)
    # results with no control on either side (not from gpt2-bench's benchmarks) are raw on both
    # sides: no basis changes between them, and the comparison's notes say so
    neither = not any(info(b).get("control_round_s") for b in (base, cur))
    return Basis(
        ratio=time_basis == "auto" and not lacking,
        raw_by_choice=time_basis == "raw" or neither,
        lacking=lacking,
        control_change=change,
        control_low=low,
        control_high=high,
    )
