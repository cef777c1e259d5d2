"""Tables, arithmetic and plots of gpt2_fixtures.results.report.

``tests/data/results_tiny.json`` is a real run of a tiny CPU grid (command in docs/report.md);
its timings are whatever that loaded machine measured, so nothing here asserts a timing, only
that every case becomes a row and every plot a valid PNG. Synthetic entries (built below, never
written into tests/data) cover what that file lacks: generation columns and exact arithmetic.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpt2_fixtures import cli
from gpt2_fixtures.results import report

DATA = Path(__file__).parent / "data" / "results_tiny.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def bench(
    opt: str,
    batch: int,
    seq: int,
    median: float,
    phase: str = "train",
    function: str = "test_train",
    tail: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """A synthetic benchmark entry in the pytest-benchmark JSON layout."""
    name = f"{function}[{opt}-b{batch}-s{seq}{tail}]"
    info = {
        "phase": phase,
        "model": "tiny",
        "optimization": opt,
        "device": "cpu",
        "batch_size": batch,
        "seq_len": seq,
        "samples_per_s": batch / median,
        "tokens_per_s": batch * seq / median,
        "peak_memory_mb": 100.0 + batch * seq / 10,
        "memory_kind": "cpu_rss",
        **extra,
    }
    # Five rounds 2% apart: enough for a rounds-based interval, tight enough to be significant.
    data = [median * f for f in (0.96, 0.98, 1.0, 1.02, 1.04)]
    stats = {"median": median, "mean": median, "stddev": statistics.stdev(data), "rounds": 5}
    stats["data"] = data
    return {
        "name": name,
        "fullname": f"benchmarks/x.py::{name}",
        "params": None,
        "stats": stats,
        "extra_info": info,
    }


def png_ok(path: Path) -> None:
    """Non-empty, PNG signature, and matplotlib reads it back as an image."""
    import matplotlib.image

    data = path.read_bytes()
    assert len(data) > 1000, path
    assert data.startswith(PNG_SIGNATURE), path
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100, path


# --------------------------------------------------------------------------------------------
# Arithmetic


def test_speedup_is_reference_time_over_recipe_time() -> None:
    assert report.speedup(2.0, 1.0) == 2.0
    assert report.speedup(1.0, 4.0) == 0.25
    assert report.speedup(None, 1.0) is None
    assert report.speedup(1.0, 0.0) is None


def test_relative_change() -> None:
    assert report.relative_change(110.0, 100.0) == pytest.approx(0.10)
    assert report.relative_change(90.0, 100.0) == pytest.approx(-0.10)
    assert report.relative_change(1.0, 0.0) is None
    assert report.relative_change(None, 1.0) is None


def test_speedups_match_reference_of_same_phase_and_shape() -> None:
    cases = report.cases_from_benchmarks(
        [
            bench("eager-fp32", 1, 128, 0.4),
            bench("sdpa-fp32", 1, 128, 0.1),
            bench("eager-fp32", 8, 128, 2.0),
            bench("sdpa-fp32", 8, 128, 0.5),
            bench("sdpa-fp32", 8, 512, 0.5),  # no reference at this shape
            bench("eager-fp32", 1, 128, 0.2, phase="infer", function="test_infer"),
            bench("sdpa-fp32", 1, 128, 0.1, phase="infer", function="test_infer"),
        ]
    )
    ups = {c.name: v for c, v in zip(cases, report.speedups(cases).values(), strict=True)}
    assert ups["test_train[eager-fp32-b1-s128]"] == 1.0
    assert ups["test_train[sdpa-fp32-b1-s128]"] == pytest.approx(4.0)
    assert ups["test_train[sdpa-fp32-b8-s128]"] == pytest.approx(4.0)
    assert ups["test_train[sdpa-fp32-b8-s512]"] is None
    assert ups["test_infer[sdpa-fp32-b1-s128]"] == pytest.approx(2.0)
    stats = report.summary_statistics(cases)
    assert stats["train/best_speedup_vs_eager-fp32"] == pytest.approx(4.0)
    assert stats["infer/median_speedup_vs_eager-fp32"] == pytest.approx(2.0)


def test_id_variants_are_separate_shapes() -> None:
    """Generate cases with 32 and 64 new tokens are each compared with their own reference."""
    gen = {"phase": "generate", "function": "test_generate"}
    cases = report.cases_from_benchmarks(
        [
            bench("eager-fp32", 1, 32, 0.2, tail="-n32", new_tokens=32, **gen),
            bench("sdpa-fp32", 1, 32, 0.1, tail="-n32", new_tokens=32, **gen),
            bench("eager-fp32", 1, 32, 0.9, tail="-n64", new_tokens=64, **gen),
            bench("sdpa-fp32", 1, 32, 0.3, tail="-n64", new_tokens=64, **gen),
        ]
    )
    assert [c.variant for c in cases] == ["n32", "n32", "n64", "n64"]
    assert list(report.speedups(cases).values()) == pytest.approx([1.0, 2.0, 1.0, 3.0])
    table = report.phase_table("generate", cases)
    assert "new tokens" in [c.header for c in table.columns]


def test_distributed_ids_keep_strategy_and_world_size_apart() -> None:
    entries = [
        bench(f"{strategy}-eager-fp32", 8, 128, median, tail="-w2", strategy=strategy)
        for strategy, median in (("ddp", 0.2), ("fsdp", 0.4))
    ]
    for entry in entries:
        entry["extra_info"]["optimization"] = "eager-fp32"
    cases = report.cases_from_benchmarks(entries)
    assert [c.variant for c in cases] == ["ddp w2", "fsdp w2"]
    assert [c.optimization for c in cases] == ["eager-fp32", "eager-fp32"]
    assert list(report.speedups(cases).values()) == [1.0, 1.0]  # each is its own reference


def test_baseline_changes_per_metric() -> None:
    (old,) = report.cases_from_benchmarks([bench("sdpa-fp32", 1, 128, 0.2)])
    (new,) = report.cases_from_benchmarks([bench("sdpa-fp32", 1, 128, 0.1)])
    changes = report.baseline_changes(new, old)
    assert changes is not None
    assert changes["median"] == pytest.approx(-0.5)
    assert changes["tokens_per_s"] == pytest.approx(1.0)  # half the time, twice the tokens/s
    assert changes["peak_memory_mb"] == 0.0
    assert report.baseline_changes(new, None) is None


def test_ids_fill_in_what_extra_info_lacks() -> None:
    entry = bench("sdpa-bf16", 8, 512, 0.1, function="test_infer")
    entry["extra_info"] = {}
    case = report.case_from_benchmark(entry)
    assert (case.phase, case.optimization, case.batch_size, case.seq_len) == (
        "infer",
        "sdpa-bf16",
        8,
        512,
    )
    assert case.metric("tokens_per_s") is None


def test_number_formatting_keeps_three_significant_digits() -> None:
    assert report.fmt_number(1234.5) == "1,234"
    assert report.fmt_number(12.34) == "12.3"
    assert report.fmt_number(1.234) == "1.23"
    assert report.fmt_number(0.0362) == "0.0362"
    assert report.fmt_number(0.3) == "0.300"
    assert report.fmt_number(None) == report.MISSING
    assert report.fmt_number(float("nan")) == report.MISSING
    assert report.fmt_percent(0.052, signed=True) == "+5.2%"
    assert report.fmt_speedup(1.5) == "1.50x"


# --------------------------------------------------------------------------------------------
# One table model, two renderers


def test_text_and_markdown_render_the_same_cells() -> None:
    table = report.Table(
        "train",
        [report.Column("recipe", numeric=False), report.Column("ms")],
        [["eager-fp32", "1.00"], ["a|b", "20.5"]],
        note="a note",
    )
    text = report.render_text([table])
    md = report.render_markdown([table])
    lines = text.splitlines()
    assert lines[0] == "train"
    assert lines[1].split() == ["recipe", "ms"]
    assert lines[3].split() == ["eager-fp32", "1.00"]
    assert lines[-1] == "a note"
    assert "### train" in md
    assert "|:---|---:|" in md
    assert "| eager-fp32 | 1.00 |" in md
    assert "| a\\|b | 20.5 |" in md  # a pipe in a cell must not split the Markdown row


def test_console_summary_has_one_table_per_phase() -> None:
    entries = [
        bench("eager-fp32", 1, 128, 0.4),
        bench("sdpa-fp32", 1, 128, 0.1, mfu=0.123),
        bench("eager-fp32", 1, 128, 0.2, phase="infer", function="test_infer"),
    ]
    text = report.console_summary(entries)
    assert text.index("train (tiny, cpu)") < text.index("infer (tiny, cpu)")
    train = report.build_tables(report.cases_from_benchmarks(entries))[0]
    sdpa = dict(zip([c.header for c in train.columns], train.rows[1], strict=True))
    assert sdpa["MFU"] == "12.3%"
    assert sdpa["speedup vs eager-fp32"].startswith("4.00x [")
    assert "MFU" not in text.split("infer (tiny, cpu)")[1]  # only where some case has it
    assert report.console_summary([]) == ""


def test_generation_columns_appear_for_generate_phase() -> None:
    entries = [
        bench("eager-fp32", 1, 64, 0.5, "generate", "test_generate", ttft_ms=20.0, tpot_ms=5.0),
        bench("sdpa-fp32", 1, 64, 0.25, "generate", "test_generate", ttft_ms=10.0, tpot_ms=2.5),
    ]
    for entry in entries:
        entry["extra_info"]["decode_tokens_per_s"] = 1000.0 / entry["extra_info"]["tpot_ms"]
    table = report.build_tables(report.cases_from_benchmarks(entries))[0]
    cells = dict(zip([c.header for c in table.columns], table.rows[1], strict=True))
    assert [cells[h] for h in ("TTFT ms", "TPOT ms", "decode tok/s")] == ["10.0", "2.50", "400"]
    assert cells["speedup vs eager-fp32"].startswith("2.00x [")


def test_baseline_table_reports_new_and_vanished_cases() -> None:
    base = report.cases_from_benchmarks(
        [bench("eager-fp32", 1, 128, 0.4), bench("sdpa-fp32", 8, 128, 0.1)]
    )
    now = report.cases_from_benchmarks(
        [bench("eager-fp32", 1, 128, 0.44), bench("sdpa-bf16", 1, 128, 0.1)]
    )
    table = report.baseline_table("train", now, base)
    rows = {row[0]: row for row in table.rows}
    assert rows["eager-fp32"][3:5] == ["400", "440"]
    assert rows["eager-fp32"][5].startswith("+10.0% [")
    assert rows["sdpa-bf16"][3] == "not in baseline"
    assert "test_train[sdpa-fp32-b8-s128]" in table.note


# --------------------------------------------------------------------------------------------
# The report from the checked-in real results


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory: pytest.TempPathFactory) -> report.ReportFiles:
    out = tmp_path_factory.mktemp("report")
    return report.write_report([DATA], out, baseline_path=DATA)


@pytest.mark.slow
def test_report_has_a_row_per_benchmark(tiny_report: report.ReportFiles) -> None:
    md = tiny_report.report.read_text()
    entries = json.loads(DATA.read_text())["benchmarks"]
    assert entries, "the checked-in results file has no benchmarks"
    for entry in entries:
        info = entry["extra_info"]
        row = f"| {info['optimization']} | {info['batch_size']} | {info['seq_len']} |"
        # Once in the phase table, once in the baseline table (each phase has its own).
        section = md.split(f"## {info['phase']}\n")[1].split("\n## ")[0]
        assert section.count(row) == 2, row
    assert "| eager-fp32 |" in md and "1.00x" in md
    assert "+0.0% [" in md and "n.s." in md  # compared with itself: no significant change
    assert "- torch: `" in md


def test_report_plots_are_valid_pngs_and_embedded(tiny_report: report.ReportFiles) -> None:
    out = tiny_report.report.parent
    phases = {e["extra_info"]["phase"] for e in json.loads(DATA.read_text())["benchmarks"]}
    expected = {
        f"{kind}_{phase}.png" for kind in ("speedup", "memory", "throughput") for phase in phases
    }
    if any(
        "footprint_memory_mb" in e["extra_info"] for e in json.loads(DATA.read_text())["benchmarks"]
    ):
        expected |= {f"footprint_{phase}.png" for phase in phases}
    assert "generate" in phases  # the file has every phase a plain `pytest benchmarks` runs
    expected.add("generation_latency.png")
    assert {p.name for p in tiny_report.plots} == expected
    assert {p.name for p in out.glob("*.png")} == expected
    md = tiny_report.report.read_text()
    embedded = set(re.findall(r"!\[[^]]*\]\(([^)]+)\)", md))
    assert embedded == expected  # relative paths, next to report.md
    for path in tiny_report.plots:
        png_ok(path)


def test_generation_plot(tmp_path: Path) -> None:
    entries = [
        bench(opt, b, 64, 0.1 * b, "generate", "test_generate", ttft_ms=9.0 * b, tpot_ms=2.0)
        for opt in ("eager-fp32", "sdpa-fp32")
        for b in (1, 4)
    ]
    cases = report.cases_from_benchmarks(entries)
    path = report.plot_generation(cases, tmp_path / "gen.png")
    assert path is not None
    png_ok(path)
    assert report.plot_generation(cases[:0], tmp_path / "none.png") is None


def test_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"benchmarks": [bench("eager-fp32", 1, 8, 0.1)]}))
    assert cli.main(["report", str(results), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.md").is_file()
    # Memory and throughput; no speedup heatmap without a second recipe.
    assert "2 plot(s)" in capsys.readouterr().out
    # Against the real file as baseline: every phase of it but train is missing here.
    assert cli.main(["report", str(results), "--baseline", str(DATA), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "| eager-fp32 | 1 | 8 | not in baseline |" in md
    assert "Phases only in the baseline (not run here): infer, generate, distill." in md


def test_not_a_results_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": 1}')
    assert not hasattr(report, "load_results")  # one loader: results.files.load_result
    assert cli.main(["report", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert cli.main(["report", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a pytest-benchmark result" in err and "no such file" in err
