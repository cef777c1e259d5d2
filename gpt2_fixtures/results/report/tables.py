"""One table model (:class:`Table`), two renderers (console text and Markdown), and the tables.

Metric columns come from the registry of judged metrics (results/metrics.py): a metric some case
records gets a column, with its ``± std`` when recorded. Speedups and changes carry their 95%
interval (cases.py); one that is not significant says ``n.s.``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpt2_fixtures.results.metrics import EXTRA_METRICS, Metric
from gpt2_fixtures.results.report.cases import (
    REFERENCE_OPTIMIZATION,
    CaseResult,
    Ratio,
    cases_from_benchmarks,
    metric_ratio,
    noisy_cases,
    phases_in,
    relative_change,
    speedup_ratios,
    time_ratio,
)

MISSING = "n/a"
NOT_SIGNIFICANT = "n.s."
HIGH_CV = 0.10  # round-to-round CV above which a speedup of a few percent means nothing
# Column headers of the registry's metrics; a metric missing here gets one made from its key.
_HEADERS = {
    "samples_per_s": "samples/s",
    "tokens_per_s": "tokens/s",
    "decode_tokens_per_s": "decode tok/s",
    "tokens_per_s_per_rank": "tok/s per rank",
    "achieved_tflops": "TFLOP/s",
    "mfu": "MFU",
    "ttft_ms": "TTFT ms",
    "tpot_ms": "TPOT ms",
    "peak_memory_mb": "peak MB",
    "peak_reserved_mb": "reserved MB",
    "footprint_memory_mb": "footprint MB",
    "step_allocated_mb": "step alloc MB",
}
INTERVAL_NOTE = (
    "[low, high]: 95% interval from the per-round times (Mann-Whitney / Hodges-Lehmann), or from "
    f"mean, std and rounds where the file has no rounds; {NOT_SIGNIFICANT}: the interval holds "
    "no change, so the difference is not significant."
)


# --------------------------------------------------------------------------------------------
# Formatting


def fmt_number(value: float | None) -> str:
    """About three significant digits, never scientific notation for everyday magnitudes."""
    if value is None or not math.isfinite(value):
        return MISSING
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1 or magnitude == 0:
        return f"{value:.2f}"
    decimals = 2 - math.floor(math.log10(magnitude))  # three significant digits, zeros kept
    return f"{value:.{decimals}f}"


def fmt_percent(fraction: float | None, signed: bool = False) -> str:
    if fraction is None:
        return MISSING
    return f"{fraction * 100:+.1f}%" if signed else f"{fraction * 100:.1f}%"


def fmt_int(value: float | None) -> str:
    return MISSING if value is None else str(round(value))


def fmt_speedup(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}x"


def fmt_ratio(ratio: Ratio | None) -> str:
    """A speedup with its interval: ``1.96x [1.50, 2.41]``, ``n.s.`` when not significant."""
    if ratio is None:
        return MISSING
    if ratio.low is None or ratio.high is None:
        return f"{ratio.value:.2f}x [no interval]"
    text = f"{ratio.value:.2f}x [{ratio.low:.2f}, {ratio.high:.2f}]"
    return text if ratio.significant else f"{text} {NOT_SIGNIFICANT}"


def fmt_change(ratio: Ratio | None) -> str:
    """A relative change with its interval: ``+10.0% [+5.1, +15.2]``."""
    if ratio is None:
        return MISSING
    text = fmt_percent(ratio.value - 1, signed=True)
    if ratio.low is None or ratio.high is None:
        return text
    text += f" [{(ratio.low - 1) * 100:+.1f}, {(ratio.high - 1) * 100:+.1f}]"
    return text if ratio.significant else f"{text} {NOT_SIGNIFICANT}"


def metric_header(metric: Metric) -> str:
    return _HEADERS.get(metric.key) or metric.key.replace("_", " ")


def fmt_metric(case: CaseResult, metric: Metric) -> str:
    value = case.metric(metric.key)
    fmt = fmt_percent if metric.unit == "" else fmt_number  # unitless: a fraction (MFU)
    std = case.metric(metric.std_key)
    return fmt(value) if std is None or value is None else f"{fmt(value)} ± {fmt(std)}"


# --------------------------------------------------------------------------------------------
# The table model and its two renderers


@dataclass(frozen=True)
class Column:
    header: str
    numeric: bool = True  # right-aligned


@dataclass
class Table:
    title: str
    columns: list[Column]
    rows: list[list[str]]
    note: str = ""


def render_text(tables: Sequence[Table]) -> str:
    """Plain fixed-width text for the terminal."""
    blocks = []
    for table in tables:
        widths = [
            max([len(col.header), *(len(row[i]) for row in table.rows)])
            for i, col in enumerate(table.columns)
        ]

        def line(cells: Sequence[str], widths: list[int] = widths, table: Table = table) -> str:
            parts = [
                cell.rjust(w) if col.numeric else cell.ljust(w)
                for cell, w, col in zip(cells, widths, table.columns, strict=True)
            ]
            return "  ".join(parts).rstrip()

        lines = [table.title, line([c.header for c in table.columns])]
        lines.append("  ".join("-" * w for w in widths))
        lines += [line(row) for row in table.rows]
        if table.note:
            lines.append(table.note)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(tables: Sequence[Table], heading: str = "###") -> str:
    """GitHub-flavoured Markdown tables (fit for ``$GITHUB_STEP_SUMMARY`` and PR comments)."""
    blocks = []
    for table in tables:
        lines = [f"{heading} {table.title}", ""]
        lines.append("| " + " | ".join(_md_cell(c.header) for c in table.columns) + " |")
        lines.append("|" + "|".join("---:" if c.numeric else ":---" for c in table.columns) + "|")
        lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in table.rows]
        if table.note:
            lines += ["", table.note]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


# --------------------------------------------------------------------------------------------
# Building the tables


def _optimization_order(cases: Sequence[CaseResult]) -> dict[str, int]:
    """The reference optimization first, then optimizations in the order they ran."""
    order = dict.fromkeys([REFERENCE_OPTIMIZATION, *(c.optimization for c in cases)])
    return {name: i for i, name in enumerate(order)}


def sort_cases(cases: Sequence[CaseResult]) -> list[CaseResult]:
    """Group by shape: the optimizations of one batch size and length sit next to each other."""
    rank = _optimization_order(cases)
    return sorted(
        cases,
        key=lambda c: (
            str(c.model),
            c.batch_size or 0,
            c.seq_len or 0,
            c.variant,
            rank[c.optimization],
        ),
    )


def where(cases: Iterable[CaseResult]) -> str:
    """Model and device of some cases, e.g. ``tiny, cpu (Intel(R) Xeon(R) Processor)``."""
    cases = list(cases)
    models = sorted({str(c.model) for c in cases if c.model})
    devices = sorted({_device_text(c) for c in cases if c.device})
    return ", ".join(filter(None, [" / ".join(models), " / ".join(devices)]))


def _device_text(case: CaseResult) -> str:
    name = case.extra.get("device_name")
    return f"{case.device} ({name})" if name and name != case.device else str(case.device)


def _title(phase: str, cases: Sequence[CaseResult]) -> str:
    place = where(cases)
    return f"{phase}" + (f" ({place})" if place else "")


def _has(cases: Sequence[CaseResult], key: str) -> bool:
    return any(c.extra.get(key) is not None for c in cases)


Cell = Callable[[CaseResult, Mapping[str, Ratio | None]], str]


def _metric_columns(cases: Sequence[CaseResult]) -> list[tuple[Column, Cell]]:
    """(column, cell function) pairs; optional columns appear only when some case has them."""
    cols: list[tuple[Column, Cell]] = [
        (Column("optimization", numeric=False), lambda c, s: c.optimization),
        (Column("batch"), lambda c, s: str(c.batch_size or MISSING)),
        (Column("seq_len"), lambda c, s: str(c.seq_len or MISSING)),
        (
            Column("median ms ± std"),
            lambda c, s: f"{fmt_number(c.median_ms)} ± {fmt_number(c.stddev_s * 1e3)}",
        ),
        (Column("rounds"), lambda c, s: str(c.rounds)),
    ]
    shape = [
        ("strategy", Column("strategy", numeric=False), lambda c, s: c.extra.get("strategy") or ""),
        ("new_tokens", Column("new tokens"), lambda c, s: fmt_int(c.metric("new_tokens"))),
        ("world_size", Column("world size"), lambda c, s: fmt_int(c.metric("world_size"))),
    ]
    cols += [(col, cell) for key, col, cell in shape if _has(cases, key)]
    cols += [
        (Column(metric_header(m)), lambda c, s, m=m: fmt_metric(c, m))  # type: ignore[misc]
        for m in EXTRA_METRICS
        if _has(cases, m.key) and m.test != "counter"
    ]
    cols += [
        (Column(header), lambda c, s, keys=keys: _counters_cell(c, keys))  # type: ignore[misc]
        for header, keys in COUNTER_COLUMNS
        if any(_has(cases, k) for k in keys)
    ]
    cols.append((Column(f"speedup vs {REFERENCE_OPTIMIZATION}"), _speedup_cell))
    return cols


# The exact counters (metrics.py, test "counter") share a few columns instead of one each.
COUNTER_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("syncs · ops · allocs", ("host_syncs_per_step", "ops_per_step", "allocs_per_step")),
    ("launches · DtoH", ("kernel_launches_per_step", "dtoh_copies_per_step")),
    (
        "graphs · breaks · recompiles · in rounds",
        ("compile_graphs", "compile_graph_breaks", "compile_recompiles", "recompiles_in_rounds"),
    ),
)
# short names of the counters in a "Δ counters" cell
_COUNTER_SHORT = {
    "ops_per_step": "ops",
    "host_syncs_per_step": "syncs",
    "allocs_per_step": "allocs",
    "kernel_launches_per_step": "launches",
    "dtoh_copies_per_step": "DtoH",
    "compile_graphs": "graphs",
    "compile_graph_breaks": "breaks",
    "compile_recompiles": "recompiles",
    "recompiles_in_rounds": "recompiles in rounds",
}


def _counters_cell(case: CaseResult, keys: Sequence[str]) -> str:
    return " · ".join(fmt_int(case.metric(k)) for k in keys)


def counters_change(case: CaseResult, baseline: CaseResult) -> str:
    """``syncs +2, ops +4``: the counters that differ from the baseline; ``=`` when none does."""
    moved = []
    for key, short in _COUNTER_SHORT.items():
        now, before = case.metric(key), baseline.metric(key)
        if now is not None and before is not None and now != before:
            moved.append(f"{short} {now - before:+,.0f}")
    return ", ".join(moved) or "="


def _speedup_cell(case: CaseResult, ups: Mapping[str, Ratio | None]) -> str:
    if case.optimization == REFERENCE_OPTIMIZATION and ups[case.key] is not None:
        return "1.00x (reference)"  # itself: an interval around 1x would only be noise
    return fmt_ratio(ups[case.key])


def phase_table(phase: str, cases: Sequence[CaseResult]) -> Table:
    """One row per case of one phase, with its speedup against the reference optimization."""
    ordered = sort_cases(cases)
    ups = speedup_ratios(ordered)
    spec = _metric_columns(ordered)
    note = INTERVAL_NOTE
    if not any(c.optimization == REFERENCE_OPTIMIZATION for c in ordered):
        note = f"No {REFERENCE_OPTIMIZATION} case in these results, so no speedup is computed."
    return Table(
        title=_title(phase, ordered),
        columns=[col for col, _ in spec],
        rows=[[cell(c, ups) for _, cell in spec] for c in ordered],
        note=note,
    )


def baseline_ratios(case: CaseResult, baseline: CaseResult) -> dict[str, Ratio | None]:
    """this / baseline per metric (median time, then every registry metric), with intervals."""
    out: dict[str, Ratio | None] = {"median": time_ratio(case, baseline)}
    for m in EXTRA_METRICS:
        out[m.key] = metric_ratio(case, baseline, m.key, m.std_key)
    return out


def baseline_changes(
    case: CaseResult, baseline: CaseResult | None
) -> dict[str, float | None] | None:
    """Relative change per metric against the same case in a baseline file."""
    if baseline is None:
        return None
    changes = {"median": relative_change(case.median_s, baseline.median_s)}
    for m in EXTRA_METRICS:
        changes[m.key] = relative_change(case.metric(m.key), baseline.metric(m.key))
    return changes


def baseline_table(
    phase: str, cases: Sequence[CaseResult], baseline: Sequence[CaseResult]
) -> Table:
    """Per case: median before and after, and the relative change of each metric."""
    by_key = {c.key: c for c in baseline if c.phase == phase}
    both = [c for c in cases if c.key in by_key] + list(by_key.values())
    metrics = [m for m in EXTRA_METRICS if _has(both, m.key) and m.test != "counter"]
    counted = any(_has(both, k) for k in _COUNTER_SHORT)
    rows = []
    for case in sort_cases(cases):
        old = by_key.pop(case.key, None)
        ratios = baseline_ratios(case, old) if old else {}
        before = fmt_number(old.median_ms) if old else "not in baseline"
        rows.append(
            [case.optimization, str(case.batch_size or MISSING), str(case.seq_len or MISSING)]
            + [before, fmt_number(case.median_ms), fmt_change(ratios.get("median"))]
            + [fmt_change(ratios.get(m.key)) for m in metrics]
            + ([counters_change(case, old) if old else MISSING] if counted else [])
        )
    note = (
        "Change = (this run - baseline) / baseline, with its 95% interval "
        f"({NOT_SIGNIFICANT}: not significant; `gpt2-bench compare` gives the gate's verdict). "
        "Time and memory: lower is better."
    )
    if by_key:
        note += " Only in the baseline: " + ", ".join(sorted(c.name for c in by_key.values()))
    headers = ["optimization", "batch", "seq_len", "baseline median ms", "median ms", "Δ median"]
    headers += [f"Δ {metric_header(m)}" for m in metrics]
    headers += ["Δ counters"] if counted else []
    return Table(
        title=f"{phase}: change vs baseline",
        columns=[Column(h, numeric=h != "optimization") for h in headers],
        rows=rows,
        note=note,
    )


def build_tables(
    cases: Sequence[CaseResult], baseline: Sequence[CaseResult] | None = None
) -> list[Table]:
    tables = []
    for phase in phases_in(cases):
        in_phase = [c for c in cases if c.phase == phase]
        tables.append(phase_table(phase, in_phase))
        if baseline is not None:
            tables.append(baseline_table(phase, in_phase, baseline))
    return tables


def noise_warning(cases: Sequence[CaseResult], limit: float = HIGH_CV) -> str:
    """One paragraph when some case's round times vary too much to trust small differences."""
    noisy = noisy_cases(cases, limit)
    if not noisy:
        return ""
    worst = ", ".join(f"{c.name} {fmt_percent(c.cv)}" for c in noisy[:3])
    return (
        f"warning: {len(noisy)} of {len(cases)} cases vary by more than {limit:.0%} from round to "
        f"round (CV; worst: {worst}); their speedups and changes are mostly noise. On a shared "
        "or small CPU machine try `--gpt2-threads 1`, stop other jobs, or raise `--gpt2-rounds`.\n"
    )


# A round with this many page faults (4 MiB of fresh pages) ran measurably slower here: about
# 13 us a fault on the 2-vCPU microVM, 13 ms against a 25-800 ms step (docs/measuring.md).
FAULTED_ROUND = 1000


def fault_warning(benchmarks: Sequence[Mapping[str, Any]], least: int = FAULTED_ROUND) -> str:
    """One paragraph naming the cases whose timed rounds took page faults (``round_page_faults``:
    information, not judged), or ''."""
    faulted = []
    for bench in benchmarks:
        faults = (bench.get("extra_info") or {}).get("round_page_faults")
        if not isinstance(faults, list):
            continue
        hit = [f for f in faults if isinstance(f, int | float) and f >= least]
        if hit:
            faulted.append(
                f"{bench.get('name')} {len(hit)} of {len(faults)} (up to {max(hit):,.0f})"
            )
    if not faulted:
        return ""
    return (
        f"note: {len(faulted)} case{'s' if len(faulted) > 1 else ''} took {least:,} or more "
        "page faults in some timed rounds "
        f"({'; '.join(faulted[:3])}): those rounds touched memory the OS had not given the "
        'process yet, and ran slower for it (docs/measuring.md, "Host allocator").\n'
    )


def console_summary(benchmarks: list[dict[str, Any]]) -> str:
    """The end-of-session summary: one plain-text table per phase (same tables as report.md),
    speedups with their intervals from ``stats.data``, and a warning when rounds are noisy."""
    cases = cases_from_benchmarks(b for b in benchmarks if b.get("stats"))
    if not cases:
        return ""
    text = render_text(build_tables(cases))
    warning = noise_warning(cases) + fault_warning(benchmarks)
    return text + ("\n" + warning if warning else "")
