"""pytest plugin: where a benchmark run's wall time goes (timed rounds, control, warmup, the rest).

Loaded with ``-p wall_split`` (tools/ on PYTHONPATH). It wraps, from outside the package, the
functions that make up a case and sums their seconds; at the end of the session it prints one
table and, when ``WALL_SPLIT_JSON`` is set, writes it there:

- ``timed``: the measured rounds, pytest-benchmark's own per-round times (``stats.data``);
- ``control``: the control workload before every round, warmup rounds included;
- ``warmup``: the warmup rounds (``measure.warm_up``, less their control runs) and the rest of
  ``benchmark.pedantic`` (the memory reset and read around each round, pytest-benchmark's
  bookkeeping);
- ``settled``: the untimed settled memory steps; ``profiled``: the one profiled step (exact
  counters, step_allocated_mb); ``prepare``: compile calls and the attention-kernel profile;
  ``build``: models (and the teacher) built, data packed; ``control_build``: the control
  workload made; ``logit_check``: reduced precision against fp32;
- ``other``: the session's wall (from its start, imports and collection included, to its end)
  minus all of the above: pytest, the plugin, the records, the summary.

Process start-up before pytest's session (the interpreter, the imports pytest makes first) is
not in the session: time the whole command for it (``/usr/bin/time``).

    PYTHONPATH=tools pytest benchmarks -p wall_split --gpt2-threads 1 --benchmark-json=out.json
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

SECONDS: dict[str, float] = defaultdict(float)
START = {"session": 0.0}


def timed(part: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            SECONDS[part] += time.perf_counter() - start

    return wrapper


def pedantic(func: Callable[..., Any]) -> Callable[..., Any]:
    """run_pedantic: its time, less the control runs inside it, less the timed rounds."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start, control = time.perf_counter(), SECONDS["control"]
        times = func(*args, **kwargs)
        total = time.perf_counter() - start - (SECONDS["control"] - control)
        rounds = sum(times or [])
        SECONDS["timed"] += rounds
        SECONDS["warmup"] += total - rounds
        return times

    return wrapper


def warm_up(func: Callable[..., Any]) -> Callable[..., Any]:
    """measure.warm_up: its time, less the control runs inside it."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start, control = time.perf_counter(), SECONDS["control"]
        try:
            return func(*args, **kwargs)
        finally:
            spent = time.perf_counter() - start
            SECONDS["warmup"] += spent - (SECONDS["control"] - control)

    return wrapper


def pytest_sessionstart(session: pytest.Session) -> None:
    START["session"] = time.perf_counter()
    from gpt2_fixtures.bench import controls, counters, measure, memory, prepare, workbench

    measure.run_pedantic = pedantic(measure.run_pedantic)
    measure.warm_up = warm_up(measure.warm_up)
    for cls in (controls.TwinControl, controls.MatmulControl):
        cls.run = timed("control", cls.run)  # type: ignore[method-assign]
    memory.settled_peaks = timed("settled", memory.settled_peaks)
    counters.profile_step = timed("profiled", counters.profile_step)
    workbench.prepare = timed("prepare", prepare.prepare)
    controls.control_for = timed("control_build", controls.control_for)
    bench = workbench.Workbench
    bench.model = timed("build", bench.model)  # type: ignore[method-assign]
    bench.teacher = timed("build", bench.teacher)  # type: ignore[method-assign]
    bench.logit_diff = timed("logit_check", bench.logit_diff)  # type: ignore[method-assign]


def split() -> dict[str, float]:
    wall = time.perf_counter() - START["session"]
    parts = dict(SECONDS)
    return {"session": wall, **parts, "other": wall - sum(parts.values())}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not SECONDS:
        return
    parts = split()
    wall = parts["session"]
    write = terminalreporter.write_line
    write("")
    write("| part | seconds | share of the session |")
    write("|---|---|---|")
    for name, seconds in parts.items():
        write(f"| {name} | {seconds:.1f} | {seconds / wall:.1%} |")
    path = os.environ.get("WALL_SPLIT_JSON")
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(parts, fh, indent=1)
