"""Summary tables and plots from pytest-benchmark result files.

One table model (:class:`Table`), two renderers (:func:`render_text` for the console,
:func:`render_markdown` for ``report.md``, ``$GITHUB_STEP_SUMMARY`` and PR comments), and PNG
plots drawn with matplotlib's object-oriented API on the Agg canvas (no pyplot, no display).

Input is the pytest-benchmark JSON layout: ``benchmarks[]`` entries with ``name``, ``fullname``,
``params``, ``stats`` (seconds) and our flat ``extra_info`` keys. Nothing here imports pytest, and
matplotlib is imported only when a plot is drawn, so the console summary stays cheap.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

REFERENCE_RECIPE = "eager-fp32"
PHASE_ORDER = ("train", "infer", "generate", "distill")
MISSING = "n/a"

# Benchmark function name -> phase, for result files whose extra_info lacks "phase".
_PHASE_BY_FUNCTION = {
    "test_train": "train",
    "test_infer": "infer",
    "test_generate": "generate",
    "test_distill": "distill",
}
# The id part of a benchmark name: "<optimization>-b<batch>-s<seq_len>[-<extra>...]".
_CASE_ID = re.compile(r"^(?P<opt>.+?)-b(?P<batch>\d+)-s(?P<seq>\d+)(?:-(?P<variant>.*))?$")


# --------------------------------------------------------------------------------------------
# Loading and rows


@dataclass(frozen=True)
class CaseResult:
    """One benchmark entry reduced to what the tables and plots need."""

    name: str
    key: str  # matches a case across result files (pytest-benchmark's fullname)
    phase: str
    optimization: str
    model: str | None
    device: str | None
    batch_size: int | None
    seq_len: int | None
    median_s: float
    stddev_s: float
    rounds: int
    extra: Mapping[str, Any] = field(default_factory=dict)
    # What else the id names besides recipe and shape, e.g. "n32" (generate: 32 new tokens) or
    # "ddp w2" (distributed: strategy and world size). Part of the shape key.
    variant: str = ""

    def metric(self, key: str) -> float | None:
        """A numeric ``extra_info`` value, or None when absent, null or not a finite number."""
        return finite(self.extra.get(key))

    @property
    def median_ms(self) -> float:
        return self.median_s * 1e3

    @property
    def shape_key(self) -> tuple[Any, ...]:
        """Cases that share this key differ only in the optimization recipe."""
        return (self.phase, self.model, self.device, self.batch_size, self.seq_len, self.variant)

    @property
    def series(self) -> str:
        """A line, bar colour or heatmap panel in the plots: the recipe, and the variant if any."""
        return f"{self.optimization} {self.variant}" if self.variant else self.optimization


def finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def load_results(path: str | Path) -> dict[str, Any]:
    """Read one pytest-benchmark JSON file (``--benchmark-json`` or ``.benchmarks/`` storage)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{path}: not a pytest-benchmark results file (no 'benchmarks' list)")
    return data


def _split_name(name: str) -> tuple[str, str]:
    function, _, param = name.partition("[")
    return function, param.rstrip("]")


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def case_from_benchmark(bench: Mapping[str, Any]) -> CaseResult:
    """Build a row from one ``benchmarks[]`` entry; ids fill in what ``extra_info`` lacks."""
    name = str(bench["name"])
    extra = dict(bench.get("extra_info") or {})
    stats = bench["stats"]
    function, param = _split_name(name)
    parsed = _CASE_ID.match(param)
    batch = _int_or_none(extra.get("batch_size"))
    seq = _int_or_none(extra.get("seq_len"))
    optimization = str(
        extra.get("optimization") or (parsed.group("opt") if parsed else param or name)
    )
    return CaseResult(
        name=name,
        key=str(bench.get("fullname") or name),
        phase=str(extra.get("phase") or _PHASE_BY_FUNCTION.get(function, function)),
        optimization=optimization,
        model=extra.get("model"),
        device=extra.get("device"),
        batch_size=batch if batch is not None or not parsed else int(parsed.group("batch")),
        seq_len=seq if seq is not None or not parsed else int(parsed.group("seq")),
        median_s=float(stats["median"]),
        stddev_s=float(stats.get("stddev") or 0.0),
        rounds=int(stats.get("rounds") or len(stats.get("data") or ())),
        extra=extra,
        variant=_variant(parsed, optimization),
    )


def _variant(parsed: re.Match[str] | None, optimization: str) -> str:
    """The id's words before the recipe (a strategy) and after the shape (``n32``, ``w2``)."""
    if parsed is None:
        return ""
    head = parsed.group("opt")
    prefix = head[: -len(optimization)].rstrip("-") if head.endswith(optimization) else ""
    return " ".join(filter(None, [prefix, parsed.group("variant") or ""]))


def cases_from_benchmarks(benchmarks: Iterable[Mapping[str, Any]]) -> list[CaseResult]:
    return [case_from_benchmark(b) for b in benchmarks]


# --------------------------------------------------------------------------------------------
# Arithmetic


def speedup(reference_median: float | None, median: float | None) -> float | None:
    """How many times faster than the reference: reference time / this time (>1 is faster)."""
    if reference_median is None or median is None or reference_median <= 0 or median <= 0:
        return None
    return reference_median / median


def relative_change(new: float | None, old: float | None) -> float | None:
    """(new - old) / old: +0.05 is 5% more than the baseline; None when not comparable."""
    if new is None or old is None or old == 0:
        return None
    return (new - old) / old


def speedups(
    cases: Sequence[CaseResult], reference: str = REFERENCE_RECIPE
) -> dict[str, float | None]:
    """Speedup of every case against the reference recipe of the same phase, model and shape."""
    reference_median = {c.shape_key: c.median_s for c in cases if c.optimization == reference}
    return {c.key: speedup(reference_median.get(c.shape_key), c.median_s) for c in cases}


def baseline_changes(
    case: CaseResult, baseline: CaseResult | None
) -> dict[str, float | None] | None:
    """Relative change per metric against the same case in a baseline file."""
    if baseline is None:
        return None
    changes = {"median": relative_change(case.median_s, baseline.median_s)}
    for key in ("samples_per_s", "tokens_per_s", "peak_memory_mb"):
        changes[key] = relative_change(case.metric(key), baseline.metric(key))
    return changes


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


def phases_in(cases: Iterable[CaseResult]) -> list[str]:
    found = dict.fromkeys(c.phase for c in cases)
    return [p for p in PHASE_ORDER if p in found] + sorted(p for p in found if p not in PHASE_ORDER)


def _recipe_order(cases: Sequence[CaseResult]) -> dict[str, int]:
    """The reference recipe first, then recipes in the order they ran."""
    order = dict.fromkeys([REFERENCE_RECIPE, *(c.optimization for c in cases)])
    return {name: i for i, name in enumerate(order)}


def sort_cases(cases: Sequence[CaseResult]) -> list[CaseResult]:
    """Group by shape so that the recipes of one batch size and length sit next to each other."""
    rank = _recipe_order(cases)
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


def _title(phase: str, cases: Sequence[CaseResult]) -> str:
    models = sorted({str(c.model) for c in cases if c.model})
    devices = sorted({str(c.device) for c in cases if c.device})
    where = ", ".join(filter(None, [" / ".join(models), " / ".join(devices)]))
    return f"{phase}" + (f" ({where})" if where else "")


def _has(cases: Sequence[CaseResult], key: str) -> bool:
    return any(c.extra.get(key) is not None for c in cases)


def _metric_columns(cases: Sequence[CaseResult]) -> list[tuple[Column, Any]]:
    """(column, cell function) pairs; optional columns appear only when some case has them."""
    cols: list[tuple[Column, Any]] = [
        (Column("recipe", numeric=False), lambda c, s: c.optimization),
        (Column("batch"), lambda c, s: str(c.batch_size or MISSING)),
        (Column("seq_len"), lambda c, s: str(c.seq_len or MISSING)),
        (
            Column("median ms ± std"),
            lambda c, s: f"{fmt_number(c.median_ms)} ± {fmt_number(c.stddev_s * 1e3)}",
        ),
        (Column("rounds"), lambda c, s: str(c.rounds)),
        (Column("samples/s"), lambda c, s: fmt_number(c.metric("samples_per_s"))),
        (Column("tokens/s"), lambda c, s: fmt_number(c.metric("tokens_per_s"))),
        (Column("peak MB"), lambda c, s: fmt_number(c.metric("peak_memory_mb"))),
    ]
    optional = [
        ("strategy", Column("strategy", numeric=False), lambda c, s: c.extra.get("strategy") or ""),
        ("new_tokens", Column("new tokens"), lambda c, s: fmt_int(c.metric("new_tokens"))),
        ("world_size", Column("world size"), lambda c, s: fmt_int(c.metric("world_size"))),
        (
            "achieved_tflops",
            Column("TFLOP/s"),
            lambda c, s: fmt_number(c.metric("achieved_tflops")),
        ),
        ("mfu", Column("MFU"), lambda c, s: fmt_percent(c.metric("mfu"))),
        ("ttft_ms", Column("TTFT ms"), lambda c, s: fmt_number(c.metric("ttft_ms"))),
        ("tpot_ms", Column("TPOT ms"), lambda c, s: fmt_number(c.metric("tpot_ms"))),
        (
            "decode_tokens_per_s",
            Column("decode tok/s"),
            lambda c, s: fmt_number(c.metric("decode_tokens_per_s")),
        ),
    ]
    cols += [(col, cell) for key, col, cell in optional if _has(cases, key)]
    cols.append((Column(f"speedup vs {REFERENCE_RECIPE}"), lambda c, s: fmt_speedup(s[c.key])))
    return cols


def phase_table(phase: str, cases: Sequence[CaseResult]) -> Table:
    """One row per case of one phase, with its speedup against the reference recipe."""
    ordered = sort_cases(cases)
    ups = speedups(ordered)
    spec = _metric_columns(ordered)
    note = ""
    if not any(c.optimization == REFERENCE_RECIPE for c in ordered):
        note = f"No {REFERENCE_RECIPE} case in these results, so no speedup is computed."
    return Table(
        title=_title(phase, ordered),
        columns=[col for col, _ in spec],
        rows=[[cell(c, ups) for _, cell in spec] for c in ordered],
        note=note,
    )


def baseline_table(
    phase: str, cases: Sequence[CaseResult], baseline: Sequence[CaseResult]
) -> Table:
    """Per case: median before and after, and the relative change of each metric."""
    by_key = {c.key: c for c in baseline if c.phase == phase}
    rows = []
    for case in sort_cases(cases):
        old = by_key.pop(case.key, None)
        changes = baseline_changes(case, old) or {}
        before = fmt_number(old.median_ms) if old else "not in baseline"
        rows.append(
            [
                case.optimization,
                str(case.batch_size or MISSING),
                str(case.seq_len or MISSING),
                before,
                fmt_number(case.median_ms),
                *(
                    fmt_percent(changes.get(k), signed=True)
                    for k in ("median", "samples_per_s", "tokens_per_s", "peak_memory_mb")
                ),
            ]
        )
    note = "Change = (this run - baseline) / baseline. Time and memory: lower is better."
    if by_key:
        note += " Only in the baseline: " + ", ".join(sorted(c.name for c in by_key.values()))
    headers = ["recipe", "batch", "seq_len", "baseline median ms", "median ms"]
    headers += ["Δ median", "Δ samples/s", "Δ tokens/s", "Δ peak MB"]
    return Table(
        title=f"{phase}: change vs baseline",
        columns=[Column(h, numeric=h != "recipe") for h in headers],
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


def console_summary(benchmarks: list[dict[str, Any]]) -> str:
    """The end-of-session summary: one plain-text table per phase (same tables as report.md)."""
    cases = cases_from_benchmarks(b for b in benchmarks if b.get("stats"))
    if not cases:
        return ""
    return render_text(build_tables(cases))


# --------------------------------------------------------------------------------------------
# Plots


@dataclass(frozen=True)
class Plot:
    path: Path
    title: str
    caption: str


def _new_figure(
    n_panels: int, n_cols: int = 3, panel_size: tuple[float, float] = (4.8, 3.6)
) -> Figure:
    from matplotlib.figure import Figure

    ncols = min(n_panels, n_cols)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    fig.subplots(nrows, ncols, squeeze=False)
    for ax in fig.axes[n_panels:]:
        ax.set_visible(False)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _series(cases: Sequence[CaseResult]) -> list[str]:
    """Plot series in table order: the reference recipe first."""
    rank = _recipe_order(cases)
    order = {c.series: (rank[c.optimization], c.variant) for c in cases}
    return sorted(order, key=order.__getitem__)


def _sorted_values(values: Iterable[int | None]) -> list[int]:
    return sorted({v for v in values if v is not None})


# Colour-bar ticks of the speedup heatmap: reciprocal pairs around 1x.
_SPEEDUP_TICKS = sorted({*(2.0**k for k in range(-8, 9)), 1.25, 0.8, 1.5, 1 / 1.5})


def plot_speedup_heatmap(phase: str, cases: Sequence[CaseResult], path: Path) -> Path | None:
    """Speedup against eager-fp32 over batch size x sequence length, one panel per recipe."""
    import numpy as np
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm

    ups = speedups(cases)
    recipes = [
        r
        for r in _series(cases)
        if any(
            ups[c.key] is not None
            for c in cases
            if c.series == r and c.optimization != REFERENCE_RECIPE
        )
    ]
    if not recipes:
        return None
    batches = _sorted_values(c.batch_size for c in cases)
    seqs = _sorted_values(c.seq_len for c in cases)
    values = [v for v in ups.values() if v is not None]
    # A log scale symmetric around 1.0 (no change): green is faster, red slower than eager-fp32,
    # and a 2x slowdown is as red as a 2x speedup is green.
    extreme = max(max(values), 1 / min(values), 1.25)
    norm = LogNorm(vmin=1 / extreme, vmax=extreme)
    fig = _new_figure(len(recipes), panel_size=(5.6, 3.8))
    for ax, recipe in zip(fig.axes, recipes, strict=False):
        grid = np.full((len(batches), len(seqs)), np.nan)
        for c in cases:
            value = ups[c.key]
            if c.series == recipe and value is not None and c.batch_size and c.seq_len:
                grid[batches.index(c.batch_size), seqs.index(c.seq_len)] = value
        ax.imshow(grid, cmap="RdYlGn", norm=norm, origin="lower", aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            text = "n/a" if np.isnan(value) else f"{value:.2f}x"
            dark = not np.isnan(value) and abs(float(norm(value)) - 0.5) > 0.35
            ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black")
        ax.set_xticks(range(len(seqs)), [str(s) for s in seqs])
        ax.set_yticks(range(len(batches)), [str(b) for b in batches])
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel("batch size (samples)")
        ax.set_title(f"{recipe} vs {REFERENCE_RECIPE}")
    bar = fig.colorbar(
        ScalarMappable(norm=norm, cmap="RdYlGn"),
        ax=fig.axes[: len(recipes)],
        label="speedup (x, >1 is faster)",
    )
    ticks = [t for t in _SPEEDUP_TICKS if 1 / extreme <= t <= extreme]
    if len(ticks) > 9:
        ticks = [t for t in ticks if math.log2(t).is_integer()]
    bar.set_ticks(ticks, labels=[f"{t:.2f}".rstrip("0").rstrip(".") + "x" for t in ticks])
    bar.minorticks_off()
    fig.suptitle(f"{phase}: speedup vs {REFERENCE_RECIPE} (median step time)")
    return _save(fig, path)


def _memory_label(cases: Sequence[CaseResult]) -> str:
    kinds = sorted({str(c.extra.get("memory_kind")) for c in cases if c.extra.get("memory_kind")})
    return "peak memory (MB" + (", " + " / ".join(kinds) if kinds else "") + ")"


def _line_panels(
    cases: Sequence[CaseResult],
    panel_attr: str,
    x_attr: str,
    metric: str,
    ax_labels: tuple[str, str],
    panel_label: str,
) -> Figure | None:
    """One panel per value of ``panel_attr``, one line per recipe: ``metric`` against ``x_attr``."""
    panels = _sorted_values(getattr(c, panel_attr) for c in cases)
    if not panels or not _has(cases, metric):
        return None
    fig = _new_figure(len(panels))
    for ax, panel in zip(fig.axes, panels, strict=False):
        for n, recipe in enumerate(_series(cases)):
            points = sorted(
                (getattr(c, x_attr), c.metric(metric), c.metric(f"{metric}_std"))
                for c in cases
                if c.series == recipe
                and getattr(c, panel_attr) == panel
                and getattr(c, x_attr) is not None
                and c.metric(metric) is not None
            )
            if points:
                xs, ys, errs = zip(*points, strict=True)
                yerr = [e or 0.0 for e in errs] if any(errs) else None
                # Marker and dash vary too, so that recipes with equal values stay visible.
                marker, dash = "os^vDP*X"[n % 8], ("-", "--", ":", "-.")[n % 4]
                ax.errorbar(
                    xs, ys, yerr=yerr, capsize=3, label=recipe, marker=marker, linestyle=dash
                )
        _finish_line_axes(ax, cases, x_attr, ax_labels, f"{panel_label} {panel}")
    return fig


def _finish_line_axes(
    ax: Axes, cases: Sequence[CaseResult], x_attr: str, labels: tuple[str, str], title: str
) -> None:
    xs = _sorted_values(getattr(c, x_attr) for c in cases)
    if len(xs) > 2 and xs[-1] / xs[0] >= 8:
        ax.set_xscale("log", base=2)  # grids usually double batch and length
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def plot_memory(phase: str, cases: Sequence[CaseResult], path: Path) -> Path | None:
    """Peak memory against batch size, one line per recipe, one panel per sequence length."""
    labels = ("batch size (samples)", _memory_label(cases))
    fig = _line_panels(cases, "seq_len", "batch_size", "peak_memory_mb", labels, "seq_len")
    if fig is None:
        return None
    fig.suptitle(f"{phase}: peak memory during the measured rounds (error bars: std)")
    return _save(fig, path)


def plot_throughput(phase: str, cases: Sequence[CaseResult], path: Path) -> Path | None:
    """Tokens per second against sequence length, one line per recipe, one panel per batch."""
    labels = ("sequence length (tokens)", "throughput (tokens/s)")
    if phase == "generate":  # seq_len is the prompt; tokens_per_s counts generated tokens
        labels = ("prompt length (tokens)", "throughput (generated tokens/s)")
    fig = _line_panels(cases, "batch_size", "seq_len", "tokens_per_s", labels, "batch size")
    if fig is None:
        return None
    fig.suptitle(f"{phase}: throughput, mean over measured rounds (error bars: std)")
    return _save(fig, path)


def plot_generation(cases: Sequence[CaseResult], path: Path) -> Path | None:
    """Time to first token and time per output token: bars grouped by shape, one per recipe."""
    shown = [c for c in cases if c.metric("ttft_ms") is not None or c.metric("tpot_ms") is not None]
    if not shown:
        return None
    shapes = sorted({(c.batch_size or 0, c.seq_len or 0) for c in shown})
    recipes = _series(shown)
    width = 0.8 / len(recipes)
    fig = _new_figure(2, n_cols=1, panel_size=(max(6.0, 1.0 + 0.45 * len(shown)), 3.4))
    metrics = (("ttft_ms", "time to first token (ms)"), ("tpot_ms", "time per output token (ms)"))
    for ax, (key, what) in zip(fig.axes, metrics, strict=True):
        for i, recipe in enumerate(recipes):
            by_shape = {
                (c.batch_size or 0, c.seq_len or 0): c.metric(key)
                for c in shown
                if c.series == recipe
            }
            xs = [j + (i - (len(recipes) - 1) / 2) * width for j in range(len(shapes))]
            values = [by_shape.get(shape) for shape in shapes]
            bars = ax.bar(xs, [v or 0.0 for v in values], width, label=recipe)
            ax.bar_label(bars, labels=[fmt_number(v) for v in values], fontsize=7)
        ax.set_xticks(range(len(shapes)), [f"b{b} s{s}" for b, s in shapes])
        ax.set_xlabel("batch size (b, samples) and prompt length (s, tokens)")
        ax.set_ylabel(what)
        ax.set_title(what.split(" (")[0] + " (lower is better)")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("generate: prefill latency (TTFT) and decode latency per token (TPOT)")
    return _save(fig, path)


def write_plots(cases: Sequence[CaseResult], out_dir: Path) -> dict[str, list[Plot]]:
    """Every plot the results support, per phase; a plot without data is left out."""
    plots: dict[str, list[Plot]] = {}
    for phase in phases_in(cases):
        in_phase = [c for c in cases if c.phase == phase]
        drawn = [
            (
                plot_speedup_heatmap(phase, in_phase, out_dir / f"speedup_{phase}.png"),
                "Speedup heatmap",
                f"Median step time of {REFERENCE_RECIPE} divided by that of each recipe, per "
                "batch size and sequence length: above 1 (green) the recipe is faster.",
            ),
            (
                plot_memory(phase, in_phase, out_dir / f"memory_{phase}.png"),
                "Peak memory",
                "Peak memory against batch size, one line per recipe, one panel per length.",
            ),
            (
                plot_throughput(phase, in_phase, out_dir / f"throughput_{phase}.png"),
                "Throughput",
                "Tokens per second against sequence length, one panel per batch size.",
            ),
        ]
        if phase == "generate":
            drawn.append(
                (
                    plot_generation(in_phase, out_dir / "generation_latency.png"),
                    "Generation latency",
                    "Time to first token (prefill) and time per output token (decode).",
                )
            )
        plots[phase] = [Plot(p, t, cap) for p, t, cap in drawn if p is not None]
    return plots


# --------------------------------------------------------------------------------------------
# report.md


def _environment_lines(results: Mapping[str, Any]) -> list[str]:
    """Where and what ran, from machine_info (our ``gpt2`` dict) and commit_info."""
    machine = results.get("machine_info") or {}
    gpt2 = machine.get("gpt2") or {}
    commit = results.get("commit_info") or {}
    device = " ".join(filter(None, [gpt2.get("device"), f"({gpt2.get('device_name')})"]))
    facts = [
        ("device", device if gpt2.get("device_name") else gpt2.get("device")),
        ("CPU", gpt2.get("cpu_model") or (machine.get("cpu") or {}).get("brand_raw")),
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


def render_report(
    results: Mapping[str, Any],
    cases: Sequence[CaseResult],
    plots: Mapping[str, list[Plot]],
    baseline: Sequence[CaseResult] | None,
    image_dir: Path,
) -> str:
    lines = ["# gpt2-bench report", ""]
    lines += _environment_lines(results)
    lines += [
        "",
        f"Times are the median over measured rounds ± their standard deviation; throughput is "
        f"the mean over rounds; speedup is the median time of {REFERENCE_RECIPE} divided by the "
        "recipe's, for the same phase, model, batch size and length.",
        "",
    ]
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
    """Write ``out_dir/report.md`` and its PNG plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = [load_results(p) for p in results_paths]
    cases = cases_from_benchmarks(b for data in loaded for b in data["benchmarks"])
    baseline = None
    if baseline_path is not None:
        baseline = cases_from_benchmarks(load_results(baseline_path)["benchmarks"])
    plots = write_plots(cases, out)
    report = out / "report.md"
    report.write_text(render_report(loaded[0], cases, plots, baseline, out), encoding="utf-8")
    return ReportFiles(report, [p.path for phase_plots in plots.values() for p in phase_plots])


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
    """Exit status 0, or 2 when an input file is missing or not a results file."""
    try:
        files = write_report(args.results, args.out, args.baseline)
    except (OSError, ValueError, KeyError) as exc:  # JSONDecodeError is a ValueError
        print(f"gpt2-bench report: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {files.report} and {len(files.plots)} plot(s) in {files.report.parent}")
    return 0


def summary_statistics(cases: Sequence[CaseResult]) -> dict[str, float]:
    """Per-phase best speedup against the reference: a one-number answer for dashboards."""
    out: dict[str, float] = {}
    for phase in phases_in(cases):
        in_phase = [c for c in cases if c.phase == phase]
        by_key = speedups(in_phase)
        ups = [
            value
            for c in in_phase
            if c.optimization != REFERENCE_RECIPE and (value := by_key[c.key]) is not None
        ]
        if ups:
            out[f"{phase}/best_speedup_vs_{REFERENCE_RECIPE}"] = max(ups)
            out[f"{phase}/median_speedup_vs_{REFERENCE_RECIPE}"] = statistics.median(ups)
    return out
