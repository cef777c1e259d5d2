"""The change points of every series of a history: what the gate would judge at each boundary."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from gpt2_fixtures.results import gate
from gpt2_fixtures.results.history import detect
from gpt2_fixtures.results.history import series as hs
from gpt2_fixtures.results.metrics import TIME, TIME_RATIO, Metric

# time/control falls back to raw time for a series without an aligned control
DEFAULT_METRICS = ("time/control", "peak_memory_mb")
MIN_SEGMENT = 3  # points on each side of a change: one outlier run is never a change point


@dataclass
class History:
    groups: list[hs.DeviceGroup]
    metrics: tuple[Metric, ...]
    changes: list[detect.ChangePoint] = field(default_factory=list)
    series: int = 0  # series analysed
    notes: list[str] = field(default_factory=list)

    @property
    def in_place(self) -> list[detect.ChangePoint]:
        return [c for c in self.changes if c.still_in_place]

    @property
    def exit_code(self) -> int:
        return 1 if self.in_place else 0

    def newest_first(self) -> list[detect.ChangePoint]:
        return sorted(self.changes, key=lambda c: (c.when, c.benchmark, c.metric), reverse=True)


def analyse(
    groups: list[hs.DeviceGroup],
    metrics: tuple[Metric, ...],
    settings: gate.GateSettings,
    min_size: int = MIN_SEGMENT,
) -> History:
    history = History(groups, metrics)
    for group in groups:
        keys = hs.benchmark_keys(group)
        # Bonferroni over the group's benchmarks: the level where the gate's Holm step-down starts
        per_test = replace(settings, alpha=settings.alpha / max(1, len(keys)))
        for key in keys:
            for metric in metrics:
                series = detect.build_series(group, key, metric)
                if series is None and metric == TIME_RATIO and TIME not in metrics:
                    series = detect.build_series(group, key, TIME)
                if series is None:
                    continue
                history.series += 1
                history.changes.extend(detect.analyse(series, per_test, min_size))
    return history
