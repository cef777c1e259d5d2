"""The eight holes of the 0.2 gate, one test each: result files built from known distributions
(per-round times, per-process machine-speed factors applied to step and control alike). Each
test failed on 0.2.0's gate. No benchmark runs, no timing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpt2_fixtures import cli
from gpt2_fixtures.results import files, gate

ROUNDS = 20


def lognormal(median: float, sigma: float, n: int, rng: np.random.Generator) -> list[float]:
    return [float(x) for x in median * np.exp(rng.normal(0.0, sigma, n))]


def bench(
    name: str,
    step_s: float,
    rng: np.random.Generator,
    *,
    speed: float = 1.0,
    n: int = ROUNDS,
    sigma: float = 0.03,
    **extra: Any,
) -> dict[str, Any]:
    """One entry: the machine's speed factor multiplies step and control alike."""
    data = [t * speed for t in lognormal(step_s, sigma, n, rng)]
    control = [c * speed for c in lognormal(0.01, sigma, n, rng)]
    info = {"device_name": "cpu-x", "dtype": "float32", "memory_kind": "cpu_rss"}
    info.update(control_round_s=control, control_kind="twin-infer", **extra)
    return {
        "name": name,
        "fullname": f"benchmarks/test_x.py::{name}",
        "stats": {
            "median": float(np.median(data)),
            "mean": float(np.mean(data)),
            "stddev": float(np.std(data, ddof=1)) if n > 1 else 0.0,
            "rounds": n,
            "data": data,
        },
        "extra_info": info,
    }


def doc(*benches: dict[str, Any], device_name: str = "cpu-x", **top: Any) -> dict[str, Any]:
    gpt2 = {"device": "cpu", "device_name": device_name, "cpu_model": device_name}
    return {"machine_info": {"gpt2": gpt2}, "benchmarks": list(benches), **top}


def write(path: Path, content: Any) -> str:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def rows_of(result: gate.GateResult, metric: str) -> list[gate.Row]:
    return [r for r in result.rows if r.metric == metric]


# --- 1. missing, out-of-memory and failed cases ---------------------------------------------------


def test_1_missing_and_out_of_memory_cases_fail() -> None:
    rng = np.random.default_rng(1)
    names = ["test_train[a]", "test_train[b]", "test_train[c]"]
    base = doc(*(bench(n, 0.1, rng, peak_memory_mb=9120.0) for n in names))
    missing = gate.compare(base, doc(bench(names[0], 0.1, rng)))
    assert missing.exit_code == 1
    assert "PASS" not in missing.summary()
    assert {r.benchmark: r.verdict for r in missing.rows if r.metric == "-"} == {
        names[1]: gate.MISSING,
        names[2]: gate.MISSING,
    }
    oom = {
        "name": names[1],
        "fullname": f"benchmarks/test_x.py::{names[1]}",
        "kind": "oom",
        "reason": "CUDA out of memory",
        "peak_memory_mb": None,
    }
    section = {
        "version": "0.3.0",
        "failed": [oom],
        "not_selected": [base["benchmarks"][2]["fullname"]],
    }
    cur = doc(bench(names[0], 0.1, rng, peak_memory_mb=9120.0), gpt2_bench=section)
    result = gate.compare(base, cur)
    assert result.exit_code == 1
    verdicts = {r.benchmark: (r.verdict, r.note) for r in result.rows if r.metric == "-"}
    assert verdicts[names[1]] == (gate.REGRESSION, "out of memory (baseline peak 9,120 MB)")
    assert verdicts[names[2]][0] == gate.NOT_SELECTED
    table = gate.format_table(result)
    assert "REGRESSION test_train[b]: out of memory (baseline peak 9,120 MB)" in table
    assert gate.to_json(result)["failed_cases"] == [
        {"benchmark": names[1], "reason": "out of memory (baseline peak 9,120 MB)"}
    ]


def test_1_compare_subset_opts_out_of_missing(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    base = write(tmp_path / "b.json", doc(bench("t[a]", 0.1, rng), bench("t[b]", 0.1, rng)))
    cur = write(tmp_path / "c.json", doc(bench("t[a]", 0.1, rng)))
    assert cli.main(["compare", base, cur]) == 1
    assert cli.main(["compare", base, cur, "--subset"]) == 0


# --- 2. --allow-device-mismatch judges the ratio ------------------------------------------------


def test_2_device_mismatch_is_judged_on_the_control_ratio() -> None:
    rng = np.random.default_rng(3)
    a, b = {"device_name": "cpu-a"}, {"device_name": "cpu-b"}  # also in every entry
    base = doc(*(bench(f"t[{i}]", 0.02, rng, **a) for i in range(5)), device_name="cpu-a")
    # another CPU, 1.7x slower for step and control alike: the ratios agree
    same = doc(
        *(bench(f"t[{i}]", 0.02, rng, speed=1.7, **b) for i in range(5)), device_name="cpu-b"
    )
    result = gate.gate_documents(base, same, allow_device_mismatch=True)
    assert [r.verdict for r in rows_of(result, "time/control")] == ["pass"] * 5
    assert not [r for r in result.rows if r.verdict == gate.NA]
    assert result.exit_code == 0
    slow = doc(*(bench(f"t[{i}]", 0.025, rng, speed=1.7) for i in range(5)), device_name="cpu-b")
    result = gate.gate_documents(base, slow, allow_device_mismatch=True)
    assert [r.verdict for r in rows_of(result, "time/control")] == [gate.REGRESSION] * 5
    assert result.exit_code == 1


# --- 3. a stale baseline (machine 1.5x slower then) does not blind the gate ----------------------


def test_3_stale_baseline_from_a_slower_machine_still_catches_a_slowdown() -> None:
    caught = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        base = doc(bench("t[a]", 0.02, rng, speed=1.5))
        cur = doc(bench("t[a]", 0.025, rng))  # +25% in the code, on a 1.5x faster machine
        result = gate.compare(base, cur)
        caught += [r.verdict for r in rows_of(result, "time/control")] == [gate.REGRESSION]
        assert result.exit_code != 0
    assert caught == 20


# --- 4. short runs: the test must be able to reach alpha; one round never decides -----------------


def test_4_three_rounds_over_25_benchmarks_still_catch_a_50_percent_slowdown() -> None:
    rng = np.random.default_rng(4)
    names = [f"t[{i}]" for i in range(25)]
    base = doc(*(bench(n, 0.02, rng, n=3, sigma=0.01) for n in names))
    cur = doc(*(bench(n, 0.03, rng, n=3, sigma=0.01) for n in names))
    result = gate.compare(base, cur)
    assert result.exit_code == 1
    ratio_verdicts = [r.verdict for r in rows_of(result, "time/control")]
    assert ratio_verdicts.count(gate.REGRESSION) >= 22  # the rest: inconclusive, never pass
    assert set(ratio_verdicts) <= {gate.REGRESSION, gate.INCONCLUSIVE}
    assert "Welch t-test on log rounds" in rows_of(result, "time/control")[0].note
    assert gate.min_rounds_p(3, 3) > 0.01 / 25  # Mann-Whitney alone could never fail this


def test_4_one_round_never_decides_time() -> None:
    exits = set()
    for seed in range(100):
        rng = np.random.default_rng(200 + seed)
        result = gate.compare(
            doc(bench("t[a]", 0.02, rng, n=1)), doc(bench("t[a]", 0.02, rng, n=1))
        )
        exits.add(result.exit_code)
        assert all("too few rounds" in r.note for r in result.rows if r.metric.startswith("time"))
    assert exits == {3}


# --- 5. TTFT / TPOT / decode judged on their own per-round samples --------------------------------


def generate_bench(
    rng: np.random.Generator, ttft_ms: float, speed: float = 1.0, tpot_ms: float = 2.9
) -> dict[str, Any]:
    """A generate call of ~100 ms: TTFT is a tenth of it, the rest 31 decode steps."""
    entry = bench("test_generate[a]", 0.0, rng, speed=speed)
    ttft = [t * speed for t in lognormal(ttft_ms, 0.03, ROUNDS, rng)]
    tpot = [t * speed for t in lognormal(tpot_ms, 0.03, ROUNDS, rng)]
    data = [(a + 31 * b) / 1e3 for a, b in zip(ttft, tpot, strict=True)]
    entry["stats"].update(data=data, median=float(np.median(data)), mean=float(np.mean(data)))
    entry["stats"]["stddev"] = float(np.std(data, ddof=1))
    entry["extra_info"].update(
        ttft_round_ms=ttft,
        tpot_round_ms=tpot,
        batch_size=1,
        ttft_ms=float(np.mean(ttft)),
        ttft_ms_std=float(np.std(ttft, ddof=1)),
        tpot_ms=float(np.mean(tpot)),
        tpot_ms_std=float(np.std(tpot, ddof=1)),
    )
    return entry


def test_5_a_30_percent_ttft_regression_fails_when_the_call_moves_3_percent() -> None:
    rng = np.random.default_rng(5)
    base = doc(generate_bench(rng, ttft_ms=10.0))
    cur = doc(generate_bench(rng, ttft_ms=13.0))
    result = gate.compare(base, cur)
    assert result.exit_code == 1
    (ratio,) = rows_of(result, "time/control")
    assert ratio.verdict == gate.PASS and abs(ratio.change or 0) < 0.06
    (ttft,) = rows_of(result, "ttft_ms/control")
    assert ttft.verdict == gate.REGRESSION
    assert [r.verdict for r in rows_of(result, "ttft_ms")] == [gate.REGRESSION]
    assert [r.verdict for r in rows_of(result, "tpot_ms/control")] == [gate.PASS]
    # a whole machine 1.4x slower moves raw TTFT, not its ratio to the control: drift
    slower = gate.compare(base, doc(generate_bench(rng, ttft_ms=10.0, speed=1.4)))
    assert [r.verdict for r in rows_of(slower, "ttft_ms")] == [gate.DRIFT]
    assert slower.exit_code == 0


# --- 6. malformed numbers: exit 2 with one line naming file and benchmark -----------------------


def _entry(**stats: Any) -> dict[str, Any]:
    data = stats.pop("data", [0.01, 0.011, 0.012])
    base = {"median": 0.011, "mean": 0.011, "stddev": 0.001, "rounds": len(data or [1, 2, 3])}
    base.update(stats)
    if data is not None:
        base["data"] = data
    return {"name": "t[bad]", "fullname": "b/t.py::t[bad]", "stats": base}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (_entry(rounds=None), "stats.rounds is null"),
        (_entry(data=None, stddev=None), "stats.stddev is null"),
        (_entry(rounds=float("inf")), "stats.rounds is Infinity"),
        (_entry(rounds="twenty"), 'stats.rounds is "twenty"'),
        (_entry(data=[0.0, 0.0, 0.0]), "stats.data[0] is 0.0, expected > 0"),
        (_entry(data=[-0.01, 0.01, 0.01]), "stats.data[0] is -0.01, expected > 0"),
        (_entry(median=0.0), "stats.median is 0.0, expected > 0"),
    ],
)
def test_6_malformed_numbers_exit_2_naming_file_and_benchmark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: dict[str, Any], expected: str
) -> None:
    rng = np.random.default_rng(6)
    good = write(tmp_path / "good.json", doc(bench("t[bad]", 0.011, rng)))
    bad = write(tmp_path / "bad.json", json.dumps(doc(entry), allow_nan=True))
    for args in ([good, bad], [bad, good]):
        assert cli.main(["compare", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "bad.json" in err and "t[bad]" in err and expected in err


def test_6_denormal_control_and_unwritable_outputs_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(7)
    good = write(tmp_path / "good.json", doc(bench("t[a]", 0.01, rng)))
    denormal = bench("t[a]", 0.01, rng)
    denormal["extra_info"]["control_round_s"][0] = 5e-324
    bad = write(tmp_path / "bad.json", doc(denormal))
    assert cli.main(["compare", good, bad]) == 2
    assert "t[a]" in capsys.readouterr().err
    (tmp_path / "summary").mkdir()
    assert cli.main(["compare", good, good, "--markdown", str(tmp_path / "summary")]) == 2
    out = capsys.readouterr()
    assert "PASS" not in out.out and out.err.count("\n") == 1 and "summary" in out.err


# --- 7. memory: the band comes from the baseline's spread only ----------------------------------


def test_7_memory_regression_cannot_hide_in_its_own_noise() -> None:
    rng = np.random.default_rng(8)
    kind = {"memory_kind": "cuda_reserved"}  # judged at 1% from one process
    base = doc(
        bench("test_train[a]", 0.1, rng, peak_memory_mb=795.0, peak_memory_mb_std=17.0, **kind)
    )
    # +5%: a change that also made the settled steps vary more
    cur = doc(
        bench("test_train[a]", 0.1, rng, peak_memory_mb=835.0, peak_memory_mb_std=60.0, **kind)
    )
    (row,) = rows_of(gate.compare(base, cur), "peak_memory_mb")
    assert row.verdict == gate.REGRESSION


# --- 8. the whole grid's A/A passes against a calibrated baseline ---------------------------------


def _process(rng: np.random.Generator, grid: dict[str, float], slow: float = 1.0) -> dict[str, Any]:
    """One process of a 25-case grid: its machine speed (step and control alike) and, per case,
    a between-process offset of the step alone (heap layout, thread placement: 3%)."""
    speed = float(np.exp(rng.normal(0.0, 0.15)))
    return doc(
        *(
            bench(n, t * slow * float(np.exp(rng.normal(0.0, 0.03))), rng, speed=speed)
            for n, t in grid.items()
        )
    )


def test_8_calibrated_baseline_passes_the_whole_grid_aa(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    grid = {f"t[{i}]": 0.01 * (1 + i) for i in range(25)}
    paths = [write(tmp_path / f"r{i}.json", _process(rng, grid)) for i in range(3)]
    out = tmp_path / "calibrated.json"
    assert cli.main(["baseline", *paths, str(out)]) == 0
    calibrated = files.load_result(out)
    assert calibrated["gpt2_calibration"]["processes"] == 3
    assert calibrated["benchmarks"][0]["stats"]["rounds"] == 3 * ROUNDS
    single = files.load_result(paths[0])
    failing = {"calibrated": 0, "single": 0}
    improved = total = 0
    for _ in range(6):
        current = _process(rng, grid)
        result = gate.compare(calibrated, current)
        # benchmarks, not rows: a ratio that regresses takes its raw time along (20% cap)
        failing["calibrated"] += len({r.benchmark for r in result.regressions})
        improved += sum(r.verdict == gate.IMPROVED for r in result.rows)
        total += len(result.rows)
        failing["single"] += len(gate.compare(single, current).regressions)
    assert failing["calibrated"] <= 1
    assert improved <= 0.02 * total
    assert failing["single"] > failing["calibrated"]  # what 0.2.0's single-run baseline did
    row = rows_of(gate.compare(calibrated, _process(rng, grid)), "time/control")[0]
    assert "between-process spread" in row.threshold or "calibrated" in row.threshold
    # and a +25% slowdown of every step is still caught
    slow = gate.compare(calibrated, _process(rng, grid, slow=1.25))
    caught = [r.verdict for r in rows_of(slow, "time/control")].count(gate.REGRESSION)
    assert caught >= 24
