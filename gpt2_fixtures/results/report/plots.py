"""PNG plots drawn with matplotlib's object-oriented API on the Agg canvas (no pyplot, no display).

matplotlib is imported only when a plot is drawn, so the console summary stays cheap. Every figure
names its phase, model and device; speedups carry their 95% interval, and a speedup that is not
significant is drawn neutral (grey) and says ``n.s.``.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gpt2_fixtures.config import Phase
from gpt2_fixtures.results.report.cases import (
    REFERENCE_OPTIMIZATION,
    CaseResult,
    Ratio,
    speedup_ratios,
)
from gpt2_fixtures.results.report.tables import (
    NOT_SIGNIFICANT,
    _has,
    _optimization_order,
    fmt_number,
    where,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

NEUTRAL = "#d9d9d9"  # a speedup whose interval holds 1x: no colour claims a difference
FASTER, SLOWER = "#1a9850", "#d73027"
MEMORY_NOTE = "read in settled untimed steps after the timed rounds"


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
    # At least 7 inches wide, so that a one-panel figure's title needs no more than three lines.
    width = max(7.0, panel_size[0] * ncols)
    fig = Figure(figsize=(width, panel_size[1] * nrows), layout="constrained")
    fig.subplots(nrows, ncols, squeeze=False)
    for ax in fig.axes[n_panels:]:
        ax.set_visible(False)
    return fig


def _save(fig: Figure, path: Path, title: str, cases: Sequence[CaseResult]) -> Path:
    """Title the figure with the phase's model and device, wrapped to the figure's width."""
    chars = max(30, int(fig.get_figwidth() * 11))  # about 11 characters per inch at 12 pt
    lines = [title, where(cases)]
    fig.suptitle("\n".join(textwrap.fill(line, chars) for line in lines if line), fontsize=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def series_label(series: str) -> str:
    """Plot labels spell out the id's short words: ``n32`` is 32 new tokens, ``w2`` 2 ranks."""
    series = re.sub(r"\bn(\d+)\b", r"\1 new tokens", series)
    return re.sub(r"\bw(\d+)\b", r"world size \1", series)


def _series(cases: Sequence[CaseResult]) -> list[str]:
    """Plot series in table order: the reference optimization first."""
    rank = _optimization_order(cases)
    order = {c.series: (rank[c.optimization], c.variant) for c in cases}
    return sorted(order, key=order.__getitem__)


def _sorted_values(values: Iterable[int | None]) -> list[int]:
    return sorted({v for v in values if v is not None})


def _length_label(phase: str) -> str:
    return Phase.of(phase).axis


# --------------------------------------------------------------------------------------------
# Speedup


# Colour-bar ticks of the speedup heatmap: reciprocal pairs around 1x.
_SPEEDUP_TICKS = sorted({*(2.0**k for k in range(-8, 9)), 1.25, 0.8, 1.5, 1 / 1.5})


def _ratio_text(r: Ratio) -> str:
    if r.low is None or r.high is None:
        return f"{r.value:.2f}x\n(no interval)"
    text = f"{r.value:.2f}x\n[{r.low:.2f}, {r.high:.2f}]"
    return text if r.significant else f"{text}\n{NOT_SIGNIFICANT}"


def plot_speedup_heatmap(phase: str, cases: Sequence[CaseResult], path: Path) -> Path | None:
    """Speedup against eager-fp32 over batch size x sequence length, one panel per optimization;
    a grid of a single shape becomes a bar chart (a 1x1 heatmap says nothing a bar does not)."""
    ups = speedup_ratios(cases)
    shown = [
        c for c in cases if ups[c.key] is not None and c.optimization != REFERENCE_OPTIMIZATION
    ]
    if not shown:
        return None
    batches = _sorted_values(c.batch_size for c in cases)
    seqs = _sorted_values(c.seq_len for c in cases)
    if len(batches) <= 1 and len(seqs) <= 1:
        return plot_speedup_bars(phase, cases, path)
    return _heatmap(phase, cases, ups, batches, seqs, path)


def _heatmap(
    phase: str,
    cases: Sequence[CaseResult],
    ups: dict[str, Ratio | None],
    batches: list[int],
    seqs: list[int],
    path: Path,
) -> Path:
    import numpy as np
    from matplotlib.cm import ScalarMappable
    from matplotlib.patches import Rectangle

    optimizations = [r for r in _series(cases) if _panel_has_data(r, cases, ups)]
    norm = _speedup_norm([r for r in ups.values() if r is not None and r.significant])
    fig = _new_figure(len(optimizations), panel_size=(5.6, 3.8))
    for ax, optimization in zip(fig.axes, optimizations, strict=False):
        grid = np.full((len(batches), len(seqs)), np.nan)
        ax.imshow(grid, cmap="RdYlGn", norm=norm, origin="lower", aspect="auto")
        for c in cases:
            r = ups[c.key]
            if c.series != optimization or r is None or not c.batch_size or not c.seq_len:
                continue
            i, j = batches.index(c.batch_size), seqs.index(c.seq_len)
            colour = _cell_colour(r, norm)
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, color=colour))
            dark = bool(r.significant) and abs(float(norm(r.value)) - 0.5) > 0.35
            ax.text(
                j,
                i,
                _ratio_text(r),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )
        ax.set_xticks(range(len(seqs)), [str(s) for s in seqs])
        ax.set_yticks(range(len(batches)), [str(b) for b in batches])
        ax.set_xlabel(_length_label(phase))
        ax.set_ylabel("batch size (samples)")
        ax.set_title(f"{series_label(optimization)} vs {REFERENCE_OPTIMIZATION}", fontsize=10)
    bar = fig.colorbar(
        ScalarMappable(norm=norm, cmap="RdYlGn"),
        ax=fig.axes[: len(optimizations)],
        label=f"speedup (x, >1 is faster; grey: {NOT_SIGNIFICANT})",
    )
    extreme = float(norm.vmax or 1.25)
    ticks = [t for t in _SPEEDUP_TICKS if 1 / extreme <= t <= extreme]
    if len(ticks) > 9:
        ticks = [t for t in ticks if math.log2(t).is_integer()]
    bar.set_ticks(ticks, labels=[f"{t:.2f}".rstrip("0").rstrip(".") + "x" for t in ticks])
    bar.minorticks_off()
    title = f"{phase}: speedup vs {REFERENCE_OPTIMIZATION} (median step time, 95% interval)"
    return _save(fig, path, title, cases)


def _panel_has_data(
    optimization: str, cases: Sequence[CaseResult], ups: dict[str, Ratio | None]
) -> bool:
    return any(
        c.series == optimization
        and ups[c.key] is not None
        and c.optimization != REFERENCE_OPTIMIZATION
        for c in cases
    )


def _speedup_norm(significant: Sequence[Ratio]) -> LogNorm:
    from matplotlib.colors import LogNorm

    # A log scale symmetric around 1.0 (no change): green is faster, red slower than eager-fp32,
    # and a 2x slowdown is as red as a 2x speedup is green. Only significant cells set the scale.
    values = [r.value for r in significant]
    extreme = max([1.25, *values, *(1 / v for v in values)])
    return LogNorm(vmin=1 / extreme, vmax=extreme)


def _cell_colour(r: Ratio, norm: LogNorm) -> str | tuple[float, float, float, float]:
    from matplotlib import colormaps

    if not r.significant:
        return NEUTRAL
    rgba = colormaps["RdYlGn"](float(norm(r.value)))
    return (float(rgba[0]), float(rgba[1]), float(rgba[2]), float(rgba[3]))


def plot_speedup_bars(phase: str, cases: Sequence[CaseResult], path: Path) -> Path | None:
    """One bar per optimization (a grid of one shape): speedup, its interval as error bars."""
    ups = speedup_ratios(cases)
    shown = [
        c for c in cases if ups[c.key] is not None and c.optimization != REFERENCE_OPTIMIZATION
    ]
    if not shown:
        return None
    order = {s: i for i, s in enumerate(_series(cases))}
    shown.sort(key=lambda c: order[c.series])
    fig = _new_figure(1, panel_size=(max(6.0, 1.6 * len(shown) + 2), 4.2))
    ax = fig.axes[0]
    ratios = [ups[c.key] for c in shown]
    values = [r.value for r in ratios if r]
    low = [r.value - (r.low if r.low is not None else r.value) for r in ratios if r]
    high = [(r.high if r.high is not None else r.value) - r.value for r in ratios if r]
    colours = [_bar_colour(r) for r in ratios if r]
    ax.bar(range(len(shown)), values, color=colours, yerr=[low, high], capsize=5)
    labels = [_ratio_text(r).replace("\n", " ") for r in ratios if r]
    _labels_above(
        ax, list(range(len(shown))), [v + h for v, h in zip(values, high, strict=True)], labels
    )
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(shown)), [series_label(c.series) for c in shown], fontsize=9)
    c0 = shown[0]
    ax.set_xlabel(f"optimization (batch {c0.batch_size}, {_length_label(phase)[:-9]} {c0.seq_len})")
    ax.set_ylabel(f"speedup vs {REFERENCE_OPTIMIZATION} (x, >1 is faster)")
    ax.set_title(
        f"green faster, red slower, grey {NOT_SIGNIFICANT}; bars: 95% interval", fontsize=9
    )
    ax.grid(True, axis="y", alpha=0.3)
    ax.margins(y=0.25)
    title = f"{phase}: speedup vs {REFERENCE_OPTIMIZATION} (median step time)"
    return _save(fig, path, title, cases)


def _labels_above(
    ax: Axes, xs: Sequence[float], tops: Sequence[float], labels: Sequence[str]
) -> None:
    """Value labels above the error bars (bar_label would put them on the error bar's cap)."""
    for x, top, label in zip(xs, tops, labels, strict=True):
        ax.annotate(
            label, (x, top), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7
        )


def _bar_colour(r: Ratio) -> str:
    if not r.significant:
        return NEUTRAL
    return FASTER if r.value > 1 else SLOWER


# --------------------------------------------------------------------------------------------
# Lines: memory and throughput


def _memory_label(cases: Sequence[CaseResult], what: str) -> str:
    kinds = sorted({str(c.extra.get("memory_kind")) for c in cases if c.extra.get("memory_kind")})
    return f"{what} (MB" + (", " + " / ".join(kinds) if kinds else "") + ")"


def _line_panels(
    cases: Sequence[CaseResult],
    panel_attr: str,
    x_attr: str,
    metric: str,
    ax_labels: tuple[str, str],
    panel_label: str,
) -> Figure | None:
    """A panel per value of ``panel_attr``, a line per optimization: ``metric`` by ``x_attr``."""
    panels = _sorted_values(getattr(c, panel_attr) for c in cases)
    if not panels or not _has(cases, metric):
        return None
    fig = _new_figure(len(panels))
    series = _series(cases)
    # A grid of one x value: optimizations side by side (dodged), not drawn on top of each other.
    single = len(_sorted_values(getattr(c, x_attr) for c in cases)) == 1
    for ax, panel in zip(fig.axes, panels, strict=False):
        for n, optimization in enumerate(series):
            points = sorted(
                (getattr(c, x_attr), c.metric(metric), c.metric(f"{metric}_std"))
                for c in cases
                if c.series == optimization
                and getattr(c, panel_attr) == panel
                and getattr(c, x_attr) is not None
                and c.metric(metric) is not None
            )
            if points:
                xs, ys, errs = zip(*points, strict=True)
                if single:
                    xs = tuple(x * (1 + 0.05 * (n - (len(series) - 1) / 2)) for x in xs)
                yerr = [e or 0.0 for e in errs] if any(errs) else None
                # Marker and dash vary too, so that optimizations with equal values stay visible.
                marker, dash = "os^vDP*X"[n % 8], ("-", "--", ":", "-.")[n % 4]
                ax.errorbar(
                    xs,
                    ys,
                    yerr=yerr,
                    capsize=3,
                    label=series_label(optimization),
                    marker=marker,
                    linestyle=dash,
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
    # No forced zero, so that a 1-3% difference between optimizations stays visible; but at least a
    # span of 5% of the values, so that a 0.01% one does not look like a slope.
    ax.margins(x=0.08, y=0.12)
    low, high = ax.get_ylim()
    span = 0.05 * max(abs(low), abs(high))
    if high - low < span:
        middle = (low + high) / 2
        ax.set_ylim(middle - span / 2, middle + span / 2)
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


MEMORY_METRICS = {
    "peak_memory_mb": ("peak memory", "process peak"),
    "footprint_memory_mb": ("memory footprint", "the case's own footprint above the process"),
}


def plot_memory(
    phase: str, cases: Sequence[CaseResult], path: Path, metric: str = "peak_memory_mb"
) -> Path | None:
    """Memory against batch size, one line per optimization, one panel per sequence length."""
    what, meaning = MEMORY_METRICS[metric]
    labels = ("batch size (samples)", _memory_label(cases, what))
    fig = _line_panels(cases, "seq_len", "batch_size", metric, labels, _length_label(phase)[:-9])
    if fig is None:
        return None
    title = f"{phase}: {what} ({meaning}; error bars: std), {MEMORY_NOTE}"
    return _save(fig, path, title, cases)


def plot_throughput(phase: str, cases: Sequence[CaseResult], path: Path) -> Path | None:
    """Tokens per second against sequence length, one line per optimization, one panel per batch."""
    labels = (_length_label(phase), Phase.of(phase).rate)  # generate: generated tokens/s
    fig = _line_panels(cases, "batch_size", "seq_len", "tokens_per_s", labels, "batch size")
    if fig is None:
        return None
    # 0.3.0 results keep the old mean of per-round rates as tokens_per_s_mean
    # (docs/measuring.md, "Throughput").
    basis = "the median round time" if _has(cases, "tokens_per_s_mean") else "per-round rates"
    title = f"{phase}: throughput from {basis} (error bars: std over rounds)"
    return _save(fig, path, title, cases)


# --------------------------------------------------------------------------------------------
# Generation latency


def plot_generation(cases: Sequence[CaseResult], path: Path) -> Path | None:
    """Time to first token and time per output token: bars grouped by shape, one per optimization,
    error bars the recorded std over rounds."""
    shown = [c for c in cases if c.metric("ttft_ms") is not None or c.metric("tpot_ms") is not None]
    if not shown:
        return None
    shapes = sorted({(c.batch_size or 0, c.seq_len or 0) for c in shown})
    optimizations = _series(shown)
    width = 0.8 / len(optimizations)
    fig = _new_figure(2, n_cols=1, panel_size=(max(7.0, 1.0 + 0.6 * len(shown)), 3.6))
    metrics = (("ttft_ms", "time to first token (ms)"), ("tpot_ms", "time per output token (ms)"))
    for ax, (key, what) in zip(fig.axes, metrics, strict=True):
        for i, optimization in enumerate(optimizations):
            by_shape = {
                (c.batch_size or 0, c.seq_len or 0): c for c in shown if c.series == optimization
            }
            xs = [j + (i - (len(optimizations) - 1) / 2) * width for j in range(len(shapes))]
            found = [by_shape.get(shape) for shape in shapes]
            values = [c.metric(key) if c else None for c in found]
            heights = [v or 0.0 for v in values]
            errs = [(c.metric(f"{key}_std") or 0.0) if c else 0.0 for c in found]
            # A latency is never negative: the lower bar stops at 0 when the std is larger.
            yerr = [[min(e, h) for e, h in zip(errs, heights, strict=True)], errs]
            ax.bar(xs, heights, width, yerr=yerr, capsize=3, label=series_label(optimization))
            tops = [h + e for h, e in zip(heights, errs, strict=True)]
            _labels_above(ax, xs, tops, [fmt_number(v) for v in values])
        ax.set_xticks(range(len(shapes)), [f"b{b} s{s}" for b, s in shapes])
        ax.set_xlabel("batch size (b, samples) and prompt length (s, tokens)")
        ax.set_ylabel(what)
        ax.set_title(
            what.split(" (")[0] + " (lower is better; error bars: std, cut at 0)", fontsize=10
        )
        ax.grid(True, axis="y", alpha=0.3)
        ax.margins(y=0.1)  # room for the labels above the tallest error bar
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside, not over
    title = "generate: prefill latency (TTFT) and decode latency per token (TPOT)"
    return _save(fig, path, title, cases)
