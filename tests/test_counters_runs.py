"""The exact tier end to end, in real benchmark processes (slow: each test spawns runs).

Injected changes come from tools/gate_inject.py (``-p gate_inject``, GPT2_BENCH_INJECT): two
host reads per step, or a graph break under torch.compile. The gate must fail them through a
counter while their time rows are no regression; processes of unchanged code give identical
counters (docs/measuring.md, "Exact counters")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import pytest_with_tools

ROOT = Path(__file__).resolve().parents[1]
GRID = [
    "benchmarks/test_inference.py",
    "--gpt2-optimizations",
    "sdpa-fp32",
    "--gpt2-batch-sizes",
    "1",
    "--gpt2-seq-lens",
    "64",
    "--gpt2-threads",
    "1",
    "--gpt2-rounds",
    "8",
]
COUNTER_KEYS = ("ops_per_step", "host_syncs_per_step", "allocs_per_step", "ops_by_name")
TIME_METRICS = ("time", "time/control", "samples_per_s", "tokens_per_s")


def run_grid(path: Path, inject: str = "", grid: list[str] = GRID) -> dict[str, Any]:
    proc = pytest_with_tools(
        ["gate_inject"], [f"--benchmark-json={path}", *grid], {"GPT2_BENCH_INJECT": inject}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads(path.read_text())


def compare(base: Path, cur: Path, out: Path) -> tuple[int, list[dict[str, Any]]]:
    cmd = [sys.executable, "-m", "gpt2_fixtures.cli", "compare", str(base), str(cur)]
    proc = subprocess.run(
        [*cmd, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode in (0, 1, 3), proc.stdout + proc.stderr
    return proc.returncode, json.loads(out.read_text())["rows"]


def counters_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["name"]: {k: b["extra_info"].get(k) for k in COUNTER_KEYS} for b in doc["benchmarks"]}


@pytest.fixture(scope="module")
def plain_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three processes of unchanged code (an A/A)."""
    out = tmp_path_factory.mktemp("aa")
    paths = [out / f"r{i}.json" for i in (1, 2, 3)]
    for path in paths:
        run_grid(path)
    return paths


def test_an_aa_of_three_processes_gives_identical_counters(plain_runs: list[Path]) -> None:
    found = [counters_of(json.loads(p.read_text())) for p in plain_runs]
    assert all(c["ops_per_step"] for run in found for c in run.values())
    assert found[0] == found[1] == found[2]


def test_two_host_reads_per_step_fail_through_a_counter_not_through_time(
    plain_runs: list[Path], tmp_path: Path
) -> None:
    cur = tmp_path / "reads.json"
    run_grid(cur, inject="reads=2")
    code, rows = compare(plain_runs[0], cur, tmp_path / "verdict.json")
    assert code == 1
    syncs = next(r for r in rows if r["metric"] == "host_syncs_per_step")
    assert syncs["verdict"] == "REGRESSION"
    before = int(syncs["baseline"])
    assert syncs["current"] == before + 2
    reads = f"aten::_local_scalar_dense {before} -> {before + 2}, aten::item"
    assert syncs["note"].startswith(f"host_syncs_per_step {before} -> {before + 2}; {reads}")
    failing = {r["metric"] for r in rows if r["verdict"] == "REGRESSION"}
    assert failing <= {"host_syncs_per_step", "ops_per_step"}  # no time row among them
    assert not failing & set(TIME_METRICS)


COMPILE_GRID = [*GRID[:2], "sdpa-compile", *GRID[3:-1], "3", "--gpt2-warmup", "1"]


def test_a_graph_break_and_a_recompile_under_compile_fail_through_counters(
    tmp_path: Path,
) -> None:
    """torch.compile with inductor on the CPU (it needs a C++ compiler, skipped without one)."""
    import shutil

    if not any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++")):
        pytest.skip("torch.compile on a CPU needs a C++ compiler (g++ or clang++)")
    base, cur = tmp_path / "plain.json", tmp_path / "break.json"
    plain = run_grid(base, grid=COMPILE_GRID)
    (entry,) = plain["benchmarks"]
    assert entry["extra_info"]["compile_graph_breaks"] == 0
    assert entry["extra_info"]["recompiles_in_rounds"] == 0
    # the break from the first call; the recompile at the first timed round (warmup is 1)
    run_grid(cur, inject="breaks=1,recompile=2", grid=COMPILE_GRID)
    code, rows = compare(base, cur, tmp_path / "verdict.json")
    breaks = next(r for r in rows if r["metric"] == "compile_graph_breaks")
    # the hook breaks the graph in every frame on the stack (the block, the model, the LM head)
    assert breaks["baseline"] == 0 and breaks["current"] >= 1
    assert breaks["verdict"] == "REGRESSION"
    assert breaks["note"] == f"compile_graph_breaks 0 -> {breaks['current']:.0f}"
    in_rounds = next(r for r in rows if r["metric"] == "recompiles_in_rounds")
    assert in_rounds["verdict"] == "REGRESSION" and in_rounds["current"] >= 1
    assert code == 1
