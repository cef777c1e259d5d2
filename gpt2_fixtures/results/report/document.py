"""report.md: where and what ran, then per phase its tables and plots; and `gpt2-bench report`."""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2_fixtures.config import Phase
from gpt2_fixtures.results import files
from gpt2_fixtures.results.report.cases import (
    REFERENCE_OPTIMIZATION,
    CaseResult,
    cases_from_benchmarks,
    phases_in,
    speedups,
)
from gpt2_fixtures.results.report.plots import (
    MEMORY_NOTE,
    NOT_SIGNIFICANT,
    Plot,
    plot_generation,
    plot_memory,
    plot_speedup_heatmap,
    plot_throughput,
)
from gpt2_fixtures.results.report.tables import (
    baseline_table,
    noise_warning,
    phase_table,
    render_markdown,
)

# machine_info["gpt2"] facts that make two runs' times incomparable when they differ
_MACHINE_KEYS = ("device", "device_name", "cpu_model", "cpu_threads", "device_count")


# --------------------------------------------------------------------------------------------
# Which plots a report holds, and their captions


def write_plots(cases: Sequence[CaseResult], out_dir: Path) -> dict[str, list[Plot]]:
    """Every plot the results support, per phase; a plot without data is left out."""
    plots: dict[str, list[Plot]] = {}
    for phase in phases_in(cases):
        in_phase = [c for c in cases if c.phase == phase]
        drawn = [
            (
                plot_speedup_heatmap(phase, in_phase, out_dir / f"speedup_{phase}.png"),
                "Speedup",
                f"Median step time of {REFERENCE_OPTIMIZATION} divided by that of each "
                "optimization, per batch size and length, with its 95% interval: green is faster, "
                f"red slower, grey ({NOT_SIGNIFICANT}) not significantly different.",
            ),
            (
                plot_memory(phase, in_phase, out_dir / f"memory_{phase}.png"),
                "Peak memory",
                f"Process peak memory against batch size ({MEMORY_NOTE}), "
                "one line per optimization.",
            ),
            (
                plot_memory(
                    phase, in_phase, out_dir / f"footprint_{phase}.png", "footprint_memory_mb"
                ),
                "Memory footprint",
                "Each case's own memory above the process before its model was built: "
                "independent of the cases that ran before it.",
            ),
            (
                plot_throughput(phase, in_phase, out_dir / f"throughput_{phase}.png"),
                "Throughput",
                "Tokens per second against sequence length, one panel per batch size.",
            ),
        ]
        if Phase.of(phase).per_token_latency:
            drawn.append(
                (
                    plot_generation(in_phase, out_dir / "generation_latency.png"),
                    "Generation latency",
                    "Time to first token (prefill) and time per output token (decode).",
                )
            )
        plots[phase] = [Plot(p, t, cap) for p, t, cap in drawn if p is not None]
    return plots


def _environment_lines(results: Mapping[str, Any]) -> list[str]:
    """Where and what ran, from machine_info (our ``gpt2`` dict) and commit_info."""
    machine = results.get("machine_info") or {}
    gpt2 = machine.get("gpt2") or {}
    commit = results.get("commit_info") or {}
    device = " ".join(filter(None, [gpt2.get("device"), f"({gpt2.get('device_name')})"]))
    facts = [
        ("device", device if gpt2.get("device_name") else gpt2.get("device")),
        ("CPU", gpt2.get("cpu_model") or (machine.get("cpu") or {}).get("brand_raw")),
        ("CPU threads", gpt2.get("cpu_threads")),
        ("torch", gpt2.get("torch")),
        ("transformers", gpt2.get("transformers")),
        ("python", gpt2.get("python") or machine.get("python_version")),
        ("commit", _commit_text(commit)),
        ("date", results.get("datetime")),
    ]
    return [f"- {label}: `{value}`" for label, value in facts if value]


def _commit_text(commit: Mapping[str, Any]) -> str | None:
    if not commit.get("id"):
        return None
    text = str(commit["id"])[:12]
    if commit.get("branch"):
        text += f" ({commit['branch']})"
    return text + (" + uncommitted changes" if commit.get("dirty") else "")


def _machine(doc: Mapping[str, Any]) -> dict[str, Any]:
    machine = doc.get("machine_info") or {}
    gpt2 = machine.get("gpt2") or {}
    out = {k: gpt2.get(k) for k in _MACHINE_KEYS if gpt2.get(k) is not None}
    if "cpu_model" not in out and (machine.get("cpu") or {}).get("brand_raw"):
        out["cpu_model"] = machine["cpu"]["brand_raw"]
    return out


def machine_note(results: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    """A warning when the baseline ran on another machine (device, CPU or thread count)."""
    now, then = _machine(results), _machine(baseline)
    differ = [k for k in _MACHINE_KEYS if k in now and k in then and now[k] != then[k]]
    if not differ:
        return ""
    # On CPU the device name is the CPU model: say each change once.
    pairs = dict.fromkeys((then[k], now[k]) for k in differ)
    names = {pair: next(k for k in differ if (then[k], now[k]) == pair) for pair in pairs}
    facts = ", ".join(f"{names[pair]} {pair[0]} -> {pair[1]}" for pair in pairs)
    return (
        f"**Note: the baseline ran on a different machine ({facts}).** The changes below mix "
        "the code's effect with the machine's; compare runs of one machine (or use "
        "`gpt2-bench ab` there) before reading them as regressions."
    )


def render_report(
    results: Mapping[str, Any],
    cases: Sequence[CaseResult],
    plots: Mapping[str, list[Plot]],
    baseline: Sequence[CaseResult] | None,
    image_dir: Path,
    baseline_doc: Mapping[str, Any] | None = None,
) -> str:
    lines = ["# gpt2-bench report", ""]
    lines += _environment_lines(results)
    lines += [
        "",
        "Times are the median over the timed rounds ± their standard deviation; throughput is "
        "the batch's samples (or tokens) divided by the median time (files before 0.3.0: the "
        "mean of per-round rates); speedup is the median time "
        f"of {REFERENCE_OPTIMIZATION} divided by the optimization's, for the same phase, model, "
        "batch size and length, with a 95% interval from the per-round times. Memory is "
        f"{MEMORY_NOTE}.",
        "",
    ]
    warning = noise_warning(cases)
    if warning:
        lines += [warning.strip().replace("warning:", "**Warning:**", 1), ""]
    if baseline_doc is not None and (note := machine_note(results, baseline_doc)):
        lines += [note, ""]
    for phase in phases_in(cases):
        in_phase = [c for c in cases if c.phase == phase]
        lines += [f"## {phase}", ""]
        tables = [phase_table(phase, in_phase)]
        if baseline is not None:
            tables.append(baseline_table(phase, in_phase, baseline))
        lines.append(render_markdown(tables))
        for plot in plots.get(phase, []):
            rel = plot.path.relative_to(image_dir).as_posix()
            lines += [f"![{plot.title}: {phase}]({rel})", "", f"*{plot.caption}*", ""]
    gone = [p for p in phases_in(baseline or []) if p not in phases_in(cases)]
    if gone:
        lines.append(f"Phases only in the baseline (not run here): {', '.join(gone)}.")
    return "\n".join(lines).rstrip() + "\n"


@dataclass(frozen=True)
class ReportFiles:
    report: Path
    plots: list[Path]


def write_report(
    results_paths: Sequence[str | Path],
    out_dir: str | Path,
    baseline_path: str | Path | None = None,
) -> ReportFiles:
    """Write ``out_dir/report.md`` and its PNG plots; raises files.UnusableInput on bad input."""
    loaded = [files.load_result(p) for p in results_paths]
    baseline_doc = files.load_result(baseline_path) if baseline_path is not None else None
    cases = cases_from_benchmarks(b for data in loaded for b in data["benchmarks"])
    baseline = cases_from_benchmarks(baseline_doc["benchmarks"]) if baseline_doc else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(cases, out)
    report = out / "report.md"
    text = render_report(loaded[0], cases, plots, baseline, out, baseline_doc)
    files.atomic_write_text(report, text)
    return ReportFiles(report, [p.path for phase_plots in plots.values() for p in phase_plots])


def summary_statistics(cases: Sequence[CaseResult]) -> dict[str, float]:
    """Per-phase best speedup against the reference: a one-number answer for dashboards."""
    out: dict[str, float] = {}
    for phase in phases_in(cases):
        in_phase = [c for c in cases if c.phase == phase]
        by_key = speedups(in_phase)
        ups = [
            value
            for c in in_phase
            if c.optimization != REFERENCE_OPTIMIZATION and (value := by_key[c.key]) is not None
        ]
        if ups:
            out[f"{phase}/best_speedup_vs_{REFERENCE_OPTIMIZATION}"] = max(ups)
            out[f"{phase}/median_speedup_vs_{REFERENCE_OPTIMIZATION}"] = statistics.median(ups)
    return out


# --------------------------------------------------------------------------------------------
# `gpt2-bench report`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results", nargs="+", type=Path, help="pytest-benchmark JSON file(s) to report on"
    )
    parser.add_argument(
        "--baseline", type=Path, default=None, help="results file to compare against"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("report"),
        help="directory for report.md and the PNG plots. Default: %(default)s",
    )


def run(args: argparse.Namespace) -> int:
    """Exit status 0, or 2 with one line when an input is unusable or the output unwritable."""
    try:
        written = write_report(args.results, args.out, args.baseline)
    except files.UnusableInput as exc:
        print(f"gpt2-bench report: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gpt2-bench report: error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {written.report} and {len(written.plots)} plot(s) in {written.report.parent}")
    return 0
