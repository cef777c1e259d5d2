"""A stack upgrade judged by real processes (docs/upgrades.md): `gpt2-bench ab --base-python`
with the slow-torch stand-in (tools/slow_python, matrix products and attention 40% slower) on
one tiny case. Verdicts are asserted, never a timing; each test spawns 6-7 benchmark
processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLOW_PYTHON = ROOT / "tools" / "slow_python"
# one case, 8 rounds, one thread: about 5 s a process on the idle machine, 15-35 s under the
# load of two other benchmark suites on its 2 cores. The A/B's thresholds come from the spread
# of the processes within each side; under that load 3 processes a side spread 7% and the A/A
# could not be judged (exit 3: the threshold capped). 5 processes a side narrow k x s x sqrt(2/n).
GRID = ["-k", "test_infer and sdpa-fp32", "--gpt2-batch-sizes", "1", "--gpt2-seq-lens", "64"]
GRID += ["--gpt2-rounds", "8", "--gpt2-threads", "1"]


def require_a_machine_to_measure_on() -> None:
    """An A/B judges nothing on an oversubscribed machine, and says so (exit 3): measured here,
    with a load average of 3.6-4.4 on 2 cores from other benchmark suites, whole processes ran
    50-100% slower at random and every time row was rightly inconclusive; at 2.0-3.6 it judged.
    Below that load the verdicts are asserted as they are; above it the test is skipped."""
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0]
    if load > cpus + 1:
        pytest.skip(f"load average {load:.1f} on {cpus} CPUs: too busy for an A/B to decide")


def skip_if_too_busy_to_judge(code: int, output: str) -> None:
    """Exit 3 because the processes of a side spread past the threshold's cap is the A/B saying
    the machine was too busy (the load average lags: at 2-3 the tiny step still ran 12-36 ms
    instead of 9.4 here): the verdict cannot be asserted then. Any other exit 3 fails."""
    capped = [
        line for line in output.splitlines() if line.startswith("test_") and "(capped:" in line
    ]
    if code == 3 and capped:
        pytest.skip(f"the machine was too busy to judge: {' '.join(capped[0].split()[:8])} ...")


def gpt2_bench(*args: str, slow: str = "0.4") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GPT2_BENCH_PYTHON=sys.executable, GPT2_BENCH_SLOW_TORCH=slow)
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [sys.executable, "-m", "gpt2_fixtures.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)


def ab(out: Path, head_python: str, repeats: int) -> subprocess.CompletedProcess[str]:
    return gpt2_bench(
        "ab", "--base-python", sys.executable, "--head-python", head_python,
        "--repeats", str(repeats), "--repo", str(ROOT), "--out", str(out), "--", *GRID,
    )  # fmt: skip


def rows(stdout: str, metric: str) -> list[list[str]]:
    table = [line.split() for line in stdout.splitlines() if line.startswith("test_")]
    return [cells for cells in table if cells[1] == metric]


@pytest.fixture(scope="module")
def slower_torch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, int]:
    """One A/B: the normal interpreter as base, the 40% slower stand-in as head. Four processes
    a side: with three, a +23% change over a 5% between-process spread gave p 0.015 between the
    per-process values in one CI run (2026-12-03), rightly inconclusive at alpha 0.01."""
    require_a_machine_to_measure_on()
    out = tmp_path_factory.mktemp("ab-slow")
    proc = ab(out, str(SLOW_PYTHON), repeats=4)
    return out, proc.stdout + proc.stderr, proc.returncode


@pytest.mark.slow
def test_ab_across_environments_catches_a_slower_torch(
    slower_torch: tuple[Path, str, int],
) -> None:
    _, output, code = slower_torch
    skip_if_too_busy_to_judge(code, output)
    assert code == 1, output
    assert "stack differs: torch 2.13.0" in output and ".slow0.4" in output
    assert "basis: raw wall-clock, 4 interleaved processes a side" in output
    (time_row,) = rows(output, "time")
    assert time_row[-1] == "REGRESSION"
    change = float(time_row[6].rstrip("%"))  # e.g. "+35.2%" of "... ms 14.07 ms +35.2% [...]"
    assert change > 10.0, output  # beyond the 10% threshold: the slowdown shows in the row
    (twin,) = [line for line in output.splitlines() if line.startswith("note: twin (not judged)")]
    assert "REGRESSION" not in twin  # the twin slowed as much as the step: it hides the change


@pytest.mark.slow
def test_stored_baseline_gate_on_the_same_runs_does_not_pass(
    slower_torch: tuple[Path, str, int],
) -> None:
    out = slower_torch[0]
    for base, head in (("base-pooled", "head-pooled"), ("base-1", "head-1")):
        proc = gpt2_bench("compare", str(out / f"{base}.json"), str(out / f"{head}.json"))
        assert proc.returncode not in (0, 2), proc.stdout + proc.stderr
        assert "software stack differs (torch 2.13.0" in proc.stdout


@pytest.mark.slow
def test_ab_same_interpreter_on_both_sides_passes(tmp_path: Path) -> None:
    require_a_machine_to_measure_on()
    proc = ab(tmp_path / "out", sys.executable, repeats=5)
    output = proc.stdout + proc.stderr
    skip_if_too_busy_to_judge(proc.returncode, output)
    assert proc.returncode == 0, output
    assert "stack the same on both sides (torch 2.13.0" in output
    assert rows(output, "time")[0][-1] == "pass"
