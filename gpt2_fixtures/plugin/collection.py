"""From benchmark functions to cases: phase markers, the -m check, parametrization, shards."""

from __future__ import annotations

import pytest

from gpt2_fixtures.bench import distributed as dist_bench
from gpt2_fixtures.bench import phases
from gpt2_fixtures.config import PHASE_TABLE
from gpt2_fixtures.plugin import guards
from gpt2_fixtures.plugin.fixtures import settings, world_sizes
from gpt2_fixtures.plugin.options import run_options
from gpt2_fixtures.plugin.outcomes import outcomes
from gpt2_fixtures.plugin.shard import select

# Marker -> phase: `pytest benchmarks -m inference` selects the inference phase.
PHASE_MARKERS = {p.marker: p.name for p in PHASE_TABLE}
GATE_MARKER = "gpt2_gate(**thresholds): per-benchmark gate thresholds, e.g. time='20%'"


def register_markers(config: pytest.Config) -> None:
    """The phases' markers come from config.PHASE_TABLE (a new phase is a row, not also a line in
    pyproject.toml), so ``--strict-markers`` knows them; then the gate's marker."""
    for phase in PHASE_TABLE:
        config.addinivalue_line(
            "markers", f"{phase.marker}: the {phase.name} phase ({phase.file}::{phase.benchmark})"
        )
    config.addinivalue_line("markers", GATE_MARKER)


def check_marker_expression(config: pytest.Config) -> None:
    """A typo in -m (``trian``) would deselect everything and pass: refuse it in one line."""
    known = guards.registered_markers(config.getini("markers"))
    unknown = guards.unknown_markers(config.getoption("markexpr", ""), known)
    if unknown:
        phases = ", ".join(PHASE_MARKERS)
        raise pytest.UsageError(
            f"gpt2-bench: -m names unknown marker(s) {', '.join(unknown)}; phases are {phases}"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--gpt2-shard: keep this shard's cases, keyed by the name part of the node id
    (e.g. `test_train[eager-fp32-b8-s128]`), and report the others as deselected."""
    shard = run_options(config).shard
    if shard is None:
        return
    kept, dropped = select(items, shard, key=lambda item: item.name)
    # the shard set and the other shards' cases go into the results, so that a merge can tell a
    # shard that never arrived from cases nobody selected
    outcomes(config).shard = {
        "index": shard.index,
        "count": shard.count,
        "others": [item.nodeid for item in dropped],
    }
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _phase(metafunc: pytest.Metafunc) -> str:
    for marker in metafunc.definition.iter_markers():
        if marker.name in PHASE_MARKERS:
            return PHASE_MARKERS[marker.name]
    raise pytest.UsageError(
        f"{metafunc.definition.nodeid}: a gpt2_case benchmark needs a phase marker "
        f"({', '.join(PHASE_MARKERS)})"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gpt2_dist_case" in metafunc.fixturenames:
        _parametrize_distributed(metafunc)
    if "gpt2_case" not in metafunc.fixturenames:
        return
    s = settings(metafunc.config)
    params = []
    peers = dist_bench.single_device_skip_reason(dist_bench.launch_env())
    for case in phases.grid(_phase(metafunc), s):
        reason = phases.skip_reason(case, s) or peers
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(case, id=case.id, marks=marks))
    metafunc.parametrize("gpt2_case", params)


def _parametrize_distributed(metafunc: pytest.Metafunc) -> None:
    """DDP/FSDP cases: strategy x training case x world size (docs/distributed.md)."""
    s, launch = settings(metafunc.config), dist_bench.launch_env()
    strategies = run_options(metafunc.config).strategies
    cases = phases.grid(_phase(metafunc), s)
    params = []
    for dcase in dist_bench.grid(cases, strategies, world_sizes(metafunc.config, launch)):
        reason = dist_bench.skip_reason(dcase, launch) or phases.skip_reason(dcase.case, s)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(dcase, id=dcase.id, marks=marks))
    metafunc.parametrize("gpt2_dist_case", params)
