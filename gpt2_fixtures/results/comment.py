"""`gpt2-bench comment`: the gate's verdict JSON as one pull-request comment, in Markdown.

Pure: reads the JSON that `gpt2-bench compare --json` writes (docs/gate.md, "Output") and,
in CI, the run's status JSON (`.github/scripts/run-status.py`), and returns text; no torch, no
pytest, no network. Both come from a pull request's run, so they are untrusted data: every string
is cut short, stripped of invisible and bidi characters, and escaped before it reaches Markdown (no
mentions, links, cross-references, HTML, code fences or line-start markup can be injected),
numbers are used only when finite (however large), and missing optional keys are tolerated.

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

from gpt2_fixtures.results import numbers
from gpt2_fixtures.results.metrics import COUNTERS, METRICS

# The first line of the comment: the workflow finds its own earlier comment by it and edits it.
MARKER = "<!-- gpt2-bench-gate -->"
MAX_CHARS = 60_000  # GitHub refuses comments over 65,536 characters
MAX_TEXT = 160  # longest untrusted string shown (benchmark names, notes)
CHART_WIDTH = 41  # cells of the axis; odd, so that "no change" is one cell in the middle

# Verdicts that need a reader's attention come first; "pass" and "drift" rows (a benchmark whose
# judged verdict passed) are folded into counts, so a reviewer reads what changed something.
ORDER: tuple[str, ...] = ("REGRESSION", "missing", "failed", "inconclusive", "n/a")
ORDER += ("not selected", "improved", "new")
FOLDED = ("pass", "drift")
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


# U+2060 WORD JOINER: invisible, and it splits a pattern that GitHub would turn into something
# live ("@name" notifies, "#12" and "owner/repo#5" link, "https://x" and "www.x" autolink).
JOINER = "\u2060"
_LIVE = re.compile(r"(?i)(@|#(?=\d)|\bgh(?=-\d)|\b(?:https?|ftp|mailto)(?=:)|\bwww(?=\.))")
# What Markdown reads as a heading, list, quote or rule at the start of a line.
_LINE_START = re.compile(r"^(?:[#>+=-](?=[\s#>+=-]|$)|\d{1,9}(?=[.)](?:\s|$)))")


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    """An untrusted value as inert Markdown: one line, short, no markup that does anything."""
    text = _plain(value if value is not None else "", limit)  # also drops bidi and zero-widths
    text = text.replace("\\", "\\\\")
    text = re.sub(r"([`*_{}\[\]<>|~])", r"\\\1", text)
    text = _LINE_START.sub(lambda m: m[0] + "\\" if m[0][0].isdigit() else "\\" + m[0], text)
    text = _LIVE.sub(lambda m: m[0] + JOINER, text)
    return text.replace("&", "&amp;")


def _plain(value: Any, limit: int = MAX_TEXT) -> str:
    """An untrusted value for a code block: printable, one line, and no backticks.

    str.isprintable() is False for the format characters (Unicode category Cf: the bidi controls
    U+202A-U+202E and U+2066-U+2069, U+200B-U+200F, U+2060, U+FEFF), so none passes.
    """
    text = "".join(ch if ch.isprintable() else " " for ch in str(value or ""))
    text = " ".join(text.replace("`", "'").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _row(raw: Any) -> Row | None:
    if not isinstance(raw, Mapping):
        return None
    return Row(
        benchmark=_plain(raw.get("benchmark", "?")),
        metric=_plain(raw.get("metric", "?"), 40),
        unit=_plain(raw.get("unit", ""), 12),
        baseline=numbers.finite(raw.get("baseline")),
        current=numbers.finite(raw.get("current")),
        change=numbers.finite(raw.get("change")),
        low=numbers.finite(raw.get("change_low")),
        high=numbers.finite(raw.get("change_high")),
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
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise CommentError(f"{p}: not JSON ({str(err)[:80]})") from None
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
    return numbers.signed_percent(x, missing="–")


def _interval(r: Row) -> str:
    return "" if r.low is None or r.high is None else f" [{_pct(r.low)}, {_pct(r.high)}]"


def _value(x: float | None, unit: str) -> str:
    if x is None:
        return "–"
    text = f"{x:,.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{text} {unit}".strip()


def _threshold_fraction(text: str) -> float | None:
    match = re.match(r"\s*(\d{1,6}(?:\.\d{1,6})?)%", text)  # "1.2.3%" or 400 digits: no threshold
    return float(match[1]) / 100 if match else None


def attention_rows(table: Sequence[Row]) -> list[Row]:
    """The rows a reviewer reads, worst first: regressions, what was not judged, improvements."""
    rank = {v: i for i, v in enumerate(ORDER)}
    picked = [r for r in table if r.verdict not in FOLDED]
    return sorted(picked, key=lambda r: (rank.get(r.verdict, len(ORDER)), r.benchmark, r.metric))


def folded_counts(table: Sequence[Row]) -> str:
    """'34 drift, 50 pass': the rows left out of the table, counted so none disappears."""
    counts = {v: sum(r.verdict == v for r in table) for v in FOLDED}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n)


def rows_table(picked: Sequence[Row], limit: int) -> list[str]:
    if not picked:
        return ["No regression, inconclusive row or improvement."]
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
    ratio = max(-2.0, min(2.0, x / scale))  # clamped first: round() of an overflowed inf raises
    return max(0, min(CHART_WIDTH - 1, half + round(ratio * half)))


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
    scale = min(math.ceil(min(extent, 1.0) * 1.1 * 20) / 20, 1.0)  # a round 5% step, ±100% at most
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


COUNTER_KEYS = frozenset(m.key for m in COUNTERS)


def counters_line(table: Sequence[Row]) -> str:
    """One line for the exact tier: how many counter rows equal the baseline, which moved."""
    counted = [r for r in table if r.metric in COUNTER_KEYS and r.baseline is not None]
    if not counted:
        return ""
    moved: dict[str, int] = {}
    for r in counted:
        if r.current is not None and r.current != r.baseline:
            moved[r.metric] = moved.get(r.metric, 0) + 1
    same = len(counted) - sum(moved.values())
    text = f"**Exact counters**: {same} of {len(counted)} rows equal to the baseline"
    if moved:
        text += "; changed: " + ", ".join(f"`{k}` in {n}" for k, n in sorted(moved.items()))
    return text + "."


def time_rows(table: Sequence[Row]) -> list[Row]:
    """The row that decides each benchmark's time verdict: time/control where present, else time."""
    by_bench: dict[str, Row] = {}
    for r in table:
        if r.metric == "time/control" or (r.metric == "time" and r.benchmark not in by_bench):
            by_bench[r.benchmark] = r
    return sorted(by_bench.values(), key=lambda r: -(r.worse_sign * (r.change or 0.0)))


def _body(verdict: Mapping[str, Any], limit: int, full_table: str) -> list[str]:
    """Summary, the rows a reviewer reads, the folded counts, the charts and the notes."""
    table = rows(verdict)
    lines = [f"> {_text(summary_line(verdict, table), 400)}", ""]
    for key, label in (("missing", "Missing from this run"), ("new", "New in this run")):
        names = _names(verdict, key)
        if names:
            shown = ", ".join(f"`{n}`" for n in names[:limit])
            more = f" …and {len(names) - limit} more" if len(names) > limit else ""
            lines += [f"**{label}** ({len(names)}): {shown}{more}", ""]
    picked = attention_rows(table)
    lines += [*rows_table(picked, limit), ""]
    if folded := folded_counts(table):
        lines += [f"Not listed: {folded} (full table: {full_table}).", ""]
    lines += chart(
        "Time against the baseline (● change, ━ interval; right is slower)", time_rows(table), limit
    )
    others = [r for r in picked if not r.metric.startswith("time") and r.metric not in COUNTER_KEYS]
    lines += chart("Other metrics that did not pass (right is worse)", others, limit)
    if counted := counters_line(table):
        lines += [counted, ""]
    notes = [n for n in (verdict.get("notes") or []) if isinstance(n, str)]
    lines += [f"- {_text(n, 300)}" for n in notes[:limit]]
    return lines


def _finish(lines: Sequence[str]) -> str:
    text = "\n".join(lines).rstrip() + "\n"
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS - 200].rsplit("\n", 1)[0]
        text += "\n\n…cut here: the full table is in the job summary and the artifact.\n"
    return text


def verdict_headline(verdict: Mapping[str, Any]) -> str:
    code = exit_code(verdict)
    headline = HEADLINES[code]
    unjudged = not_judged(rows(verdict))
    if code == 0 and unjudged:  # a --inconclusive pass policy, or an older gate
        headline += f", but {unjudged} row(s) not judged"
    return headline


def render(
    verdict: Mapping[str, Any],
    title: str = "gpt2-bench regression gate",
    limit: int = 40,
    full_table: str = "the job summary",
) -> str:
    """The whole comment: marker, headline and summary, the listed rows, the charts, notes."""
    lines = [MARKER, f"### {_text(title, 80)}: {verdict_headline(verdict)}", ""]
    return _finish([*lines, *_body(verdict, limit, full_table)])


# --- the comment of a CI run: what happened, whatever happened ----------------------------------

CONCLUSIONS = {
    "success": "✅ run succeeded",
    "failure": "❌ run failed",
    "cancelled": "⏹️ run cancelled",
    "timed_out": "⏱️ run timed out",
}
# What .github/scripts/run-status.py writes as `outcome`, said in words.
OUTCOMES = {
    "gated": "gated against the main baseline",
    "not-gated": "not gated",
    "failed-shard": "not gated: a benchmark shard failed",
    "device-mismatch": "not gated: the baseline is from another device",
    "cancelled": "not gated: the run was cancelled",
    "refused": "not run: the request was refused",
}
_RUN_URL = re.compile(r"https://github\.com/[\w.-]+/[\w.-]+/actions/runs/\d{1,20}")


@dataclass(frozen=True)
class RunInfo:
    """What the commenter knows from GitHub itself (the workflow_run event), not from artifacts."""

    conclusion: str
    head_sha: str
    run_url: str


def _sha(value: Any) -> str:
    text = str(value or "")
    return text[:12] if re.fullmatch(r"[0-9a-f]{7,40}", text) else "unknown"


def _link(run: RunInfo) -> str:
    if _RUN_URL.fullmatch(run.run_url):
        return f"[run {run.run_url.rsplit('/', 1)[1]}]({run.run_url})"
    return "the run (no valid link)"


def baseline_line(status: Mapping[str, Any]) -> str:
    """'main commit abc, run 12, device X, 2026-12-01, pooling 3 runs': the baseline used."""
    base = status.get("baseline")
    if not isinstance(base, Mapping) or not base:
        return "Baseline: none used."
    raw = base.get("pooled")
    pooled = [p for p in raw if isinstance(p, Mapping)] if isinstance(raw, list) else []
    parts = [f"main commit `{_sha(base.get('head_sha'))}`", f"run {_text(base.get('run_id'), 20)}"]
    parts += [f"device {_text(base.get('device'), 80)}", f"stack {_text(base.get('stack'), 80)}"]
    parts.append(_text(base.get("created_at"), 30))
    if pooled:
        commits = ", ".join(f"`{_sha(p.get('sha'))}`" for p in pooled[:5])
        more = ", …" if len(pooled) > 5 else ""
        parts.append(f"pooling {len(pooled)} main run(s) ({commits}{more})")
    return "Baseline: " + ", ".join(p for p in parts if p) + "."


def stack_line(status: Mapping[str, Any]) -> str:
    """What a stack comparison compared: both commits, each in its own environment, and the pins
    that changed (`stack_pins`, from the pull request's lock files: untrusted, escaped)."""
    pins = _text(status.get("stack_pins"), 500) or "not listed"
    return (
        "Stack comparison: this pull request changes the stack, so the base commit in its own "
        "environment (its lock) was run against the head in the pull request's, alternately on "
        f"one runner, judged on raw wall-clock; no stored baseline was used. Changed: {pins}."
    )


def status_lines(run: RunInfo, status: Mapping[str, Any] | None) -> list[str]:
    """Head, run, base and baseline (or the stack compared), and what happened."""
    lines = [f"Head `{_sha(run.head_sha)}`, {_link(run)}."]
    if status is None:
        return [*lines, "", "No status artifact: the run ended before it could say what happened."]
    lines[0] = lines[0][:-1] + f", pull request base `{_sha(status.get('base_sha'))}`."
    outcome = str(status.get("outcome", ""))
    said = OUTCOMES.get(outcome, f"unknown outcome {_text(outcome, 40)}")
    stack = status.get("kind") == "stack"
    if stack and outcome == "gated":
        said = "gated by the stack A/B (base and head, each in its own environment)"
    reason = _text(status.get("reason"), 300)
    return [
        *lines,
        stack_line(status) if stack else baseline_line(status),
        "",
        f"What happened: {said}" + (f" ({reason})." if reason else "."),
    ]


def render_run(
    run: RunInfo,
    status: Mapping[str, Any] | None,
    verdict: Mapping[str, Any] | None,
    title: str = "gpt2-bench regression gate",
    limit: int = 40,
) -> str:
    """The CI comment: headline from the run's conclusion, then what that run reported."""
    headline = CONCLUSIONS.get(run.conclusion, f"⚠️ run {_text(run.conclusion, 20)}")
    lines = [MARKER, f"### {_text(title, 80)}: {headline}", "", *status_lines(run, status), ""]
    if verdict is None:
        return _finish([*lines, "No gate verdict from this run."])
    lines += [f"Verdict reported by that run: {verdict_headline(verdict)}", ""]
    return _finish([*lines, *_body(verdict, limit, _link(run) + " job summary")])


# --- command line ------------------------------------------------------------------------------


def add_comment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "verdict", nargs="?", help="gate verdict JSON (gpt2-bench compare --json FILE)"
    )
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
    run = parser.add_argument_group("a CI run's comment (gpu-comment.yml)")
    run.add_argument(
        "--conclusion",
        help="the run's conclusion (success, failure, cancelled, ...): headline from it, and the "
        "verdict shown as that run reported it. Default: %(default)r",
    )
    run.add_argument("--status", help="the run's status JSON (run-status.py). Default: %(default)r")
    run.add_argument("--head-sha", default="", help="the benchmarked head. Default: %(default)r")
    run.add_argument("--run-url", default="", help="the run's page. Default: %(default)r")


def _comment_text(args: argparse.Namespace) -> str:
    limit = max(1, args.max_rows)
    verdict = load(args.verdict) if args.verdict else None
    if args.conclusion is None:
        if verdict is None:
            raise CommentError("a verdict JSON is needed unless --conclusion is given")
        return render(verdict, args.title, limit)
    status = load_status(args.status) if args.status else None
    run = RunInfo(args.conclusion, args.head_sha, args.run_url)
    return render_run(run, status, verdict, args.title, limit)


def load_status(path: str | Path) -> dict[str, Any] | None:
    """The status JSON, or None when the run left none (the comment says so)."""
    if not Path(path).is_file():
        return None
    data = load(path)
    return data


def run_comment(args: argparse.Namespace) -> int:
    """`gpt2-bench comment`: exit 0 when the comment was written, 2 on unusable input."""
    from gpt2_fixtures.results.files import atomic_write_text

    try:
        text = _comment_text(args)
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
