"""`gpt2-bench comment`: the gate's verdict JSON as one pull-request comment, in Markdown.

Pure: reads the JSON that `gpt2-bench compare --json` writes (contract 2 in docs/ci.md) and
returns text; no torch, no pytest, no network. The JSON comes from a pull request's run, so it is
treated as untrusted data: every string is cut short and escaped before it reaches Markdown (no
mentions, links, HTML or code fences can be injected), numbers are used only when finite, and
missing optional keys (`summary`, `change_low`, `change_high`, ...) are tolerated.

The charts are plain Unicode text in a code block, so they render in a comment, a job summary and
a terminal alike: one line per benchmark, the change with its interval on a common axis where
right is always worse (slower, hungrier, less throughput), `│` at no change and `┆` at the
threshold (`┿` and `╪` where the interval crosses them).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2_fixtures.results.metrics import METRICS

# The first line of the comment: the workflow finds its own earlier comment by it and edits it.
MARKER = "<!-- gpt2-bench-gate -->"
MAX_CHARS = 60_000  # GitHub refuses comments over 65,536 characters
MAX_TEXT = 160  # longest untrusted string shown (benchmark names, notes)
CHART_WIDTH = 41  # cells of the axis; odd, so that "no change" is one cell in the middle

# Verdicts that need a reader's attention come first; "pass" rows are not listed.
ORDER: tuple[str, ...] = ("REGRESSION", "missing", "failed", "inconclusive", "n/a", "drift")
ORDER += ("not selected", "improved", "new")
NOT_JUDGED = ("missing", "failed", "inconclusive", "n/a")
HEADLINES = {
    0: "✅ **PASS**",
    1: "❌ **REGRESSION**",
    2: "⛔ **unusable input**",
    3: "⚠️ **not fully judged**",
}


class CommentError(ValueError):
    """The verdict JSON cannot be rendered; str() is one line that says why."""


@dataclass(frozen=True)
class Row:
    """One gate row, read defensively: text escaped, numbers finite or None."""

    benchmark: str
    metric: str
    unit: str
    baseline: float | None
    current: float | None
    change: float | None
    low: float | None
    high: float | None
    threshold: str
    verdict: str
    note: str

    @property
    def worse_sign(self) -> float:
        """+1 when a higher value is worse (time, memory), -1 when lower is (throughput)."""
        metric = METRICS.get(self.metric)
        return 1.0 if metric is None or metric.higher_is_worse else -1.0


# --- reading -----------------------------------------------------------------------------------


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    """An untrusted value as inert Markdown: one line, short, no markup that does anything."""
    text = " ".join(str(value if value is not None else "").split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = text.replace("\\", "\\\\")
    text = re.sub(r"([`*_{}\[\]<>|~])", r"\\\1", text)
    # "@name" would notify someone, "#12" would link; a zero-width joiner keeps them inert.
    return text.replace("@", "@\u2060").replace("&", "&amp;")


def _plain(value: Any, limit: int = MAX_TEXT) -> str:
    """An untrusted value for a code block: printable, one line, and no backticks."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value or ""))
    text = " ".join(text.replace("`", "'").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _row(raw: Any) -> Row | None:
    if not isinstance(raw, Mapping):
        return None
    return Row(
        benchmark=_plain(raw.get("benchmark", "?")),
        metric=_plain(raw.get("metric", "?"), 40),
        unit=_plain(raw.get("unit", ""), 12),
        baseline=_number(raw.get("baseline")),
        current=_number(raw.get("current")),
        change=_number(raw.get("change")),
        low=_number(raw.get("change_low")),
        high=_number(raw.get("change_high")),
        threshold=_plain(raw.get("threshold", ""), 40),
        verdict=_plain(raw.get("verdict", "?"), 40),
        note=_plain(raw.get("note", "")),
    )


def load(path: str | Path) -> dict[str, Any]:
    """Read a verdict JSON file; CommentError with one line when it is not one."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CommentError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CommentError(f"{p}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise CommentError(f"{p}: not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows", []), list):
        raise CommentError(f"{p}: not a gpt2-bench gate verdict (expected an object with rows)")
    return data


def exit_code(verdict: Mapping[str, Any]) -> int:
    """The gate's exit code, from `exit_code` or, in older files, from `verdict`."""
    code = verdict.get("exit_code")
    if isinstance(code, int) and not isinstance(code, bool) and code in HEADLINES:
        return code
    return {"pass": 0, "fail": 1, "not-judged": 3}.get(str(verdict.get("verdict")), 2)


def rows(verdict: Mapping[str, Any]) -> list[Row]:
    return [r for r in map(_row, verdict.get("rows") or []) if r is not None]


def _names(verdict: Mapping[str, Any], key: str) -> list[str]:
    value = verdict.get(key) or []
    if not isinstance(value, list):
        return []
    return [_plain(v.get("name", v) if isinstance(v, Mapping) else v) for v in value]


def summary_line(verdict: Mapping[str, Any], table: Sequence[Row]) -> str:
    """The gate's own summary line, or one made from the rows when the file has none."""
    if isinstance(verdict.get("summary"), str) and verdict["summary"].strip():
        return _plain(verdict["summary"], 400)
    counts: dict[str, int] = {}
    for r in table:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    for key in ("new", "missing"):  # older files list them only beside the rows
        counts[key] = max(counts.get(key, 0), len(_names(verdict, key)))
    parts = [f"{counts.pop('REGRESSION', 0)} regression(s)"]
    parts += [f"{n} {v}" for v, n in sorted(counts.items()) if v != "pass" and n]
    return f"{counts.get('pass', 0)} rows pass; " + ", ".join(parts)


def not_judged(table: Sequence[Row]) -> int:
    """Rows the gate could not judge: never to be hidden behind a PASS headline."""
    return sum(r.verdict in NOT_JUDGED for r in table)


# --- formatting --------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:+.1f}%"


def _interval(r: Row) -> str:
    return "" if r.low is None or r.high is None else f" [{_pct(r.low)}, {_pct(r.high)}]"


def _value(x: float | None, unit: str) -> str:
    if x is None:
        return "–"
    text = f"{x:,.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{text} {unit}".strip()


def _threshold_fraction(text: str) -> float | None:
    match = re.match(r"\s*([0-9.]+)%", text)
    return float(match[1]) / 100 if match else None


def attention_rows(table: Sequence[Row]) -> list[Row]:
    """The non-pass rows, worst first (regressions, then what was not judged, then the rest)."""
    rank = {v: i for i, v in enumerate(ORDER)}
    picked = [r for r in table if r.verdict != "pass"]
    return sorted(picked, key=lambda r: (rank.get(r.verdict, len(ORDER)), r.benchmark, r.metric))


def rows_table(picked: Sequence[Row], limit: int) -> list[str]:
    if not picked:
        return ["Every row passed."]
    lines = [
        "| benchmark | metric | baseline | current | change [interval] | threshold | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in picked[:limit]:
        verdict = _text(r.verdict)
        verdict = f"**{verdict}**" if r.verdict == "REGRESSION" else verdict
        if r.note:
            verdict += f" ({_text(r.note)})"
        # GFM ends a table cell at any unescaped pipe, even inside a code span
        name = r.benchmark.replace("|", "\\|")
        cells = [f"`{name}`", _text(r.metric), _text(_value(r.baseline, r.unit))]
        cells += [_text(_value(r.current, r.unit)), _text(_pct(r.change) + _interval(r))]
        cells += [_text(r.threshold), verdict]
        lines.append("| " + " | ".join(cells) + " |")
    if len(picked) > limit:
        lines.append(f"\n…and {len(picked) - limit} more (see the job summary or the artifact).")
    return lines


def _cell(x: float, scale: float) -> int:
    half = CHART_WIDTH // 2
    return max(0, min(CHART_WIDTH - 1, half + round(x / scale * half)))


def chart_line(r: Row, scale: float) -> str:
    """One forest-plot row: interval ━, estimate ●, no change │, threshold ┆; right is worse."""
    cells = [" "] * CHART_WIDTH
    sign = r.worse_sign
    if r.low is not None and r.high is not None:
        ends = sorted((sign * r.low, sign * r.high))
        for i in range(_cell(ends[0], scale), _cell(ends[1], scale) + 1):
            cells[i] = "━"
    # the reference marks stay visible where the interval crosses them: ┿ and ╪ over ━
    threshold = _threshold_fraction(r.threshold)
    marks = []
    if threshold is not None and threshold <= scale:
        marks += [(-threshold, "┆", "╪"), (threshold, "┆", "╪")]
    marks.append((0.0, "│", "┿"))  # last: no change wins a cell it shares with a tiny threshold
    for x, plain, crossed in marks:
        i = _cell(x, scale)
        cells[i] = crossed if cells[i] == "━" else plain
    if r.change is not None:
        worse = sign * r.change
        out_of_range = abs(worse) > scale
        cells[_cell(worse, scale)] = ("▶" if worse > 0 else "◀") if out_of_range else "●"
    return "".join(cells)


def chart(title: str, picked: Sequence[Row], limit: int) -> list[str]:
    """A text forest plot of the rows' changes, with a scale that fits them (10% at least)."""
    shown = [r for r in picked if r.change is not None][:limit]
    if not shown:
        return []
    extent = max(
        max(abs(v) for r in shown for v in (r.change, r.low, r.high) if v is not None),
        max((_threshold_fraction(r.threshold) or 0.0) for r in shown),
        0.10,
    )
    scale = min(math.ceil(extent * 1.1 * 20) / 20, 1.0)  # a round 5% step, at most ±100%
    width = max(len(f"{r.benchmark} {r.metric}") for r in shown)
    label = f"-{scale:.0%} better".ljust(CHART_WIDTH // 2) + f"0 worse +{scale:.0%}"
    lines = [f"**{title}**", "", "```text", " " * (width + 2) + label]
    for r in shown:
        name = f"{r.benchmark} {r.metric}".ljust(width)
        speed = r.metric.startswith("time") and r.change is not None and r.change > -1
        extra = f" ×{1 / (1 + (r.change or 0.0)):.2f} speed" if speed else ""
        lines.append(
            f"{name}  {chart_line(r, scale)}  {_pct(r.change)}{_interval(r)}{extra}  {r.verdict}"
        )
    lines += ["```", ""]
    if len([r for r in picked if r.change is not None]) > limit:
        lines.insert(-2, f"(first {limit} rows)")
    return lines


def time_rows(table: Sequence[Row]) -> list[Row]:
    """The row that decides each benchmark's time verdict: time/control where present, else time."""
    by_bench: dict[str, Row] = {}
    for r in table:
        if r.metric == "time/control" or (r.metric == "time" and r.benchmark not in by_bench):
            by_bench[r.benchmark] = r
    return sorted(by_bench.values(), key=lambda r: -(r.worse_sign * (r.change or 0.0)))


def render(
    verdict: Mapping[str, Any], title: str = "gpt2-bench regression gate", limit: int = 40
) -> str:
    """The whole comment: marker, headline and summary, the non-pass rows, the charts, notes."""
    table = rows(verdict)
    code = exit_code(verdict)
    headline = HEADLINES[code]
    if code == 0 and not_judged(table):  # a --inconclusive pass policy, or an older gate
        headline += f", but {not_judged(table)} row(s) not judged"
    lines = [MARKER, f"### {_text(title, 80)}: {headline}", ""]
    lines += [f"> {_text(summary_line(verdict, table), 400)}", ""]
    for key, label in (("missing", "Missing from this run"), ("new", "New in this run")):
        names = _names(verdict, key)
        if names:
            shown = ", ".join(f"`{n}`" for n in names[:limit])
            more = f" …and {len(names) - limit} more" if len(names) > limit else ""
            lines += [f"**{label}** ({len(names)}): {shown}{more}", ""]
    picked = attention_rows(table)
    lines += [*rows_table(picked, limit), ""]
    lines += chart(
        "Time against the baseline (● change, ━ interval; right is slower)", time_rows(table), limit
    )
    others = [r for r in picked if not r.metric.startswith("time")]
    lines += chart("Other metrics that did not pass (right is worse)", others, limit)
    notes = [n for n in (verdict.get("notes") or []) if isinstance(n, str)]
    lines += [f"- {_text(n, 300)}" for n in notes[:limit]]
    text = "\n".join(lines).rstrip() + "\n"
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS - 200].rsplit("\n", 1)[0]
        text += "\n\n…cut here: the full table is in the job summary and the artifact.\n"
    return text


# --- command line ------------------------------------------------------------------------------


def add_comment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("verdict", help="gate verdict JSON (gpt2-bench compare --json FILE)")
    parser.add_argument("--out", help="write the comment here (atomically) instead of stdout")
    parser.add_argument(
        "--summary",
        help="also append it to this file, e.g. $GITHUB_STEP_SUMMARY. Default: %(default)r",
    )
    parser.add_argument(
        "--title", default="gpt2-bench regression gate", help="Default: %(default)r"
    )
    parser.add_argument(
        "--max-rows", type=int, default=40, help="rows per table and chart. Default: %(default)r"
    )


def run_comment(args: argparse.Namespace) -> int:
    """`gpt2-bench comment`: exit 0 when the comment was written, 2 on unusable input."""
    from gpt2_fixtures.results.files import atomic_write_text

    try:
        text = render(load(args.verdict), args.title, max(1, args.max_rows))
        if args.out:
            atomic_write_text(Path(args.out), text)
        else:
            sys.stdout.write(text)
        if args.summary:
            with open(args.summary, "a", encoding="utf-8") as summary:
                summary.write(text.replace(MARKER + "\n", "", 1) + "\n")
    except (CommentError, OSError) as err:
        print(f"gpt2-bench comment: error: {err}", file=sys.stderr)
        return 2
    return 0
