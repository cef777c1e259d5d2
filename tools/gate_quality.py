"""Measure the regression gate itself: false alarms on A/A runs, detection of injected regressions.

Runs a fixed benchmark grid in separate processes, interleaved so that machine drift falls on
every kind alike:  A, slow25, slow10, mem2, A, slow25, ...  where A is the unchanged code and the
others carry a regression injected by tools/gate_inject.py (a pytest plugin; the product code has
no hook for it). Then:

- A/A: every ordered pair (baseline A_i, current A_j), i != j -> false alarms.
- injected: each injected run against two A runs -> detections.

Each comparison is judged by our gate (gate.compare, default settings unless overridden) and by
pytest-benchmark's own `--benchmark-compare-fail=median:5%` check (its PercentageRegressionCheck
on the same files), counted per comparison (any benchmark failing fails the comparison, as in CI).

    .venv/bin/python tools/gate_quality.py --out gate-quality        # ~10 min on a 2-core CPU
    .venv/bin/python tools/gate_quality.py --out gate-quality --reuse  # re-judge saved runs

Writes OUT/runs/*.json, OUT/gate_quality.json and OUT/gate_quality.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_benchmark.utils import parse_compare_fail  # noqa: E402

from gpt2_fixtures.results import baseline as baseline_io  # noqa: E402
from gpt2_fixtures.results import files, gate  # noqa: E402

KINDS: dict[str, str] = {"aa": "", "slow25": "slow=0.25", "slow10": "slow=0.10", "mem2": "mem=0.02"}
DEFAULT_GRID = (
    "benchmarks/test_inference.py benchmarks/test_training.py --gpt2-model tiny "
    "--gpt2-optimizations sdpa --gpt2-batch-sizes 1 --gpt2-seq-lens 128"
)
TIME_METRICS = ("time", "time/control")


def run_one(path: Path, inject: str, grid: Sequence[str], threads: int | None) -> float:
    """One pytest process; returns its wall time in seconds."""
    env = dict(os.environ, GPT2_BENCH_INJECT=inject)
    if threads:  # torch reads it at start-up for its intra-op thread pool
        env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT / "tools"), env.get("PYTHONPATH"))))
    cmd = [sys.executable, "-m", "pytest", "-p", "gate_inject", "-p", "no:cacheprovider", "-q"]
    cmd += [f"--benchmark-json={path}", *grid]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not path.is_file():
        sys.exit(
            f"gate_quality: run {path.name} failed ({proc.returncode}):\n{proc.stdout[-2000:]}"
        )
    return time.perf_counter() - start


def schedule(n_aa: int, n_inj: int) -> list[tuple[str, int]]:
    """Interleaved (kind, index): A first, then the injected kinds in turn."""
    out: list[tuple[str, int]] = []
    for i in range(max(n_aa, n_inj)):
        out += [(kind, i) for kind in KINDS if i < (n_aa if kind == "aa" else n_inj)]
    return out


def pairs(n_aa: int, n_inj: int) -> dict[str, list[tuple[int, int]]]:
    """(baseline A index, current index) per kind: all ordered A/A pairs; each injected run
    against the A run of its own turn and the next one."""
    out = {"aa": [(i, j) for i, j in itertools.permutations(range(n_aa), 2)]}
    for kind in KINDS:
        if kind != "aa":
            out[kind] = [(a % n_aa, j) for j in range(n_inj) for a in (j, j + 1)]
    return out


def pytest_benchmark_fails(base: Mapping[str, Any], cur: Mapping[str, Any], check: str) -> int:
    """Benchmarks failing pytest-benchmark's own compare-fail check (its code, our files)."""
    rule = parse_compare_fail(check)
    base_by = {b["fullname"]: b["stats"] for b in base["benchmarks"]}
    return sum(
        bool(rule.fails(b["stats"], base_by[b["fullname"]]))
        for b in cur["benchmarks"]
        if b["fullname"] in base_by
    )


def judge_all(
    runs: Mapping[str, list[dict[str, Any]]],
    comparisons: Mapping[str, list[tuple[int, int]]],
    settings: gate.GateSettings,
    check: str,
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for kind, kind_pairs in comparisons.items():
        current = runs[kind]
        gate_fail = pb_fail = bench_fail = bench_total = target_hit = 0
        changes: list[float] = []
        for i, j in kind_pairs:
            result = gate.compare(runs["aa"][i], current[j], settings)
            regressed = result.regressions
            gate_fail += bool(regressed)
            target = "peak_memory_mb" if kind == "mem2" else TIME_METRICS
            target_hit += any(r.metric in target for r in regressed)
            names = {r.benchmark for r in regressed}
            bench_fail += len(names)
            bench_total += len(current[j]["benchmarks"])
            pb_fail += bool(pytest_benchmark_fails(runs["aa"][i], current[j], check))
            metric = "peak_memory_mb" if kind == "mem2" else _judged_time_metric(result)
            changes += [
                r.change for r in result.rows if r.metric == metric and r.change is not None
            ]
        figures[kind] = {
            "comparisons": len(kind_pairs),
            "gate_failed": gate_fail,
            "gate_caught_target": target_hit,
            "gate_failed_benchmarks": bench_fail,
            "benchmark_comparisons": bench_total,
            "pytest_benchmark_failed": pb_fail,
            "median_change": statistics.median(changes) if changes else None,
        }
    return figures


def _judged_time_metric(result: gate.GateResult) -> str:
    return "time/control" if any(r.metric == "time/control" for r in result.rows) else "time"


def spread(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per benchmark, the range over processes of the median time (ms), the median control ratio
    and the peak memory (MB): how far identical processes disagree."""
    out: dict[str, dict[str, list[float]]] = {}
    for doc in runs:
        for b in doc["benchmarks"]:
            row = out.setdefault(b["name"], {"median_ms": [], "ratio": [], "peak_mb": []})
            row["median_ms"].append(b["stats"]["median"] * 1e3)
            ratios = gate.control_ratios(b)
            if ratios:
                row["ratio"].append(statistics.median(ratios))
            mem = (b.get("extra_info") or {}).get("peak_memory_mb")
            if mem is not None:
                row["peak_mb"].append(mem)
    return {name: {k: [min(v), max(v)] for k, v in row.items() if v} for name, row in out.items()}


def markdown(figures: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    labels = {
        "aa": "A/A (no change)",
        "slow25": "25% slower step",
        "slow10": "10% slower step",
        "mem2": "+2% memory",
    }
    lines = [
        f"Grid: `{meta['grid']}`; {meta['n_aa']} A runs, {meta['n_inj']} runs per injection; "
        f"machine: {meta['machine']}; torch threads: {meta['threads']}; "
        f"1-min load average min/median/max {_fmt_load(meta['load_average'])}; "
        f"gate: {meta['settings']}; {meta['when']}.",
        "",
        f"| runs compared | comparisons | our gate failed | of which on the injected metric "
        f"| median change seen | pytest-benchmark {meta['check']} failed |",
        "|---|---|---|---|---|---|",
    ]
    for kind, f in figures.items():
        change = f["median_change"]
        change_text = "-" if change is None else f"{change * 100:+.1f}%"
        target = "-" if kind == "aa" else f["gate_caught_target"]
        lines.append(
            f"| {labels[kind]} | {f['comparisons']} | {f['gate_failed']} | {target} "
            f"| {change_text} | {f['pytest_benchmark_failed']} |"
        )
    lines += ["", "Spread over the A runs (min..max across processes):", ""]
    lines += ["| benchmark | median ms | median time/control | peak MB |", "|---|---|---|---|"]
    for name, s in meta["spread"].items():
        ranges = (s.get(k) for k in ("median_ms", "ratio", "peak_mb"))
        cells = ["-" if r is None else f"{r[0]:.4g}..{r[1]:.4g}" for r in ranges]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt_load(loads: Sequence[float] | None) -> str:
    return "unknown" if not loads else "/".join(f"{x:.1f}" for x in loads)


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gate-quality", help="output folder. Default: %(default)s")
    parser.add_argument("--aa", type=int, default=6, help="A runs. Default: %(default)s")
    parser.add_argument(
        "--inj", type=int, default=5, help="runs per injection. Default: %(default)s"
    )
    parser.add_argument(
        "--grid", default=DEFAULT_GRID, help="pytest arguments. Default: %(default)s"
    )
    parser.add_argument("--check", default="median:5%", help="pytest-benchmark compare-fail rule")
    parser.add_argument(
        "--threads", type=int, default=None, help="OMP_NUM_THREADS for the runs. Default: inherit"
    )
    parser.add_argument("--reuse", action="store_true", help="judge the runs already in OUT/runs")
    gate.add_gate_arguments(parser)
    args = parser.parse_args(argv)
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    grid = args.grid.split()
    loads_path = out / "runs" / "loadavg.json"
    if not args.reuse:
        order = schedule(args.aa, args.inj)
        loads = [os.getloadavg()[0]]
        for n, (kind, i) in enumerate(order, 1):
            seconds = run_one(out / "runs" / f"{kind}-{i}.json", KINDS[kind], grid, args.threads)
            loads.append(os.getloadavg()[0])
            log(f"[{n}/{len(order)}] {kind}-{i}: {seconds:.0f} s, load average {loads[-1]:.1f}")
        loads_path.write_text(json.dumps(loads))
    loads = json.loads(loads_path.read_text()) if loads_path.is_file() else []
    runs = {
        kind: [files.load_result(out / "runs" / f"{kind}-{i}.json") for i in range(n)]
        for kind, n in ((k, args.aa if k == "aa" else args.inj) for k in KINDS)
    }
    settings = gate.settings_from_args(args)
    figures = judge_all(runs, pairs(args.aa, args.inj), settings, args.check)
    fp = baseline_io.fingerprint(runs["aa"][0])
    meta = {
        "grid": args.grid,
        "threads": args.threads or os.environ.get("OMP_NUM_THREADS") or "torch default",
        "n_aa": args.aa,
        "n_inj": args.inj,
        "check": args.check,
        "machine": f"{fp['cpu_model']}, {os.cpu_count()} cores, torch {fp['torch']}",
        "settings": f"alpha={settings.alpha}, time={settings.thresholds.base['time']}, "
        f"peak_memory_mb={settings.thresholds.base['peak_memory_mb']}, "
        f"basis={settings.time_basis}, control_tolerance="
        + (f"{settings.control_tolerance:.0%}" if settings.control_tolerance else "by kind"),
        "when": time.strftime("%Y-%m-%d"),
        # other work on the machine during the runs: the 1-minute load average after each run
        "load_average": [min(loads), statistics.median(loads), max(loads)] if loads else None,
        "spread": spread(runs["aa"]),
    }
    report = {"figures": figures, **meta}
    files.atomic_write_text(out / "gate_quality.json", json.dumps(report, indent=2) + "\n")
    text = markdown(figures, meta)
    files.atomic_write_text(out / "gate_quality.md", text)
    log(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
