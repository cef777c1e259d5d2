"""history.md, the JSON rendering and the PNGs of `gpt2-bench history`.

matplotlib is imported only when a benchmark changed and is plotted (Agg backend: no display).
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gpt2_fixtures.results import gate, numbers
from gpt2_fixtures.results.history import detect
from gpt2_fixtures.results.history.analysis import History
from gpt2_fixtures.results.metrics import METRICS, TIME, TIME_RATIO

COLUMNS = (
    "first bad",
    "last good",
    "device",
    "benchmark",
    "metric",
    "kind",
    "before",
    "after",
    "change [95% interval]",
    "p-value",
    "direction",
)


def _value(x: float | None, unit: str) -> str:
    return "-" if x is None else f"{x:.4g} {unit}".strip()


def change_text(c: detect.ChangePoint) -> str:
    interval = (
        f" [{numbers.signed_percent(c.change_low)}, {numbers.signed_percent(c.change_high)}]"
        if c.change_low is not None and c.change_high is not None
        else ""
    )
    return numbers.signed_percent(c.change) + interval


def _direction(c: detect.ChangePoint) -> str:
    if c.direction != "regression":
        return c.direction
    return "**regression, still in place**" if c.still_in_place else "regression"


def summary(history: History) -> str:
    n = len(history.changes)
    regressions = sum(c.direction == "regression" for c in history.changes)
    text = (
        f"gpt2 history: {n} change point(s) ({regressions} regression(s), "
        f"{n - regressions} improvement(s)) in {history.series} series"
    )
    if history.in_place:
        names = ", ".join(sorted({f"{c.benchmark} {c.metric}" for c in history.in_place}))
        return f"{text}; REGRESSION still in place: {names}"
    return f"{text}; no regression in place at the newest commit"


def terminal_lines(history: History) -> list[str]:
    """One line per change point, newest first, for the terminal."""
    lines = []
    for c in history.newest_first():
        where = f"{c.last_good_label}..{c.first_bad_label}"
        state = ", still in place" if c.still_in_place else ""
        lines.append(
            f"  {c.direction}{state}: {c.benchmark} {c.metric} {change_text(c)} ({c.kind}) "
            f"at {where} on {c.device}"
        )
    return lines


def _groups_lines(history: History) -> list[str]:
    lines = []
    for g in history.groups:
        files_n = sum(len(p.docs) for p in g.points)
        first, last = g.points[0], g.points[-1]
        lines.append(
            f"- {g.label}: {files_n} result file(s), {len(g.points)} commit(s), "
            f"{first.label} ({first.when:%Y-%m-%d}) .. {last.label} ({last.when:%Y-%m-%d})"
        )
    return lines


def to_markdown(history: History, plots: dict[tuple[str, str, str], str]) -> str:
    metrics = ", ".join(m.key for m in history.metrics)
    lines = ["# gpt2-bench history", "", summary(history), ""]
    lines += _groups_lines(history)
    lines += [
        f"- metrics: {metrics}; a change point is listed only when the gate, on the rounds "
        "pooled on both sides, calls it a regression or an improvement",
        "",
    ]
    changes = history.newest_first()
    if changes:
        lines += ["## Change points, newest first", ""]
        lines.append("| " + " | ".join(COLUMNS) + " |")
        lines.append("|" + "---|" * len(COLUMNS))
        for c in changes:
            cells = [
                f"`{c.first_bad_label}`",
                f"`{c.last_good_label}`",
                c.device,
                c.benchmark + (f" ({c.model})" if c.model else ""),
                c.metric,
                c.kind,
                _value(c.before, c.unit),
                _value(c.after, c.unit),
                change_text(c),
                "-" if c.p_value is None else f"{c.p_value:.2g}",
                _direction(c),
            ]
            lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
        lines.append("")
    else:
        lines += ["No change points: every series stayed at one level.", ""]
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in plots.values()]
        lines.append("")
    lines += [f"- note: {n}" for n in history.notes]
    return "\n".join(lines).rstrip() + "\n"


def to_json(history: History) -> dict[str, Any]:
    def safe(d: dict[str, Any]) -> dict[str, Any]:
        return {
            k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in d.items()
        }

    return {
        "exit_code": history.exit_code,
        "summary": summary(history),
        "metrics": [m.key for m in history.metrics],
        "series": history.series,
        "devices": [
            {
                "device": g.label,
                "commits": [p.commit or p.label for p in g.points],
                "files": sum(len(p.docs) for p in g.points),
            }
            for g in history.groups
        ],
        "change_points": [safe(asdict(c)) for c in history.newest_first()],
        "still_in_place": [safe(asdict(c)) for c in history.in_place],
        "notes": list(history.notes),
    }


# --- plots ----------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:120]


def write_plots(history: History, out: Path) -> dict[tuple[str, str, str], str]:
    """One PNG per benchmark with changes; returns (device, fullname, model) -> file name."""
    by_bench: dict[tuple[str, str, str], list[detect.ChangePoint]] = {}
    for c in history.changes:
        by_bench.setdefault((c.device, c.fullname, c.model), []).append(c)
    if not by_bench:
        return {}
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for key, changes in by_bench.items():
        group = next(g for g in history.groups if g.label == key[0])
        name = f"history-{_slug(key[0])}-{_slug(changes[0].benchmark)}"
        name += f"-{_slug(key[2])}.png" if key[2] else ".png"
        _plot(group, (key[1], key[2]), changes, out / name)
        written[key] = name
    return written


def _panels(group: Any, key: tuple[str, str], changes: list[detect.ChangePoint]) -> list[Any]:
    """Series to draw, one panel each: time, then time/control, then each other changed
    metric; all on the group's commits."""
    keys = ["time", "time/control"]
    keys += sorted({c.metric for c in changes} - set(keys))
    found = [detect.build_series(group, key, METRICS[k]) for k in keys]
    return [s for s in found if s is not None]


def _plot(group: Any, key: tuple[str, str], changes: list[detect.ChangePoint], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [p.label for p in group.points]
    x_of = {p.label: i for i, p in enumerate(group.points)}
    panels = _panels(group, key, changes)
    width = min(14.0, max(7.0, 0.22 * len(labels) + 3))
    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(width, 2.6 * len(panels) + 0.4))
    axes = list(axes) if len(panels) > 1 else [axes]
    for ax, series in zip(axes, panels, strict=True):
        _draw_series(ax, series, x_of)
        for c in changes:
            _mark(ax, c, x_of, own=c.metric == series.metric.key)
    # about 30 labels at most, and always the first bad commit of each change
    ticks = sorted(set(range(0, len(labels), max(1, math.ceil(len(labels) / 30))))
                   | {x_of[c.first_bad_label] for c in changes})  # fmt: skip
    axes[-1].set_xticks(ticks)
    axes[-1].set_xticklabels(
        [labels[i] for i in ticks], rotation=90, fontsize=7, family="monospace"
    )
    axes[-1].set_xlabel("commit (oldest left)")
    device = group.label
    fig.suptitle(f"{changes[0].benchmark} on {device}", fontsize=10)
    fig.text(
        0.01,
        0.003,
        "grey: rounds; line: per-commit median (or mean); bar: IQR of rounds (or ±1 std)\n"
        "dashed: change point before its first bad commit (red: regression, green: improvement)",
        fontsize=6.5,
        color="0.3",
    )
    fig.tight_layout(rect=(0, 0.035, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_series(ax: Any, series: detect.Series, x_of: dict[str, int]) -> None:
    xs = [x_of[p.label] for p in series.points]
    metric = series.metric
    if metric in (TIME, TIME_RATIO):
        get = gate.round_times if metric == TIME else gate.control_ratios
        scale = 1e3 if metric == TIME else 1.0
        for x, entries in zip(xs, series.entries, strict=True):
            rounds = [r * scale for e in entries for r in (get(e) or [])]
            ax.scatter([x] * len(rounds), rounds, s=5, color="0.6", alpha=0.5, linewidths=0)
            if len(rounds) > 1:
                q = statistics.quantiles(rounds, n=4)
                ax.vlines(x, q[0], q[2], color="tab:blue", linewidth=2.5, alpha=0.6)
        ax.plot(xs, series.values * scale, "o-", color="tab:blue", markersize=3, linewidth=1)
        unit = "ms per round" if metric == TIME else "round / control"
        ax.set_ylabel(f"{metric.key}\n({unit}; bar: IQR)", fontsize=8)
    else:
        stds = []
        for entries in series.entries:
            s = (entries[0].get("extra_info") or {}).get(f"{metric.key}_std")
            stds.append(float(s) if isinstance(s, int | float) else 0.0)
        ax.errorbar(xs, series.values, yerr=stds, fmt="o-", color="tab:purple", markersize=3,
                    linewidth=1, capsize=2)  # fmt: skip
        ax.set_ylabel(f"{metric.key}\n({metric.unit}; bar: ±1 std)", fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)


def _mark(ax: Any, c: detect.ChangePoint, x_of: dict[str, int], own: bool) -> None:
    """A line between last good and first bad; on the metric's own panel, the short SHA and the
    change."""
    colour = "tab:red" if c.direction == "regression" else "tab:green"
    x = x_of[c.first_bad_label] - 0.5
    ax.axvline(x, color=colour, linestyle="--", linewidth=1, alpha=0.8 if own else 0.35)
    if own:
        text = f"{c.first_bad_label}\n{numbers.signed_percent(c.change)}" + (
            " gradual" if c.kind == "gradual" else ""
        )
        ax.annotate(text, (x, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -3),
                    textcoords="offset points", va="top", fontsize=7, color=colour,
                    family="monospace")  # fmt: skip
