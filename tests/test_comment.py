"""`gpt2-bench comment`: the gate verdict JSON as one pull-request comment.

Rendered from the gate JSON of real runs of the tiny grid (tests/data/comment/, how they were made
is in results/README.md): a PASS, a REGRESSION and a run with missing cases; also from what
today's `gpt2-bench compare --json` writes for the same result files, so the comment follows the
gate's contract as the gate changes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpt2_fixtures.cli import main
from gpt2_fixtures.results import comment

DATA = Path(__file__).parent / "data" / "comment"
RESULTS = DATA / "results"


def _verdict(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))
    return data


def _row(**overrides: Any) -> dict[str, Any]:
    row = {
        "benchmark": "test_train[sdpa-fp32-b1-s64]",
        "metric": "time/control",
        "unit": "x",
        "baseline": 1.0,
        "current": 1.3,
        "change": 0.30,
        "change_low": 0.25,
        "change_high": 0.35,
        "p_value": 1e-5,
        "threshold": "10%",
        "verdict": "REGRESSION",
        "note": "",
    }
    return {**row, **overrides}


# --- real runs ------------------------------------------------------------------------------------


def test_pass_run_says_pass_and_folds_pass_and_drift_into_counts() -> None:
    verdict = _verdict("pass")
    text = comment.render(verdict)
    assert text.startswith(comment.MARKER + "\n")
    assert "✅ **PASS**" in text.splitlines()[1]
    listed = [line for line in text.splitlines() if line.startswith("| `")]
    shown = [r for r in verdict["rows"] if r["verdict"] not in ("pass", "drift")]
    assert shown and len(listed) == len(shown)  # the improvements
    assert all("improved" in line for line in listed)
    passed = sum(r["verdict"] == "pass" for r in verdict["rows"])
    drift = sum(r["verdict"] == "drift" for r in verdict["rows"])
    assert f"Not listed: {passed} pass, {drift} drift (full table: the job summary)." in text
    # every benchmark's time row is in the chart, with its speed factor
    benchmarks = {r["benchmark"] for r in verdict["rows"]}
    chart = text.split("Time against the baseline")[1].split("```")[1]
    assert all(b in chart for b in benchmarks)
    assert "│" in chart and "●" in chart and "speed" in chart


def test_regression_run_puts_the_regressions_first() -> None:
    verdict = _verdict("regression")
    assert verdict["exit_code"] == 1
    text = comment.render(verdict)
    assert "❌ **REGRESSION**" in text.splitlines()[1]
    table = [line for line in text.splitlines() if line.startswith("| `")]
    regressions = sum(r["verdict"] == "REGRESSION" for r in verdict["rows"])
    assert regressions and all("**REGRESSION**" in line for line in table[:regressions])
    assert "**REGRESSION**" not in " ".join(table[regressions:])
    assert "peak\\_memory\\_mb" in table[0]  # the injected +20% memory
    # the memory regressions reach the chart of other metrics, on the worse (right) side
    other = text.split("Other metrics that did not pass")[1].split("```")[1].splitlines()
    memory = [line for line in other if "peak_memory_mb" in line and "REGRESSION" in line]
    assert memory
    for line in memory:  # names hold neither mark
        assert line.index("●") > line.index("│")


def test_run_with_missing_cases_is_never_a_silent_pass() -> None:
    verdict = _verdict("not-judged")
    text = comment.render(verdict)
    headline = text.splitlines()[1]
    if comment.exit_code(verdict) == 0:  # the 0.2 gate passed it: the comment says what is unjudged
        assert "not judged" in headline
    assert "**Missing from this run** (4)" in text
    assert "4 missing" in text


@pytest.mark.parametrize(
    ("current", "expected"),
    # slow.json: its time rows are the machine's (control moved), its resident peaks +17-22%
    # from one process a side: inconclusive, not a regression (docs/gate.md, "Memory")
    [("cur.json", {0, 3}), ("slow.json", {3}), ("short.json", {0, 1, 3})],
    ids=["pass", "regression", "not-judged"],
)
def test_todays_gate_json_renders_with_its_own_verdict(
    tmp_path: Path, current: str, expected: set[int]
) -> None:
    gate_json = tmp_path / "verdict.json"
    command = [sys.executable, "-m", "gpt2_fixtures.cli", "compare", str(RESULTS / "base.json")]
    proc = subprocess.run(
        [*command, str(RESULTS / current), "--json", str(gate_json)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    assert proc.returncode in expected, proc.stderr
    verdict = json.loads(gate_json.read_text(encoding="utf-8"))
    assert comment.exit_code(verdict) == proc.returncode
    text = comment.render(verdict)
    assert comment.HEADLINES[proc.returncode] in text.splitlines()[1]
    if proc.returncode != 0:
        assert "| `" in text  # the rows that made it fail or not judged are listed


def test_older_verdict_without_exit_code_reads_the_verdict_word() -> None:
    assert comment.exit_code({"verdict": "fail"}) == 1
    assert comment.exit_code({"verdict": "not-judged"}) == 3
    assert comment.exit_code({"verdict": "pass", "exit_code": 3}) == 3
    assert comment.exit_code({"verdict": "??"}) == 2  # unknown: never a PASS
    assert comment.exit_code({"exit_code": True, "verdict": "fail"}) == 1


# --- charts ---------------------------------------------------------------------------------------


def test_chart_line_draws_interval_estimate_axis_and_threshold() -> None:
    row = comment._row(_row())
    assert row is not None
    line = comment.chart_line(row, scale=0.40)
    half = comment.CHART_WIDTH // 2
    assert len(line) == comment.CHART_WIDTH and line[half] == "│"  # the interval is all > 0
    assert line.count("┆") == 2
    estimate = line.index("●")
    assert estimate > half  # slower is to the right
    assert line[estimate - 1] == "━" and line[estimate + 1] == "━"


def test_marks_stay_visible_where_the_interval_crosses_them() -> None:
    row = comment._row(_row(change=0.05, change_low=-0.02, change_high=0.12))
    assert row is not None
    line = comment.chart_line(row, scale=0.20)
    assert line[comment.CHART_WIDTH // 2] == "┿" and "╪" in line and "●" in line


def test_lower_throughput_is_drawn_on_the_worse_side() -> None:
    row = comment._row(
        _row(metric="tokens_per_s", change=-0.2, change_low=-0.25, change_high=-0.15)
    )
    assert row is not None
    line = comment.chart_line(row, scale=0.40)
    assert line.index("●") > comment.CHART_WIDTH // 2


def test_out_of_range_changes_are_clamped_with_an_arrow() -> None:
    row = comment._row(_row(change=5.0, change_low=None, change_high=None))
    assert row is not None
    assert comment.chart_line(row, scale=1.0).endswith("▶")


def test_intervals_are_optional_and_shown_when_present() -> None:
    text = comment.render({"exit_code": 1, "rows": [_row()]})
    assert "+30.0% [+25.0%, +35.0%]" in text
    bare = {k: v for k, v in _row().items() if k not in ("change_low", "change_high")}
    text = comment.render({"exit_code": 1, "rows": [bare]})
    assert "+30.0%" in text and "[+25.0%" not in text


# --- untrusted input ----------------------------------------------------------------------------


def test_untrusted_strings_cannot_inject_markup() -> None:
    evil = "x`](https://evil) @maintainer <img src=x> ```\n| col |"
    verdict = {
        "exit_code": 1,
        "summary": "<script>@everyone</script>",
        "rows": [_row(benchmark=evil, note=evil, verdict="REGRESSION")],
        "notes": [evil],
        "missing": [evil],
    }
    text = comment.render(verdict)
    # outside code blocks and code spans (where GitHub shows text as it is) nothing is live
    prose = re.sub(r"```text\n.*?\n```", "", text, flags=re.S)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    assert "<" not in prose.replace("\\<", "").replace("<!-- gpt2-bench-gate -->", "")
    assert "@maintainer" not in prose and "@everyone" not in prose
    assert "](" not in prose.replace("\\]\\(", "").replace("\\](", "")
    # the only code fences are the chart's own opening and closing lines
    fences = [line for line in text.splitlines() if "```" in line]
    assert all(line in ("```text", "```") for line in fences)
    # table rows keep their column count: no unescaped pipe from the data
    for line in text.splitlines():
        if line.startswith("| `"):
            assert line.replace("\\|", "").count("|") == 8


def test_non_finite_and_wrongly_typed_numbers_are_shown_as_dashes() -> None:
    row = _row(change="inf", baseline=float("nan"), current=True, change_low="x")
    text = comment.render({"exit_code": 1, "rows": [row, "not a row", 7]})
    assert "| – | – | – |" in text


def test_long_input_is_cut_below_githubs_limit() -> None:
    rows = [_row(benchmark=f"test_train[case-{i}-" + "x" * 150 + "]") for i in range(2000)]
    text = comment.render({"exit_code": 1, "rows": rows}, limit=2000)
    assert len(text) <= comment.MAX_CHARS
    assert "cut here" in text


# --- the command ----------------------------------------------------------------------------------


def test_command_writes_the_comment_and_appends_the_summary(tmp_path: Path) -> None:
    out, summary = tmp_path / "comment.md", tmp_path / "summary.md"
    summary.write_text("# before\n", encoding="utf-8")
    code = main(
        ["comment", str(DATA / "regression.json"), "--out", str(out), "--summary", str(summary)]
    )
    assert code == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith(comment.MARKER)
    appended = summary.read_text(encoding="utf-8")
    assert appended.startswith("# before\n") and comment.MARKER not in appended
    assert "Other metrics that did not pass" in appended  # the same charts in the job summary


@pytest.mark.parametrize("content", ["", "{", "[1, 2]", '{"rows": 3}'])
def test_command_refuses_unusable_input_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    path = tmp_path / "verdict.json"
    path.write_text(content, encoding="utf-8")
    assert main(["comment", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpt2-bench comment: error:") and len(err.splitlines()) == 1
    assert main(["comment", str(tmp_path / "absent.json")]) == 2


def test_comment_module_imports_neither_torch_nor_pytest() -> None:
    code = (
        "import sys; import gpt2_fixtures.cli as c; c.main(['comment', sys.argv[1]]);"
        "assert 'torch' not in sys.modules and 'pytest' not in sys.modules, 'heavy import'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(DATA / "pass.json")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 0, proc.stderr


# --- the table: regressions, inconclusive rows, improvements; the rest counted -------------------


def test_drift_rows_are_counted_not_listed_and_inconclusive_rows_are_listed() -> None:
    table = [_row(benchmark=f"test_x[{i}]", verdict="drift") for i in range(34)]
    table += [_row(benchmark="test_slow", verdict="REGRESSION")]
    table += [_row(benchmark="test_unsure", verdict="inconclusive")]
    table += [_row(benchmark="test_fast", verdict="improved", change=-0.3)]
    text = comment.render({"exit_code": 1, "rows": table})
    listed = [line for line in text.splitlines() if line.startswith("| `")]
    assert [line.split("`")[1] for line in listed] == ["test_slow", "test_unsure", "test_fast"]
    assert "Not listed: 34 drift (full table: the job summary)." in text


# --- untrusted text: each way GitHub would make it live, neutralised ------------------------------


def _note_line(note: str) -> str:
    text = comment.render({"exit_code": 0, "rows": [], "notes": [note]})
    (line,) = [line for line in text.splitlines() if line.startswith("- ")]
    return line


@pytest.mark.parametrize(
    "url", ["https://evil.example/x", "HTTP://evil.example", "www.evil.example"]
)
def test_bare_links_are_not_autolinked(url: str) -> None:
    line = _note_line(f"see {url} now")
    assert url not in line
    assert url.replace(comment.JOINER, "") not in line.replace("\\", "")
    assert line.replace(comment.JOINER, "") == f"- see {url} now"  # still readable


@pytest.mark.parametrize("ref", ["#1", "owner/repo#5", "GH-12", "fixes #123"])
def test_cross_references_are_not_linked(ref: str) -> None:
    line = _note_line(ref)
    assert not re.search(r"#\d|GH-\d", line), line
    assert line.replace(comment.JOINER, "") == f"- {ref}"


def test_mentions_do_not_notify() -> None:
    line = _note_line("ping @maintainer and @org/team")
    assert not re.search(r"@\w", line)


@pytest.mark.parametrize(
    "char",
    [
        "\u202a",
        "\u202b",
        "\u202d",
        "\u202e",
        "\u2066",
        "\u2067",
        "\u2068",
        "\u2069",
        "\u200e",
        "\u200f",
        "\u061c",
        "\ufeff",
    ],
)
def test_bidi_and_invisible_controls_are_dropped(char: str) -> None:
    evil = f"test_a{char}[sdpa]"
    text = comment.render(
        {
            "exit_code": 1,
            "rows": [_row(benchmark=evil, note=evil)],
            "notes": [evil],
            "summary": evil,
        }
    )
    assert char not in text


@pytest.mark.parametrize(
    ("note", "shown"),
    [
        ("# x", "- \\# x"),
        ("## x", "- \\## x"),
        ("- # x", "- \\- # x"),
        ("+ item", "- \\+ item"),
        ("1. first", "- 1\\. first"),
        ("---", "- \\---"),
        ("> quote", "- \\> quote"),
        ("-3.1% faster", "- -3.1% faster"),  # a number is left as it is
    ],
)
def test_line_start_markup_renders_as_text(note: str, shown: str) -> None:
    assert _note_line(note) == shown


@pytest.mark.parametrize("huge", [10**400, -(10**400), 1e308, -1e308])
def test_a_huge_number_is_shown_without_a_traceback(huge: float) -> None:
    row = _row(baseline=huge, current=huge, change=huge, change_low=huge, change_high=huge)
    text = comment.render({"exit_code": 1, "rows": [row, _row(threshold="1.2.3%")]})
    assert text.startswith(comment.MARKER)


def test_a_number_of_more_digits_than_python_converts_is_unusable_input(tmp_path: Path) -> None:
    path = tmp_path / "verdict.json"
    path.write_text('{"rows": [{"change": ' + "9" * 5000 + "}]}", encoding="utf-8")
    with pytest.raises(comment.CommentError, match="not JSON"):
        comment.load(path)


# --- the CI run's comment: headline from the run's conclusion, the head, run and baseline ---------

RUN_URL = "https://github.com/owner/gpt2-bench/actions/runs/99"
HEAD = "0123456789abcdef0123456789abcdef01234567"


def _status(**overrides: Any) -> dict[str, Any]:
    status = {
        "outcome": "gated",
        "reason": "",
        "base_sha": "fedcba9876543210fedcba9876543210fedcba98",
        "gate_exit": 0,
        "baseline": {
            "run_id": "77",
            "head_sha": "aaaaaaaaaaaabbbbbbbbbbbbccccccccccccdddd",
            "created_at": "2026-12-01T10:00:00Z",
            "device": "NVIDIA H100 80GB HBM3",
            "stack": "torch 2.13.0, CUDA 12.8",
            "pooled": [
                {"run": "run-1", "sha": "aaaaaaaaaaaa"},
                {"run": "run-2", "sha": "bbbbbbbbbbbb"},
            ],
        },
    }
    return {**status, **overrides}


def test_run_comment_names_head_run_base_and_baseline() -> None:
    run = comment.RunInfo("success", HEAD, RUN_URL)
    text = comment.render_run(run, _status(), _verdict("pass"))
    assert "✅ run succeeded" in text.splitlines()[1]
    assert "Verdict reported by that run: ✅ **PASS**" in text
    assert f"Head `{HEAD[:12]}`, [run 99]({RUN_URL}), pull request base `fedcba987654`." in text
    assert "main commit `aaaaaaaaaaaa`, run 77, device NVIDIA H100 80GB HBM3" in text
    assert "pooling 2 main run(s) (`aaaaaaaaaaaa`, `bbbbbbbbbbbb`)" in text
    assert f"full table: [run 99]({RUN_URL}) job summary" in text


def test_headline_comes_from_the_run_not_from_the_artifact() -> None:
    # a run that failed cannot read as a PASS, whatever verdict its artifact holds
    run = comment.RunInfo("failure", HEAD, RUN_URL)
    text = comment.render_run(run, _status(), _verdict("pass"))
    assert "❌ run failed" in text.splitlines()[1] and "PASS" not in text.splitlines()[1]


@pytest.mark.parametrize(
    ("outcome", "said"),
    [
        ("not-gated", "not gated"),
        ("failed-shard", "a benchmark shard failed"),
        ("device-mismatch", "the baseline is from another device"),
        ("cancelled", "the run was cancelled"),
    ],
)
def test_every_outcome_is_said(outcome: str, said: str) -> None:
    run = comment.RunInfo("failure", HEAD, RUN_URL)
    status = _status(outcome=outcome, reason="no gpu-baseline-nvidia-h100 artifact", baseline=None)
    text = comment.render_run(run, status, None)
    assert "What happened: " in text and said in text and "No gate verdict from this run." in text
    assert "Baseline: none used." in text and HEAD[:12] in text


def test_a_run_without_a_status_still_names_its_head_and_conclusion() -> None:
    text = comment.render_run(comment.RunInfo("cancelled", HEAD, RUN_URL), None, None)
    assert "⏹️ run cancelled" in text.splitlines()[1]
    assert HEAD[:12] in text and "No status artifact" in text


def test_run_comment_escapes_the_status_and_refuses_a_foreign_link() -> None:
    status = _status(reason="@admin see https://evil.example #3", outcome="<b>")
    run = comment.RunInfo("success", "not-a-sha", "https://evil.example/actions/runs/1")
    text = comment.render_run(run, status, None)
    assert "@admin" not in text and "https://evil" not in text and "#3" not in text
    assert "<b>" not in text and "](https://evil" not in text and "Head `unknown`" in text


def test_command_renders_a_run_comment_without_a_verdict(tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    status.write_text(json.dumps(_status(outcome="failed-shard", baseline=None)), encoding="utf-8")
    out = tmp_path / "comment.md"
    args = ["comment", "--conclusion", "failure", "--status", str(status), "--out", str(out)]
    assert main([*args, "--head-sha", HEAD, "--run-url", RUN_URL]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith(comment.MARKER) and "a benchmark shard failed" in text
    missing = ["comment", "--conclusion", "cancelled", "--status", str(tmp_path / "none.json")]
    assert main([*missing, "--out", str(out)]) == 0
    assert "No status artifact" in out.read_text(encoding="utf-8")
    assert main(["comment"]) == 2  # neither a verdict nor a run


def test_a_stack_comparison_says_so_and_which_versions_changed() -> None:
    """A pull request that bumps the stack is judged by the stack A/B, not the stored baseline."""
    pins = "torch 2.13.0 -> 2.14.0, triton 3.5.0 -> 3.6.0; pyproject.toml: dependencies +x @y #3"
    status = _status(kind="stack", stack_pins=pins, baseline=None, reason="stack A/B exit 1")
    text = comment.render_run(comment.RunInfo("failure", HEAD, RUN_URL), status, _verdict("pass"))
    assert "Stack comparison: this pull request changes the stack" in text
    assert "torch 2.13.0 -\\> 2.14.0, triton 3.5.0 -\\> 3.6.0" in text  # escaped, still readable
    assert "@\u2060y" in text and "#\u20603" in text  # the pins are untrusted text
    assert "gated by the stack A/B" in text and "Baseline:" not in text
    plain = comment.render_run(comment.RunInfo("success", HEAD, RUN_URL), _status(), None)
    assert "Stack comparison" not in plain and "gated against the main baseline" in plain
