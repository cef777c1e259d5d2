"""The gate's power: Holm's step-down over the benchmarks, and the calibrated default effect.

Synthetic result files (tests/test_gate_holes.py's builders); no timing is measured here."""

from __future__ import annotations

import numpy as np
import pytest
from test_gate_holes import bench, doc, rows_of

from gpt2_fixtures.results import baseline as bl
from gpt2_fixtures.results import gate
from gpt2_fixtures.results.gate import samples
from gpt2_fixtures.results.gate.stats import holm_levels


def test_holm_steps_down_and_stops_at_the_first_test_it_keeps() -> None:
    tests = [(("a", "time"), 0.001), (("b", "time"), 0.004), (("c", "time"), 0.006)]
    levels = holm_levels(tests, 0.01)
    assert levels == {("a", "time"): 0.01 / 3, ("b", "time"): 0.01 / 2, ("c", "time"): 0.01}
    # Bonferroni (0.01 / 3 each) would reject a alone
    assert [p < 0.01 / 3 for _, p in tests] == [True, False, False]
    # the second smallest fails its level (0.005): the third is kept too, below 0.01 or not
    stopped = holm_levels([("a", 0.001), ("b", 0.006), ("c", 0.0055)], 0.01)
    assert stopped == {"a": 0.01 / 3}
    # one family over every metric: alpha bounds the whole comparison; a test without a
    # p-value counts in m and is never rejected
    mixed = holm_levels([(("a", "x"), 0.004), (("a", "y"), 0.004), (("b", "x"), None)], 0.01)
    assert mixed == {}
    assert holm_levels([(("a", "x"), 0.003), (("a", "y"), 0.004), (("b", "x"), None)], 0.01) == {
        ("a", "x"): 0.01 / 3,
        ("a", "y"): 0.01 / 2,
    }


def _slowed_grid(seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    names = [f"test_infer[{i}]" for i in range(10)]
    base = doc(*(bench(n, 0.1, rng, sigma=0.12) for n in names))
    cur = doc(*(bench(n, 0.1 * 1.2, rng, sigma=0.12) for n in names))
    return base, cur


def test_a_slowdown_of_every_case_is_caught_beyond_bonferroni() -> None:
    """Every case 20% slower, rounds noisy enough that several p-values lie between alpha / m
    and alpha: Bonferroni fails only those below alpha / m, Holm more, and none above alpha."""
    base, cur = _slowed_grid(5)
    rows = rows_of(gate.compare(base, cur), "time/control")
    ps = [r.p_value for r in rows]
    assert all(p is not None for p in ps)
    bonferroni = sum(p < 0.01 / 10 for p in ps)  # type: ignore[operator]
    failed = [r for r in rows if r.verdict == gate.REGRESSION]
    assert len(failed) > bonferroni
    assert all(r.p_value < 0.01 for r in failed)  # type: ignore[operator]
    note = next(n for n in gate.compare(base, cur).notes if n.startswith("significance"))
    assert "Holm's step-down over its 20 tests" in note  # time and time/control of 10 cases


def test_holm_adds_no_false_alarm_when_nothing_moved() -> None:
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        names = [f"test_infer[{i}]" for i in range(10)]
        base = doc(*(bench(n, 0.1, rng) for n in names))
        cur = doc(*(bench(n, 0.1, rng) for n in names))
        assert gate.compare(base, cur).exit_code == 0


def _calibrated(rng: np.random.Generator) -> dict:
    runs = [doc(bench("test_train[a]", 0.1 * f, rng, sigma=0.01)) for f in (0.995, 1.0, 1.005)]
    return bl.pool_results(runs, ["1", "2", "3"])


def test_a_calibrated_baseline_judges_time_from_5_percent() -> None:
    rng = np.random.default_rng(7)
    calibrated = _calibrated(rng)
    single = doc(bench("test_train[a]", 0.1, rng, sigma=0.01))
    slower = doc(bench("test_train[a]", 0.108, rng, sigma=0.01))  # +8%
    (row,) = rows_of(gate.compare(calibrated, slower), "time/control")
    assert row.verdict == gate.REGRESSION
    assert row.threshold.startswith("5% (calibrated:")
    # one process as the baseline: the uncalibrated 10% holds, +8% passes
    (plain,) = rows_of(gate.compare(single, slower), "time/control")
    assert (plain.verdict, plain.threshold) == (gate.PASS, "10%")
    # a threshold set by the user is used as given, calibrated or not
    given = gate.GateSettings(
        thresholds=gate.Thresholds().override([(None, "time", gate.Threshold(0.10))])
    )
    (kept,) = rows_of(gate.compare(calibrated, slower, given), "time/control")
    assert kept.verdict == gate.PASS and kept.threshold.startswith("10% (calibrated:")
    per_case = gate.GateSettings(
        thresholds=gate.Thresholds().override([("test_train*", "time", gate.Threshold(0.12))])
    )
    (case,) = rows_of(gate.compare(calibrated, slower, per_case), "time/control")
    assert case.verdict == gate.PASS and case.threshold.startswith("12% (calibrated:")


def test_the_smallest_reachable_p_of_many_rounds_does_not_overflow() -> None:
    assert gate.min_rounds_p(3, 3) == 1 / 20
    # a pooled history or a long A/B: C(1200, 600) is far beyond a float
    assert gate.min_rounds_p(600, 600) == 0.0
    assert 0 < gate.min_rounds_p(60, 20) < 1e-15


def test_a_benchmarks_spread_is_at_least_its_phases_and_the_grids() -> None:
    """Three processes estimate one case's spread with two degrees of freedom: a training case
    whose resident peak happened to agree three times gets its phase's median spread, and an
    inference case the grid's."""
    rng = np.random.default_rng(11)
    kind = {"memory_kind": "cuda_allocated"}  # a CPU's resident memory has a 10% floor

    def grid(k: int) -> dict:
        noisy = (0.97, 1.0, 1.03)[k]  # training peaks that move by a buffer between processes
        steady = (0.999, 1.0, 1.001)[k]
        train = [("a", steady), ("b", noisy), ("c", noisy), ("d", noisy)]
        entries = [
            bench(f"test_train[{n}]", 0.1, rng, phase="train", peak_memory_mb=1000.0 * f, **kind)
            for n, f in train
        ]
        entries += [
            bench(
                f"test_infer[{i}]", 0.1, rng, phase="infer", peak_memory_mb=500.0 * steady, **kind
            )
            for i in range(5)
        ]
        return doc(*entries)

    calibrated = bl.pool_results([grid(k) for k in range(3)], ["1", "2", "3"])
    spreads = samples.typical_spreads(calibrated)
    assert spreads[("train", "peak_memory_mb")] == pytest.approx(0.03, rel=0.01)
    assert spreads[("", "peak_memory_mb")] == pytest.approx(0.001, rel=0.01)
    rows = {r.benchmark: r for r in rows_of(gate.compare(calibrated, grid(1)), "peak_memory_mb")}
    # 3 x 3% x sqrt(1 + 1/3) for the steady training case, from its phase
    assert rows["test_train[a]"].threshold.startswith("10.4%:1 (3 x 3.00% between-process spread)")
    assert rows["test_infer[0]"].threshold.startswith("1%:1 (calibrated: 3 x 0.10% spread is less)")
