"""Measure the regression gate itself, with the protocol of docs/gate.md, "How good is it?".

Separate pytest processes of one grid (default: the whole default CPU grid, one torch thread):

1. ``base-0..`` (``--calib``, 3): pooled into a calibrated baseline (``gpt2-bench baseline``);
2. then, interleaved so that machine drift falls on every kind alike: ``aa-i`` (``--aa``, >= 6,
   unchanged code) and the injected kinds (``--inj`` runs each; tools/gate_inject.py, a pytest
   plugin: the product code has no hook for it): ``slow25`` (every step 25% slower), ``slow10``,
   ``mem5`` (+5% memory held through a benchmark's rounds);
3. ``hog-0..`` (``--hog``, 3): a second calibrated baseline recorded while ``--hog-procs`` busy
   processes, one pinned to each CPU at ``--hog-nice``, compete for the CPU (the machine ~1.5x
   slower), judged against the slow25 runs and the A runs.

Judged (default gate settings unless overridden):

- A/A: every A run against the calibrated baseline: failing rows in total, every non-pass row
  with its reason, false ``improved`` rows; also against one uncalibrated base run, and with
  pytest-benchmark's own ``--benchmark-compare-fail`` rule on the same files;
- detection per benchmark comparison: slow25 caught (a time REGRESSION row), slow10 caught in
  train and infer cases, mem5 caught in training cases, slow25 against the CPU-hog baseline.

    python tools/gate_quality.py --out gate-quality    # the full protocol: 21 processes, ~2 h here
    python tools/gate_quality.py --out gq --reuse                   # judge the saved runs again
    python tools/gate_quality.py --out gq --reuse --as-budget 2.5:10  # as a round budget would
    python tools/gate_quality.py --out gq --reuse --as-adaptive 3%:10  # as adaptive rounds would
    python tools/gate_quality.py --out gq --reuse --as-controls around  # controls on both sides
    python tools/gate_quality.py --out gq --only hog      # record the hog baseline again, judge
    python tools/gate_quality.py --out gq --grid "benchmarks/test_inference.py ..." --aa 2 ...

Writes OUT/runs/*.json, OUT/baseline.json, OUT/baseline-hog.json, OUT/gate_quality.json and
OUT/gate_quality.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_benchmark.utils import parse_compare_fail

from gpt2_fixtures.bench.measure import RoundPlan
from gpt2_fixtures.results import baseline as baseline_io
from gpt2_fixtures.results import files, gate
from gpt2_fixtures.results.fingerprint import fingerprint
from gpt2_fixtures.results.gate import samples as gate_samples
from gpt2_fixtures.results.gate.stats import median_interval
from gpt2_fixtures.results.gate.verdicts import CALIBRATED_TIME_REL
from gpt2_fixtures.results.pooling import round_stats

ROOT = Path(__file__).resolve().parents[1]

INJECTED: dict[str, str] = {"slow25": "slow=0.25", "slow10": "slow=0.10", "mem5": "mem=0.05"}
KINDS: dict[str, str] = {"aa": "", **INJECTED}
DEFAULT_GRID = "benchmarks --gpt2-device cpu --gpt2-model tiny --gpt2-threads 1"
TIME_METRICS = ("time", "time/control")
MEMORY_METRICS = ("peak_memory_mb", "footprint_memory_mb", "step_allocated_mb")


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


@contextlib.contextmanager
def cpu_hog(procs: int, nice: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``procs`` busy-looping processes for the duration: a co-tenant competing for the CPU.

    Hog i is pinned to CPU i (mod the CPUs there are), so whichever CPU the benchmark runs on, it
    shares it with one hog. Unpinned, three runnable processes on two CPUs left the benchmark
    alone on one (1.0x) or sharing one (2x) as the scheduler placed them, a bimodal slowdown.
    ``nice`` sets the hog's share: at 3 a CPU-bound loop ran 1.4-1.6x slower beside it, at 0 2x
    (the report gives the slowdown the hog baseline's processes measured: ``slowdown``)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]

    def start(cpu: int) -> subprocess.Popen[bytes]:
        def place() -> None:  # runs in the child before it execs
            if hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, {cpu})
            os.nice(nice)

        return subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=place)

    hogs = [start(cpus[i % len(cpus)]) for i in range(max(0, procs))]
    try:
        yield hogs
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def schedule(n_aa: int, n_inj: int) -> list[tuple[str, int]]:
    """Interleaved (kind, index): A first, then the injected kinds in turn."""
    out: list[tuple[str, int]] = []
    for i in range(max(n_aa, n_inj)):
        out += [(kind, i) for kind in KINDS if i < (n_aa if kind == "aa" else n_inj)]
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


def aa_figures(
    baseline: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], settings: gate.GateSettings
) -> dict[str, Any]:
    """Every A run against the baseline: failing and improved rows, every non-pass row."""
    failing = improved = drift = inconclusive = rows = 0
    exits: list[int] = []
    not_pass: list[str] = []
    for i, run in enumerate(runs):
        result = gate.compare(baseline, run, settings)
        exits.append(result.exit_code)
        rows += len(result.rows)
        failing += len(result.regressions)
        improved += sum(r.verdict == gate.IMPROVED for r in result.rows)
        drift += sum(r.verdict == gate.DRIFT for r in result.rows)  # raw moved, ratio did not
        inconclusive += sum(r.verdict in (gate.INCONCLUSIVE, gate.NA) for r in result.rows)
        not_pass += [
            f"aa-{i} {r.benchmark} {r.metric}: {r.verdict} {_fmt(r.change)} {r.note}".rstrip()
            for r in result.rows
            if r.verdict not in (gate.PASS, gate.DRIFT)
        ]
    return {
        "comparisons": len(runs),
        "rows": rows,
        "failing_rows": failing,
        "improved_rows": improved,
        "drift_rows": drift,
        "inconclusive_rows": inconclusive,
        "exit_codes": exits,
        "not_pass": not_pass,
    }


def detection(
    baseline: Mapping[str, Any],
    runs: Sequence[Mapping[str, Any]],
    settings: gate.GateSettings,
    metrics: Sequence[str],
    only: Callable[[str], bool] = lambda name: True,
) -> dict[str, Any]:
    """Per benchmark comparison: was the injected regression caught on one of ``metrics``?"""
    caught = total = runs_failed = 0
    missed: list[str] = []
    for j, run in enumerate(runs):
        result = gate.compare(baseline, run, settings)
        runs_failed += result.exit_code == 1
        names = {r.benchmark for r in result.rows if r.metric != "-" and only(r.benchmark)}
        hit = {r.benchmark for r in result.regressions if r.metric in metrics}
        caught += len(names & hit)
        total += len(names)
        why = {r.benchmark: f"{r.metric} {r.verdict} {_fmt(r.change)} {r.note}".rstrip()
               for r in result.rows if r.metric in metrics}  # fmt: skip
        missed += [f"run {j} {name}: {why.get(name, '-')}" for name in sorted(names - hit)]
    return {
        "comparisons": len(runs),
        "benchmark_comparisons": total,
        "caught": caught,
        "runs_failed": runs_failed,
        "missed": missed,
    }


def slowdown(
    quiet: Sequence[Mapping[str, Any]], loaded: Sequence[Mapping[str, Any]]
) -> list[float] | None:
    """How much slower the machine was for ``loaded``: per benchmark, the median over its
    processes of the control workload's median, over the same for ``quiet``; then the minimum,
    median and maximum of those ratios over the grid. None without controls."""

    def medians(runs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        per: dict[str, list[float]] = {}
        for run in runs:
            for bench in run["benchmarks"]:
                value = gate_samples.control_median(bench)
                if value:
                    per.setdefault(bench["fullname"], []).append(value)
        return {name: statistics.median(values) for name, values in per.items()}

    before, after = medians(quiet), medians(loaded)
    ratios = sorted(after[name] / before[name] for name in after if name in before)
    if not ratios:
        return None
    return [ratios[0], statistics.median(ratios), ratios[-1]]


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x * 100:+.1f}%"


POOL = 3  # processes pooled into one current run for the pooled figures


def pooled(runs: Sequence[Mapping[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The runs pooled by POOL, in order (disjoint groups; a remainder is left out), as
    `gpt2-bench baseline` pools the current side of a comparison."""
    groups = [runs[i : i + POOL] for i in range(0, len(runs) - POOL + 1, POOL)]
    return [
        baseline_io.pool_results(group, [f"{kind}-{i * POOL + j}" for j in range(POOL)])
        for i, group in enumerate(groups)
    ]


def judge_all(
    runs: Mapping[str, list[dict[str, Any]]],
    calibrated: Mapping[str, Any],
    hog: Mapping[str, Any] | None,
    settings: gate.GateSettings,
    check: str,
) -> dict[str, Any]:
    def trains(name: str) -> bool:
        return name.startswith("test_train")

    def train_or_infer(name: str) -> bool:
        return name.startswith(("test_train", "test_infer"))

    figures: dict[str, Any] = {
        "aa_calibrated": aa_figures(calibrated, runs["aa"], settings),
        "aa_uncalibrated": aa_figures(runs["base"][0], runs["aa"], settings),
        "aa_pytest_benchmark": sum(
            bool(pytest_benchmark_fails(a, b, check))
            for a, b in itertools.permutations(runs["aa"], 2)
        ),
        "aa_pytest_benchmark_comparisons": len(runs["aa"]) * (len(runs["aa"]) - 1),
    }
    aa_pooled = pooled(runs["aa"], "aa")
    if aa_pooled:  # the current side pooled from POOL processes (docs/gate.md, "Baselines")
        figures["aa_pooled"] = aa_figures(calibrated, aa_pooled, settings)
    for kind in ("slow25", "slow10"):
        groups = pooled(runs.get(kind) or [], kind)
        if groups:
            only = train_or_infer if kind == "slow10" else (lambda name: True)
            figures[f"{kind}_pooled"] = detection(calibrated, groups, settings, TIME_METRICS, only)
    if runs.get("slow25"):
        figures["slow25"] = detection(calibrated, runs["slow25"], settings, TIME_METRICS)
        if hog is not None:
            figures["slow25_vs_hog"] = detection(hog, runs["slow25"], settings, TIME_METRICS)
    if hog is not None:  # what a baseline recorded under the hog does to unchanged code
        figures["aa_vs_hog"] = aa_figures(hog, runs["aa"], settings)
        figures["hog_slowdown"] = slowdown(runs["base"], runs["hog"])
    if runs.get("slow10"):
        figures["slow10"] = detection(
            calibrated, runs["slow10"], settings, TIME_METRICS, train_or_infer
        )
    if runs.get("mem5"):
        figures["mem5"] = detection(calibrated, runs["mem5"], settings, MEMORY_METRICS, trains)
    return figures


LABELS = {
    "slow25": "+25% step, calibrated baseline",
    "slow10": "+10% step (train, infer), calibrated baseline",
    "mem5": "+5% memory (train), calibrated baseline",
    "slow25_vs_hog": "+25% step, baseline recorded under a CPU hog",
    "slow25_pooled": f"+25% step, {POOL} processes pooled, calibrated baseline",
    "slow10_pooled": f"+10% step (train, infer), {POOL} processes pooled, calibrated baseline",
}


def markdown(figures: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    lines = [
        f"Grid: `{meta['grid']}`; {meta['n_calib']} baseline processes (calibrated), "
        f"{meta['n_aa']} A processes, {meta['n_inj']} per injection, {meta['n_hog']} under "
        f"{meta['hog_procs']} CPU hogs (pinned, nice {meta['hog_nice']}); machine: "
        f"{meta['machine']}; torch threads: {meta['threads']}; 1-min load min/median/max "
        f"{_fmt_load(meta['load_average'])}; "
        f"gate: {meta['settings']}; {meta['when']}.",
        *(
            [
                f"Judged as a round budget of {b[0]:g} s (at least {b[1]} rounds) would have "
                "measured them: each case cut to its first planned rounds (an estimate)."
            ]
            if (b := meta.get("as_budget"))
            else []
        ),
        *(
            [
                f"Judged as adaptive rounds would have measured them: each case stopped at the "
                f"first round from round {a[1]} on whose 95% interval of the median time/control "
                f"lies within +-{a[0]:.0%} of it (an estimate)."
            ]
            if (a := meta.get("as_adaptive"))
            else []
        ),
        *(
            [
                f"Judged on the control {c} each round (`--as-controls {c}`); in runs recorded "
                "without the control after each round, every case's last round left out (an "
                "estimate)."
            ]
            if (c := meta.get("as_controls"))
            else []
        ),
        *(
            [
                f"Timed and control rounds per process (median): {t[0]:.1f} s fixed, {t[1]:.1f} s "
                f"cut ({1 - t[1] / t[0]:.0%} less)."
            ]
            if (t := meta.get("timed_s"))
            else []
        ),
        *(
            [f"Not measured (left out of `--only`, never run): {', '.join(missing)}."]
            if (missing := meta.get("not_measured"))
            else []
        ),
        "",
        "| A/A against | comparisons | rows | failing rows | improved rows | drift rows "
        "| inconclusive rows | exit codes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    against = (
        ("aa_calibrated", "calibrated"),
        ("aa_uncalibrated", "one base run"),
        ("aa_vs_hog", "calibrated under the hog"),
        ("aa_pooled", f"calibrated, the A runs pooled by {POOL}"),
    )
    for key, label in against:
        f = figures.get(key)
        if f is None:
            continue
        unjudged = f.get("inconclusive_rows", 0)
        lines.append(
            f"| {label} | {f['comparisons']} | {f['rows']} | {f['failing_rows']} "
            f"| {f['improved_rows']} | {f.get('drift_rows', 0)} "
            f"| {unjudged} ({_share(unjudged, f['rows'])}) "
            f"| {' '.join(map(str, f['exit_codes']))} |"
        )
    lines += [
        "",
        f"pytest-benchmark `{meta['check']}` on the A runs: {figures['aa_pytest_benchmark']} of "
        f"{figures['aa_pytest_benchmark_comparisons']} ordered pairs failed.",
        "",
        "| injected | runs | benchmark comparisons | caught | runs failing (exit 1) |",
        "|---|---|---|---|---|",
    ]
    for key, label in LABELS.items():
        f = figures.get(key)
        if f:
            share = f["caught"] / f["benchmark_comparisons"] if f["benchmark_comparisons"] else 0
            lines.append(
                f"| {label} | {f['comparisons']} | {f['benchmark_comparisons']} "
                f"| {f['caught']} ({share:.0%}) | {f['runs_failed']} |"
            )
    hog = figures.get("hog_slowdown")
    if hog:
        lines += [
            "",
            f"The hog slowed the control workload {hog[1]:.2f}x (median over the benchmarks; "
            f"{hog[0]:.2f}-{hog[2]:.2f}x) against the calibration processes.",
        ]
    lines += ["", "Every non-pass row of the A/A comparisons against the calibrated baseline:", ""]
    lines += [f"- {line}" for line in figures["aa_calibrated"]["not_pass"]] or ["- none"]
    for key, label in LABELS.items():
        if figures.get(key, {}).get("missed"):
            lines += ["", f"Missed, {label} (the last judged row of the metric):", ""]
            lines += [f"- {line}" for line in figures[key]["missed"]]
    return "\n".join(lines) + "\n"


def settings_text(settings: gate.GateSettings) -> str:
    time_thr = str(settings.thresholds.base["time"])
    if "time" not in settings.thresholds.explicit:
        time_thr = f"{time_thr} ({CALIBRATED_TIME_REL:.0%} calibrated)"
    return (
        f"alpha={settings.alpha} (Holm), time={time_thr}, spread_k={settings.spread_k:g}, "
        f"peak_memory_mb={settings.thresholds.base['peak_memory_mb']}"
    )


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _fmt_load(loads: Sequence[float] | None) -> str:
    return "unknown" if not loads else "/".join(f"{x:.1f}" for x in loads)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--out", default="gate-quality", help="output folder. Default: %(default)s")
    add("--calib", type=int, default=3, help="baseline processes. Default: %(default)s")
    add("--aa", type=int, default=6, help="A processes. Default: %(default)s")
    add("--inj", type=int, default=3, help="processes per injection. Default: %(default)s")
    add("--hog", type=int, default=3, help="baseline processes under a hog. Default: %(default)s")
    add("--hog-procs", type=int, default=os.cpu_count() or 2, help="busy processes of the hog")
    add("--hog-nice", type=int, default=3, help="niceness of the hog. Default: %(default)s")
    add(
        "--only",
        type=lambda t: set(t.split(",")),
        default=set(),
        help="run only these kinds (e.g. hog), reusing the runs of the others already in OUT/runs",
    )
    add("--grid", default=DEFAULT_GRID, help="pytest arguments. Default: %(default)s")
    add("--check", default="median:5%", help="pytest-benchmark compare-fail rule")
    add("--threads", type=int, default=1, help="OMP_NUM_THREADS. Default: %(default)s")
    add("--reuse", action="store_true", help="judge the runs already in OUT/runs")
    add(
        "--as-budget",
        metavar="SECONDS:MIN",
        help="with --reuse: judge fixed-round runs as a round budget would have measured them, "
        "each case cut to the first rounds its warm step plans (an estimate: those rounds took "
        "less wall time in a real budgeted run). Writes gate_quality-budget-*.md/json",
    )
    add(
        "--as-adaptive",
        metavar="HALF%:MIN",
        help="with --reuse: judge fixed-round runs as adaptive rounds would have measured them, "
        "each case stopped at the first round from MIN on whose 95%% interval of the median "
        "time/control lies within +-HALF of it (an estimate). Writes "
        "gate_quality-adaptive-*.md/json",
    )
    add(
        "--as-controls",
        choices=("before", "around"),
        help="with --reuse: judge each round on the controls around it or on the one before it. "
        "Runs recorded without the control after each round take the next round's as the one "
        "after, their last round left out on both bases so that the two compare; runs that "
        "recorded it keep their rounds. Writes gate_quality-controls-*.md/json",
    )
    gate.add_gate_arguments(parser)
    args = parser.parse_args(argv)
    if args.as_budget is not None:
        args.as_budget = parse_budget(parser, args.as_budget, args.reuse)
    if args.as_adaptive is not None:
        args.as_adaptive = parse_adaptive(parser, args.as_adaptive, args.reuse)
    estimates = [args.as_budget, args.as_adaptive, args.as_controls]
    if sum(e is not None for e in estimates) > 1:
        parser.error("--as-budget, --as-adaptive and --as-controls: one estimate at a time")
    if args.as_controls is not None and not args.reuse:
        parser.error("--as-controls needs --reuse")
    if args.calib < 2 or args.aa < 1 or (args.hog and args.hog < 2):
        parser.error("--calib and --hog need at least 2 processes, --aa at least 1")
    unknown = args.only - {"base", "hog", *KINDS}
    if unknown:
        parser.error(
            f"--only: unknown kinds {', '.join(sorted(unknown))} (base, hog, {', '.join(KINDS)})"
        )
    return args


def parse_budget(parser: argparse.ArgumentParser, text: str, reuse: bool) -> tuple[float, int]:
    seconds, _, least = text.partition(":")
    try:
        budget = (float(seconds), int(least or 10))
    except ValueError:
        parser.error(f"--as-budget {text!r}: expected SECONDS:MIN, e.g. 2.5:10")
    if not reuse or budget[0] <= 0 or budget[1] < 1:
        parser.error("--as-budget needs --reuse, a budget above 0 s and a minimum of 1 round")
    return budget


def parse_adaptive(parser: argparse.ArgumentParser, text: str, reuse: bool) -> tuple[float, int]:
    half, _, least = text.partition(":")
    try:
        rule = (float(half.rstrip("%")) / 100, int(least or 10))
    except ValueError:
        parser.error(f"--as-adaptive {text!r}: expected HALF%:MIN, e.g. 3%:10")
    if not reuse or not 0 < rule[0] < 1 or rule[1] < 2:
        parser.error("--as-adaptive needs --reuse, a half-width between 0% and 100% and MIN >= 2")
    return rule


Stop = Callable[[list[float], dict[str, Any]], tuple[int, str]]


def cut_runs(result: dict[str, Any], stop: Stop, plan: str) -> dict[str, Any]:
    """``result`` (fixed rounds) with every case cut to the first ``stop(data, extra_info)``
    rounds: ``stats`` recomputed, per-round lists cut alike, why recorded; the loaded run is
    left alone."""
    out = json.loads(json.dumps(result))
    for bench in out.get("benchmarks", []):
        data, info = bench["stats"]["data"], bench.get("extra_info", {})
        n, why = stop(data, info)
        bench["stats"] = round_stats(data[:n])  # the block pooled results carry
        for key, value in info.items():
            if isinstance(value, list) and len(value) == len(data):
                info[key] = value[:n]
        info["rounds_why"] = why
    out.setdefault("machine_info", {}).setdefault("gpt2", {})["round_plan"] = plan
    return out


def as_budgeted(result: dict[str, Any], budget_s: float, least: int) -> dict[str, Any]:
    """``result`` with every case cut to the rounds ``RoundPlan`` gives it from its recorded
    warm step."""

    def stop(data: list[float], info: dict[str, Any]) -> tuple[int, str]:
        return RoundPlan(len(data), 0, budget_s, least).rounds(info.get("warm_step_s"))

    return cut_runs(result, stop, f"budget {budget_s:g} s, min {least} (cut from fixed rounds)")


def adaptive_stop(values: Sequence[float], half: float, least: int) -> tuple[int, str]:
    """(rounds, why): where a rule that stops a case once it is narrow enough would have
    stopped: the first n >= ``least`` whose 95% interval of the median (order statistics) lies
    within +-``half`` of that median; all the rounds if none does."""
    width = math.inf
    for n in range(min(least, len(values)), len(values) + 1):
        low, high = median_interval(values[:n])
        width = (high - low) / 2 / statistics.median(values[:n])
        if width <= half:
            return n, f"adaptive: median interval +-{width:.1%} <= {half:.0%} after {n} rounds"
    return len(values), f"adaptive: +-{width:.1%} > {half:.0%} after all {len(values)} rounds"


def as_adaptive(result: dict[str, Any], half: float, least: int) -> dict[str, Any]:
    """``result`` with every case cut where ``adaptive_stop`` stops it, judged on what the gate
    judges: each round's time over its control (``samples.control_ratios``) where the case has
    one, else its time."""

    def stop(data: list[float], info: dict[str, Any]) -> tuple[int, str]:
        ratios = gate_samples.control_ratios({"stats": {"data": data}, "extra_info": info})
        return adaptive_stop(ratios or data, half, least)

    return cut_runs(result, stop, f"adaptive +-{half:.0%}, min {least} (cut from fixed rounds)")


def as_controls(result: dict[str, Any], basis: str) -> dict[str, Any]:
    """``result`` judged on the controls around each round ("around") or on the one before it
    ("before"). A run recorded without the control after each round gets the next round's
    control as the one after it, and its last round, which has none after it, is left out on
    both bases, so that the two compare; a run that recorded it keeps its rounds, and "before"
    drops its after-list."""

    def stop(data: list[float], info: dict[str, Any]) -> tuple[int, str]:
        control, after = info.get("control_round_s"), info.get("control_after_round_s")
        if not isinstance(control, list) or len(control) != len(data) or len(data) < 2:
            return len(data), "no control to pair: all rounds"
        recorded = isinstance(after, list) and len(after) == len(data)
        if basis == "before":
            info.pop("control_after_round_s", None)
        elif not recorded:  # aligned with the rounds until cut; the last entry goes with it
            info["control_after_round_s"] = [*control[1:], control[-1]]
        if recorded:
            return len(data), f"controls {basis}: all rounds (the control after each recorded)"
        return len(data) - 1, f"controls {basis}: the last round left out"

    return cut_runs(result, stop, f"controls {basis} each round")


def timed_seconds(result: Mapping[str, Any]) -> float:
    """Seconds of timed rounds and their control rounds in one run: what cutting rounds saves."""
    total = 0.0
    for bench in result.get("benchmarks", []):
        control = bench.get("extra_info", {}).get("control_round_s")
        total += sum(bench["stats"]["data"]) + (sum(control) if isinstance(control, list) else 0)
    return total


def as_estimated(
    runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace
) -> tuple[dict[str, list[dict[str, Any]]], str, list[float] | None]:
    """The runs as ``--as-budget``/``--as-adaptive``/``--as-controls`` would have cut them, the
    files' suffix and the median seconds of timed and control rounds per process, fixed then
    cut (None: uncut)."""
    if args.as_budget is not None:
        cut = {k: [as_budgeted(r, *args.as_budget) for r in rs] for k, rs in runs.items()}
        suffix = "-budget-{:g}-{}".format(*args.as_budget)
    elif args.as_adaptive is not None:
        cut = {k: [as_adaptive(r, *args.as_adaptive) for r in rs] for k, rs in runs.items()}
        suffix = f"-adaptive-{args.as_adaptive[0] * 100:g}-{args.as_adaptive[1]}"
    elif args.as_controls is not None:
        cut = {k: [as_controls(r, args.as_controls) for r in rs] for k, rs in runs.items()}
        suffix = f"-controls-{args.as_controls}"
    else:
        return runs, "", None
    before = [timed_seconds(r) for rs in runs.values() for r in rs]
    after = [timed_seconds(r) for rs in cut.values() for r in rs]
    return cut, suffix, [statistics.median(before), statistics.median(after)]


def make_runs(args: argparse.Namespace, out: Path, log: Callable[[str], None]) -> list[float]:
    """Run every process of the protocol; returns the 1-minute load average after each."""
    grid = args.grid.split()
    order = [("base", i) for i in range(args.calib)] + schedule(args.aa, args.inj)
    order += [("hog", i) for i in range(args.hog)]
    order = [(kind, i) for kind, i in order if not args.only or kind in args.only]
    loads = [os.getloadavg()[0]]
    for n, (kind, i) in enumerate(order, 1):
        hog = cpu_hog(args.hog_procs, args.hog_nice) if kind == "hog" else contextlib.nullcontext()
        with hog:
            inject = KINDS.get(kind, "")
            seconds = run_one(out / "runs" / f"{kind}-{i}.json", inject, grid, args.threads)
            loads.append(os.getloadavg()[0])
        log(f"[{n}/{len(order)}] {kind}-{i}: {seconds:.0f} s, load average {loads[-1]:.1f}")
    return loads


def load_runs(
    folder: Path, counts: Mapping[str, int], only: set[str], log: Callable[[str], None]
) -> dict[str, list[dict[str, Any]]]:
    """Every kind's runs. A kind left out of ``--only`` whose runs were never made is not
    measured (an empty list, and the report says so); any other missing run is unusable input."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for kind, n in counts.items():
        paths = [folder / f"{kind}-{i}.json" for i in range(n)]
        if only and kind not in only and not any(p.is_file() for p in paths):
            log(f"{kind}: not in --only and no runs in {folder}: not measured")
            runs[kind] = []
            continue
        runs[kind] = [files.load_result(p) for p in paths]
    return runs


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] = print) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    loads_path = out / "runs" / "loadavg.json"
    if not args.reuse:
        before = json.loads(loads_path.read_text()) if args.only and loads_path.is_file() else []
        loads_path.write_text(json.dumps(before + make_runs(args, out, log)))
    loads = json.loads(loads_path.read_text()) if loads_path.is_file() else []
    counts = {"base": args.calib, "aa": args.aa, "hog": args.hog}
    counts.update({kind: args.inj for kind in INJECTED})
    runs = load_runs(out / "runs", counts, args.only, log)
    runs, suffix, timed = as_estimated(runs, args)
    names = [str(out / "runs" / f"base-{i}.json") for i in range(args.calib)]
    calibrated = baseline_io.pool_results(runs["base"], names)
    files.save_result(calibrated, out / f"baseline{suffix}.json")
    hog = None
    if runs["hog"]:
        hog = baseline_io.pool_results(runs["hog"], [f"hog-{i}" for i in range(args.hog)])
        files.save_result(hog, out / f"baseline-hog{suffix}.json")
    settings = gate.settings_from_args(args)
    figures = judge_all(runs, calibrated, hog, settings, args.check)
    fp = fingerprint(runs["aa"][0])
    meta = {
        "grid": args.grid,
        "threads": args.threads,
        "n_calib": args.calib,
        "n_aa": args.aa,
        "n_inj": args.inj,
        "n_hog": args.hog,
        "hog_procs": args.hog_procs,
        "hog_nice": args.hog_nice,
        "check": args.check,
        "as_budget": args.as_budget,
        "as_adaptive": args.as_adaptive,
        "as_controls": args.as_controls,
        "timed_s": timed,
        "not_measured": sorted(k for k, n in counts.items() if n and not runs[k]),
        "machine": f"{fp['cpu_model']}, {os.cpu_count()} cores, torch {fp['torch']}",
        "settings": settings_text(settings),
        "when": time.strftime("%Y-%m-%d"),
        # other work on the machine during the runs: the 1-minute load average after each run
        "load_average": [min(loads), statistics.median(loads), max(loads)] if loads else None,
    }
    report = {"figures": figures, **meta}
    files.atomic_write_text(out / f"gate_quality{suffix}.json", json.dumps(report, indent=2) + "\n")
    text = markdown(figures, meta)
    files.atomic_write_text(out / f"gate_quality{suffix}.md", text)
    log(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
