"""Rendering a GateResult: a terminal table, Markdown for a CI job summary, and JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gpt2_fixtures.results import files, numbers
from gpt2_fixtures.results.gate.verdicts import (
    CONTROL_TOLERANCES,
    MISSING,
    REGRESSION,
    GateResult,
    Row,
)

COLUMNS = ("benchmark", "metric", "baseline", "current", "change [95% CI]", "p-value", "threshold",
           "verdict")  # fmt: skip
STATUS = {"fail": "FAIL", "pass": "PASS", "not-judged": "NOT FULLY JUDGED"}


def _fmt_value(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    text = f"{x:.4g}" if abs(x) < 1e5 else f"{x:.0f}"
    return f"{text} {unit}".strip()


def _fmt_change_ci(r: Row) -> str:
    text = numbers.signed_percent(r.change)
    if r.change_low is None or r.change_high is None:
        return text
    return (
        f"{text} [{numbers.signed_percent(r.change_low)}, {numbers.signed_percent(r.change_high)}]"
    )


def _fmt_p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def table_cells(result: GateResult) -> list[list[str]]:
    cells = []
    for r in result.rows:
        verdict = f"{r.verdict} ({r.note})" if r.note else r.verdict
        cells.append(
            [
                r.benchmark,
                r.metric,
                _fmt_value(r.baseline, r.unit),
                _fmt_value(r.current, r.unit),
                _fmt_change_ci(r),
                _fmt_p(r.p_value),
                r.threshold or "-",
                verdict,
            ]
        )
    return cells


def headline(result: GateResult) -> list[str]:
    """One line per whole-benchmark failure, e.g. `REGRESSION test_train[...]: out of memory
    (baseline peak 9,120 MB)`, so the reason is read without the table."""
    return [
        f"{r.verdict} {r.benchmark}: {r.note}"
        for r in result.rows
        if r.metric == "-" and r.verdict in (REGRESSION, MISSING)
    ]


def format_table(result: GateResult) -> str:
    """Plain-text table for a terminal, followed by the notes and one summary line."""
    cells = [list(COLUMNS), *table_cells(result)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.extend(f"note: {n}" for n in result.notes)
    lines.extend(headline(result))
    lines.append(result.summary())
    return "\n".join(line.rstrip() for line in lines)


def to_markdown(result: GateResult) -> str:
    """Markdown for a CI job summary ($GITHUB_STEP_SUMMARY)."""
    lines = [f"### gpt2-bench regression gate: {STATUS[result.verdict]}", ""]
    lines.extend(f"- **{line}**" for line in headline(result))
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for cell in table_cells(result):
        cell[-1] = f"**{cell[-1]}**" if cell[-1].startswith(REGRESSION) else cell[-1]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cell) + " |")
    lines.append("")
    lines.extend(f"- {n}" for n in result.notes)
    lines.append(f"- {result.summary()}")
    return "\n".join(lines) + "\n"


def _safe(x: float | None) -> float | str | None:
    return x if x is None or math.isfinite(x) else str(x)


def to_json(result: GateResult) -> dict[str, Any]:
    """The verdict JSON (docs/gate.md, "Output"): verdict, exit code, summary, rows, new,
    missing, failed cases, notes and settings; infinite numbers become "inf"/"-inf"."""
    rows = [
        {k: _safe(v) if isinstance(v, float) else v for k, v in asdict(r).items()}
        for r in result.rows
    ]
    s = result.settings
    return {
        "verdict": result.verdict,
        "exit_code": result.exit_code,
        "summary": result.summary(),
        "rows": rows,
        "new": list(result.new),
        "missing": list(result.missing),
        "failed_cases": [
            {"benchmark": r.benchmark, "reason": r.note}
            for r in result.rows
            if r.metric == "-" and r.benchmark in result.failed_cases
        ],
        "notes": list(result.notes),
        "settings": {
            "alpha": s.alpha,
            "time_basis": s.time_basis,
            "fail_on_missing": s.fail_on_missing,
            "inconclusive": s.inconclusive,
            "spread_k": s.spread_k,
            "device_mismatch": s.device_mismatch,
            "control_tolerance": s.control_tolerance,  # null: the defaults below, by kind
            "control_tolerance_defaults": dict(CONTROL_TOLERANCES),
            "thresholds": {k: str(v) for k, v in s.thresholds.base.items()},
            "per_benchmark": [[p, m, str(t)] for p, m, t in s.thresholds.per_benchmark],
        },
    }


def write_outputs(result: GateResult, markdown: str | None, json_path: str | None) -> None:
    """Write the Markdown and JSON renderings atomically; append Markdown to an existing summary.

    $GITHUB_STEP_SUMMARY is a file the job appends to, so Markdown is appended when the file
    already exists and is not empty. Raises files.UnusableInput naming a file it cannot write.
    """
    if markdown:
        path = Path(markdown)
        try:
            previous = path.read_text(encoding="utf-8") if path.is_file() else ""
        except (OSError, UnicodeDecodeError) as err:
            raise files.UnusableInput(f"{path}: cannot append to it ({err})") from None
        sep = "\n" if previous and not previous.endswith("\n") else ""
        files.write_text(path, previous + sep + to_markdown(result))
    if json_path:
        text = json.dumps(to_json(result), indent=2, allow_nan=False) + "\n"
        files.write_text(json_path, text)


def check_output_paths(*paths: str | None) -> None:
    """Refuse an output path that cannot be written before anything is judged or printed."""
    for p in filter(None, paths):
        path = Path(p)
        if path.is_dir():
            raise files.UnusableInput(f"{path}: is a directory, expected a file to write")
        parent = path.parent if str(path.parent) else Path(".")
        if parent.exists() and not parent.is_dir():
            raise files.UnusableInput(f"{path}: {parent} is not a directory")
