"""The one registry of judged metrics: key, unit, direction, and how the gate tests each.

The gate, A/B pooling, the report and W&B tables read this list; a new judged metric is one row
of ``EXTRA_METRICS`` (and its default threshold follows from its test kind in the gate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TestKind = Literal["rounds", "mean", "effect", "counter"]


@dataclass(frozen=True)
class Metric:
    """One gated quantity: where it comes from and which direction is worse."""

    key: str
    unit: str
    higher_is_worse: bool
    # measured on the wall clock: judged against the control ratio when normalising
    time_derived: bool
    # "rounds": per-round samples (Mann-Whitney U); "mean": extra_info mean and `_std`
    # (Welch); "effect": no significance test (memory is nearly deterministic); "counter": an
    # exact count of the profiled step or of torch.compile, judged by equality on one stack
    test: TestKind
    # extra_info list of per-round values aligned with stats.data (docs/gate.md): when both sides
    # carry it, the metric is judged on those rounds, normalised by the control like time
    rounds_key: str | None = None
    # the per-round value is batch_size * 1000 / (the rounds_key value in ms): a rate
    rounds_rate: bool = False
    # the metric whose threshold applies (normalised rows share their raw metric's threshold)
    threshold_of: str | None = None
    # the default threshold's absolute floor, in the metric's unit (memory: allocator granularity)
    floor: float = 0.0
    # False: recorded and shown, never judged on its own (a quantity computed from the time
    # the gate already judges, e.g. TFLOP/s = FLOPs / time: judging both would count one change
    # twice and let a row without a spread decide)
    judged: bool = True
    # True: the rate of the median round (work per step / median seconds), so each round's rate
    # is the value x median / that round's seconds: judged on those rounds, as time is
    from_time: bool = False
    # True: the same in identical processes on one stack (no noise between them), so threads and
    # the allocator do not change it and no spread widens its threshold
    exact: bool = False

    @property
    def std_key(self) -> str:
        """The extra_info key that holds the per-round standard deviation beside a mean."""
        return f"{self.key}_std"

    @property
    def threshold_key(self) -> str:
        return self.threshold_of or self.key


TIME = Metric("time", "ms", True, True, "rounds")
TIME_RATIO = Metric("time/control", "x", True, False, "rounds", threshold_of="time")
EXTRA_METRICS: tuple[Metric, ...] = (
    Metric("samples_per_s", "1/s", False, True, "mean", from_time=True),
    Metric("tokens_per_s", "tok/s", False, True, "mean", from_time=True),
    Metric("decode_tokens_per_s", "tok/s", False, True, "mean", "tpot_round_ms", True),
    Metric("tokens_per_s_per_rank", "tok/s", False, True, "mean", from_time=True),
    Metric("achieved_tflops", "TFLOP/s", False, True, "mean", judged=False),
    Metric("mfu", "", False, True, "mean", judged=False),
    Metric("ttft_ms", "ms", True, True, "mean", "ttft_round_ms"),
    Metric("tpot_ms", "ms", True, True, "mean", "tpot_round_ms"),
    Metric("peak_memory_mb", "MB", True, False, "effect", floor=1.0),
    # CUDA's caching allocator reserves in 2 MB blocks
    Metric("peak_reserved_mb", "MB", True, False, "effect", floor=2.0),
    # the case's own footprint, independent of which cases ran before it (docs/measuring.md)
    Metric("footprint_memory_mb", "MB", True, False, "effect", floor=1.0),
    # off CUDA: the tensor memory a settled step allocates beyond what was alive before it,
    # from the profiler's allocation events (exact, where the resident set is not)
    Metric("step_allocated_mb", "MB", True, False, "effect", floor=1.0, exact=True),
    *(
        Metric(key, unit, True, False, "counter", exact=True)
        for key, unit in (
            # the profiled settled step (bench/counters.py; docs/measuring.md, "Exact counters")
            ("ops_per_step", "ops"),
            ("host_syncs_per_step", "syncs"),
            ("allocs_per_step", "allocs"),
            ("kernel_launches_per_step", "launches"),  # CUDA only
            ("dtoh_copies_per_step", "copies"),  # CUDA only
            # torch.compile: from the first call to the first timed round, then in rounds
            ("compile_graphs", "graphs"),
            ("compile_graph_breaks", "breaks"),
            ("compile_recompiles", "recompiles"),
            ("recompiles_in_rounds", "recompiles"),
        )
    ),
)
# The per-operator counts of the profiled step beside the counters (extra_info, a dict): the gate
# names the operators whose counts changed. Every scalar read dispatches SCALAR_READ_OP.
OPS_BY_NAME = "ops_by_name"
SCALAR_READ_OP = "aten::_local_scalar_dense"
COUNTERS: tuple[Metric, ...] = tuple(m for m in EXTRA_METRICS if m.test == "counter")


def normalised(metric: Metric) -> Metric:
    """The per-round metric divided by the control time (or, for a rate, multiplied by it)."""
    if metric is TIME:
        return TIME_RATIO
    key, unit = (
        (f"{metric.key}/control", "x") if metric.higher_is_worse else (f"{metric.key}*control", "")
    )
    return Metric(key, unit, metric.higher_is_worse, False, "rounds", threshold_of=metric.key)


# per-round metrics and the row that judges each of them against the control
NORMALISED: dict[str, Metric] = {
    m.key: normalised(m) for m in (TIME, *EXTRA_METRICS) if m is TIME or m.rounds_key
}
METRICS: dict[str, Metric] = {
    m.key: m for m in (TIME, TIME_RATIO, *EXTRA_METRICS, *NORMALISED.values())
}
# extra_info keys holding per-round lists aligned with stats.data (validated like stats.data)
ROUND_LIST_KEYS: tuple[str, ...] = (
    "control_round_s",
    "control_after_round_s",
    *dict.fromkeys(m.rounds_key for m in EXTRA_METRICS if m.rounds_key),
)


def rate_of(metric: Metric) -> str | None:
    """The metric a rate is the inverse of, one measurement with it: ``time`` for the median
    round's rates (samples/s, tokens/s), ``tpot_ms`` for the decode rate (the metric on the
    same per-round list that is not a rate); None for any other metric."""
    if metric.from_time:
        return TIME.key
    if metric.rounds_rate:
        same = (m for m in EXTRA_METRICS if m.rounds_key == metric.rounds_key)
        return next((m.key for m in same if not m.rounds_rate), None)
    return None
