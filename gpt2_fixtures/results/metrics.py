"""The one registry of judged metrics: key, unit, direction, and how the gate tests each.

The gate, A/B pooling, the report and W&B tables read this list; a new judged metric is one row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Metric:
    """One gated quantity: where it comes from and which direction is worse."""

    key: str
    unit: str
    higher_is_worse: bool
    # measured on the wall clock: judged against the control ratio when normalising
    time_derived: bool
    # "rounds": per-round samples (Mann-Whitney U); "mean": extra_info mean and `_std`
    # (Welch); "effect": no significance test (memory is nearly deterministic)
    test: Literal["rounds", "mean", "effect"]


TIME = Metric("time", "ms", True, True, "rounds")
TIME_RATIO = Metric("time/control", "x", True, False, "rounds")
EXTRA_METRICS: tuple[Metric, ...] = (
    Metric("samples_per_s", "1/s", False, True, "mean"),
    Metric("tokens_per_s", "tok/s", False, True, "mean"),
    Metric("decode_tokens_per_s", "tok/s", False, True, "mean"),
    Metric("tokens_per_s_per_rank", "tok/s", False, True, "mean"),
    Metric("achieved_tflops", "TFLOP/s", False, True, "mean"),
    Metric("mfu", "", False, True, "mean"),
    Metric("ttft_ms", "ms", True, True, "mean"),
    Metric("tpot_ms", "ms", True, True, "mean"),
    Metric("peak_memory_mb", "MB", True, False, "effect"),
    Metric("peak_reserved_mb", "MB", True, False, "effect"),
)
METRICS: dict[str, Metric] = {m.key: m for m in (TIME, TIME_RATIO, *EXTRA_METRICS)}


def std_key(metric: Metric) -> str:
    """The extra_info key that holds the per-round standard deviation beside a mean."""
    return f"{metric.key}_std"
