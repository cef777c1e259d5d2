"""The exact tier: counters of the profiled step and of torch.compile, judged by equality on one
stack and device, no statistics (docs/gate.md, "Exact counters").

An increase beyond the counter's tolerance (none by default) is a REGRESSION whose note names
what changed; a decrease is ``improved`` (record the baseline again); counters measured on
another stack or device are not compared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gpt2_fixtures.results import numbers
from gpt2_fixtures.results.gate.verdicts import (
    IMPROVED,
    NA,
    NEW,
    PASS,
    REGRESSION,
    GateSettings,
    Row,
    Threshold,
)
from gpt2_fixtures.results.metrics import COUNTERS, OPS_BY_NAME, SCALAR_READ_OP, Metric

# operators named in a counter's note, the largest changes first
TOP_OPS = 3
REBASE_HINT = "fewer than the baseline: record it again (gpt2-bench baseline CURRENT.json BASELINE)"


def counter_rows(
    name: str,
    fullname: str,
    base: Mapping[str, Any],
    cur: Mapping[str, Any],
    settings: GateSettings,
) -> list[Row]:
    """One row per counter that either side records (``base``/``cur``: the two extra_info);
    a baseline that records none of them (before 0.5.0) gives one ``new`` row instead."""
    recorded = [m for m in COUNTERS if base.get(m.key) is not None or cur.get(m.key) is not None]
    if not recorded:
        return []
    if all(base.get(m.key) is None for m in recorded):
        note = "exact counters not recorded in the baseline: record it again to judge them"
        return [_lonely(name, "counters", NEW, note)]
    unusable = _not_comparable(settings)
    lookup = settings.thresholds.lookup
    return [
        _counter_row(name, m, (base, cur), lookup(name, fullname, m.key), unusable)
        for m in recorded
    ]


def _not_comparable(settings: GateSettings) -> str:
    """Why counters of the two sides are not compared ('' when they are): they depend on the
    torch build and the device (kernels, dispatch, decompositions)."""
    if settings.stack_change:
        return f"not compared: counters depend on the stack ({', '.join(settings.stack_change)})"
    if settings.device_mismatch:
        return "not compared: counters depend on the device, and it differs"
    return ""


def _lonely(name: str, metric: str, verdict: str, note: str, unit: str = "") -> Row:
    return Row(name, metric, unit, None, None, None, None, None, None, "", verdict, note)


def _counter_row(
    name: str, metric: Metric, sides: tuple[Mapping[str, Any], ...], thr: Threshold, unusable: str
) -> Row:
    base, cur = sides
    b, c = base.get(metric.key), cur.get(metric.key)
    if b is None or c is None:
        side = "baseline" if b is None else "current run"
        verdict = NEW if b is None else NA
        b, c = numbers.finite(b), numbers.finite(c)
        return Row(name, metric.key, metric.unit, b, c, None, None, None, None, str(thr), verdict,
                   f"not recorded in the {side}")  # fmt: skip
    b, c = float(b), float(c)
    change = (c - b) / b if b else (math.inf if c > b else 0.0)
    verdict, note = _judge(metric, b, c, change, thr)
    if unusable:
        verdict, note = NA, unusable
    elif c != b:
        what = changed_ops(base, cur, metric)
        note = "; ".join(filter(None, (note, what)))
    return Row(name, metric.key, metric.unit, b, c, change, None, None, None, str(thr), verdict,
               note)  # fmt: skip


def _judge(metric: Metric, b: float, c: float, change: float, thr: Threshold) -> tuple[str, str]:
    """Equality: beyond the tolerance means |change| > rel and |difference| > floor."""
    diff = c - b
    shown = f"{metric.key} {_count(b)} -> {_count(c)}"
    if math.isinf(thr.rel):
        return PASS, f"information only: {shown}" if diff else "information only"
    beyond = abs(change) > thr.rel and abs(diff) > thr.floor
    if not diff or not beyond:
        return PASS, (f"{shown}, within the tolerance {thr}" if diff else "")
    if diff > 0:
        return REGRESSION, shown
    return IMPROVED, f"{shown}; {REBASE_HINT}"


def _count(x: float) -> str:
    return f"{x:,.0f}" if x == int(x) else f"{x:,.4g}"


def changed_ops(base: Mapping[str, Any], cur: Mapping[str, Any], metric: Metric) -> str:
    """``aten::_local_scalar_dense 0 -> 2 per step, ...``: the operators whose counts moved most
    (the scalar read first on the host-syncs row), from both sides' ``ops_by_name``."""
    if not metric.key.endswith("_per_step"):
        return ""
    b_ops, c_ops = _ops(base), _ops(cur)
    if b_ops is None or c_ops is None:
        return ""
    moved = [
        (op, b_ops.get(op, 0), c_ops.get(op, 0))
        for op in sorted(set(b_ops) | set(c_ops))
        if b_ops.get(op, 0) != c_ops.get(op, 0)
    ]
    first = SCALAR_READ_OP if metric.key == "host_syncs_per_step" else ""
    moved.sort(key=lambda m: (m[0] != first, -abs(m[2] - m[1]), m[0]))
    shown = [f"{op} {_count(b)} -> {_count(c)}" for op, b, c in moved[:TOP_OPS]]
    more = f" (+{len(moved) - TOP_OPS} more operators)" if len(moved) > TOP_OPS else ""
    return f"{', '.join(shown)} per step{more}" if shown else ""


def _ops(info: Mapping[str, Any]) -> dict[str, float] | None:
    ops = info.get(OPS_BY_NAME)
    if not isinstance(ops, Mapping):
        return None
    return {str(k): float(v) for k, v in ops.items() if isinstance(v, int | float)}
