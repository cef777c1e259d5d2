"""Tables, arithmetic and plots of gpt2_fixtures.results.report.

``tests/data/results_tiny.json`` is a real run of a tiny CPU grid (command in docs/report.md);
its timings are whatever that loaded machine measured, so nothing here asserts a timing, only
that every case becomes a row and every plot a valid PNG. Synthetic entries (built below, never
written into tests/data) cover what that file lacks: generation columns and exact arithmetic.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import result_entry

from gpt2_fixtures import cli
from gpt2_fixtures.results.report import cases as report_cases
from gpt2_fixtures.results.report import document as report_document
from gpt2_fixtures.results.report import plots as report_plots
from gpt2_fixtures.results.report import tables as report_tables

DATA = Path(__file__).parent / "data" / "results_tiny.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


def test_speedup_is_reference_time_over_optimization_time() -> None:
    assert report_cases.speedup(2.0, 1.0) == 2.0
    assert report_cases.speedup(1.0, 4.0) == 0.25
    assert report_cases.speedup(None, 1.0) is None
    assert report_cases.speedup(1.0, 0.0) is None


def test_relative_change() -> None:
    assert report_cases.relative_change(110.0, 100.0) == pytest.approx(0.10)
    assert report_cases.relative_change(90.0, 100.0) == pytest.approx(-0.10)
    assert report_cases.relative_change(1.0, 0.0) is None
    assert report_cases.relative_change(None, 1.0) is None


def test_speedups_match_reference_of_same_phase_and_shape() -> None:
    cases = report_cases.cases_from_benchmarks(
        [
            result_entry("eager-fp32", 1, 128, 0.4),
            result_entry("sdpa-fp32", 1, 128, 0.1),
            result_entry("eager-fp32", 8, 128, 2.0),
            result_entry("sdpa-fp32", 8, 128, 0.5),
            result_entry("sdpa-fp32", 8, 512, 0.5),  # no reference at this shape
            result_entry("eager-fp32", 1, 128, 0.2, phase="infer", function="test_infer"),
            result_entry("sdpa-fp32", 1, 128, 0.1, phase="infer", function="test_infer"),
        ]
    )
    ups = {c.name: v for c, v in zip(cases, report_cases.speedups(cases).values(), strict=True)}
    assert ups["test_train[eager-fp32-b1-s128]"] == 1.0
    assert ups["test_train[sdpa-fp32-b1-s128]"] == pytest.approx(4.0)
    assert ups["test_train[sdpa-fp32-b8-s128]"] == pytest.approx(4.0)
    assert ups["test_train[sdpa-fp32-b8-s512]"] is None
    assert ups["test_infer[sdpa-fp32-b1-s128]"] == pytest.approx(2.0)
    stats = report_document.summary_statistics(cases)
    assert stats["train/best_speedup_vs_eager-fp32"] == pytest.approx(4.0)
    assert stats["infer/median_speedup_vs_eager-fp32"] == pytest.approx(2.0)


def test_id_variants_are_separate_shapes() -> None:
    """Generate cases with 32 and 64 new tokens are each compared with their own reference."""
    gen = {"phase": "generate", "function": "test_generate"}
    cases = report_cases.cases_from_benchmarks(
        [
            result_entry("eager-fp32", 1, 32, 0.2, tail="-n32", new_tokens=32, **gen),
            result_entry("sdpa-fp32", 1, 32, 0.1, tail="-n32", new_tokens=32, **gen),
            result_entry("eager-fp32", 1, 32, 0.9, tail="-n64", new_tokens=64, **gen),
            result_entry("sdpa-fp32", 1, 32, 0.3, tail="-n64", new_tokens=64, **gen),
        ]
    )
    assert [c.variant for c in cases] == ["n32", "n32", "n64", "n64"]
    assert list(report_cases.speedups(cases).values()) == pytest.approx([1.0, 2.0, 1.0, 3.0])
    table = report_tables.phase_table("generate", cases)
    assert "new tokens" in [c.header for c in table.columns]


def test_distributed_ids_keep_strategy_and_world_size_apart() -> None:
    entries = [
        result_entry(f"{strategy}-eager-fp32", 8, 128, median, tail="-w2", strategy=strategy)
        for strategy, median in (("ddp", 0.2), ("fsdp", 0.4))
    ]
    for entry in entries:
        entry["extra_info"]["optimization"] = "eager-fp32"
    cases = report_cases.cases_from_benchmarks(entries)
    assert [c.variant for c in cases] == ["ddp w2", "fsdp w2"]
    assert [c.optimization for c in cases] == ["eager-fp32", "eager-fp32"]
    assert list(report_cases.speedups(cases).values()) == [1.0, 1.0]  # each is its own reference


def test_baseline_changes_per_metric() -> None:
    (old,) = report_cases.cases_from_benchmarks([result_entry("sdpa-fp32", 1, 128, 0.2)])
    (new,) = report_cases.cases_from_benchmarks([result_entry("sdpa-fp32", 1, 128, 0.1)])
    changes = report_tables.baseline_changes(new, old)
    assert changes is not None
    assert changes["median"] == pytest.approx(-0.5)
    assert changes["tokens_per_s"] == pytest.approx(1.0)  # half the time, twice the tokens/s
    assert changes["peak_memory_mb"] == 0.0
    assert report_tables.baseline_changes(new, None) is None


def test_ids_fill_in_what_extra_info_lacks() -> None:
    entry = result_entry("sdpa-bf16", 8, 512, 0.1, function="test_infer")
    entry["extra_info"] = {}
    case = report_cases.case_from_benchmark(entry)
    assert (case.phase, case.optimization, case.batch_size, case.seq_len) == (
        "infer",
        "sdpa-bf16",
        8,
        512,
    )
    assert case.metric("tokens_per_s") is None


def test_number_formatting_keeps_three_significant_digits() -> None:
    assert report_tables.fmt_number(1234.5) == "1,234"
    assert report_tables.fmt_number(12.34) == "12.3"
    assert report_tables.fmt_number(1.234) == "1.23"
    assert report_tables.fmt_number(0.0362) == "0.0362"
    assert report_tables.fmt_number(0.3) == "0.300"
    assert report_tables.fmt_number(None) == report_tables.MISSING
    assert report_tables.fmt_number(float("nan")) == report_tables.MISSING
    assert report_tables.fmt_percent(0.052, signed=True) == "+5.2%"
    assert report_tables.fmt_speedup(1.5) == "1.50x"


# --------------------------------------------------------------------------------------------
# One table model, two renderers


def test_text_and_markdown_render_the_same_cells() -> None:
    table = report_tables.Table(
        "train",
        [report_tables.Column("optimization", numeric=False), report_tables.Column("ms")],
        [["eager-fp32", "1.00"], ["a|b", "20.5"]],
        note="a note",
    )
    text = report_tables.render_text([table])
    md = report_tables.render_markdown([table])
    lines = text.splitlines()
    assert lines[0] == "train"
    assert lines[1].split() == ["optimization", "ms"]
    assert lines[3].split() == ["eager-fp32", "1.00"]
    assert lines[-1] == "a note"
    assert "### train" in md
    assert "|:---|---:|" in md
    assert "| eager-fp32 | 1.00 |" in md
    assert "| a\\|b | 20.5 |" in md  # a pipe in a cell must not split the Markdown row


def test_console_summary_has_one_table_per_phase() -> None:
    entries = [
        result_entry("eager-fp32", 1, 128, 0.4),
        result_entry("sdpa-fp32", 1, 128, 0.1, mfu=0.123),
        result_entry("eager-fp32", 1, 128, 0.2, phase="infer", function="test_infer"),
    ]
    text = report_tables.console_summary(entries)
    assert text.index("train (tiny, cpu)") < text.index("infer (tiny, cpu)")
    train = report_tables.build_tables(report_cases.cases_from_benchmarks(entries))[0]
    sdpa = dict(zip([c.header for c in train.columns], train.rows[1], strict=True))
    assert sdpa["MFU"] == "12.3%"
    assert sdpa["speedup vs eager-fp32"].startswith("4.00x [")
    assert "MFU" not in text.split("infer (tiny, cpu)")[1]  # only where some case has it
    assert report_tables.console_summary([]) == ""


def test_console_summary_names_the_cases_whose_rounds_took_page_faults() -> None:
    steady = result_entry("eager-fp32", 1, 128, 0.4)
    faulted = result_entry("sdpa-fp32", 1, 128, 0.1)
    steady["extra_info"]["round_page_faults"] = [0, 12, 999, 0]
    faulted["extra_info"]["round_page_faults"] = [0, 50258, 0, 1000]
    text = report_tables.console_summary([steady, faulted])
    note = text.split("note: ")[1]
    assert note.startswith("1 case took 1,000 or more page faults in some timed rounds")
    assert f"{faulted['name']} 2 of 4 (up to 50,258)" in note
    assert steady["name"] not in note
    # older results carry no such key: no note
    del faulted["extra_info"]["round_page_faults"]
    assert "page faults" not in report_tables.console_summary([steady, faulted])


def test_generation_columns_appear_for_generate_phase() -> None:
    entries = [
        result_entry(
            "eager-fp32", 1, 64, 0.5, "generate", "test_generate", ttft_ms=20.0, tpot_ms=5.0
        ),
        result_entry(
            "sdpa-fp32", 1, 64, 0.25, "generate", "test_generate", ttft_ms=10.0, tpot_ms=2.5
        ),
    ]
    for entry in entries:
        entry["extra_info"]["decode_tokens_per_s"] = 1000.0 / entry["extra_info"]["tpot_ms"]
    table = report_tables.build_tables(report_cases.cases_from_benchmarks(entries))[0]
    cells = dict(zip([c.header for c in table.columns], table.rows[1], strict=True))
    assert [cells[h] for h in ("TTFT ms", "TPOT ms", "decode tok/s")] == ["10.0", "2.50", "400"]
    assert cells["speedup vs eager-fp32"].startswith("2.00x [")


def test_baseline_table_reports_new_and_vanished_cases() -> None:
    base = report_cases.cases_from_benchmarks(
        [result_entry("eager-fp32", 1, 128, 0.4), result_entry("sdpa-fp32", 8, 128, 0.1)]
    )
    now = report_cases.cases_from_benchmarks(
        [result_entry("eager-fp32", 1, 128, 0.44), result_entry("sdpa-bf16", 1, 128, 0.1)]
    )
    table = report_tables.baseline_table("train", now, base)
    rows = {row[0]: row for row in table.rows}
    assert rows["eager-fp32"][3:5] == ["400", "440"]
    assert rows["eager-fp32"][5].startswith("+10.0% [")
    assert rows["sdpa-bf16"][3] == "not in baseline"
    assert "test_train[sdpa-fp32-b8-s128]" in table.note


# --------------------------------------------------------------------------------------------
# The report from the checked-in real results


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory: pytest.TempPathFactory) -> report_document.ReportFiles:
    out = tmp_path_factory.mktemp("report")
    return report_document.write_report([DATA], out, baseline_path=DATA)


@pytest.mark.slow
def test_report_has_a_row_per_benchmark(tiny_report: report_document.ReportFiles) -> None:
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


def test_report_plots_are_valid_pngs_and_embedded(tiny_report: report_document.ReportFiles) -> None:
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
        result_entry(opt, b, 64, 0.1 * b, "generate", "test_generate", ttft_ms=9.0 * b, tpot_ms=2.0)
        for opt in ("eager-fp32", "sdpa-fp32")
        for b in (1, 4)
    ]
    cases = report_cases.cases_from_benchmarks(entries)
    path = report_plots.plot_generation(cases, tmp_path / "gen.png")
    assert path is not None
    png_ok(path)
    assert report_plots.plot_generation(cases[:0], tmp_path / "none.png") is None


def test_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"benchmarks": [result_entry("eager-fp32", 1, 8, 0.1)]}))
    assert cli.main(["report", str(results), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.md").is_file()
    # Memory and throughput; no speedup heatmap without a second optimization.
    assert "2 plot(s)" in capsys.readouterr().out
    # Against the real file as baseline: every phase of it but train is missing here.
    assert cli.main(["report", str(results), "--baseline", str(DATA), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "| eager-fp32 | 1 | 8 | not in baseline |" in md
    assert "Phases only in the baseline (not run here): infer, generate, distill." in md


def test_not_a_results_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": 1}')
    assert not hasattr(report_document, "load_results")  # one loader: results.files.load_result
    assert cli.main(["report", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert cli.main(["report", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a pytest-benchmark result" in err and "no such file" in err


# --------------------------------------------------------------------------------------------
# Noise shown where a number is shown (docs/report.md, "Noise: intervals, `n.s.` and the CV ...")


def noisy(opt: str, median: float, spread: float, **kw: Any) -> dict[str, Any]:
    """A case whose 15 rounds spread by a factor exp(±spread) around ``median``."""
    entry = result_entry(opt, 1, 64, median, **kw)
    data = [median * math.exp(spread * ((i % 5) - 2) / 2) for i in range(15)]
    entry["stats"].update(
        data=data, rounds=15, stddev=statistics.stdev(data), mean=statistics.fmean(data)
    )
    return entry


def test_speedup_interval_comes_from_the_rounds() -> None:
    # Reference rounds 0.9..1.1 s, optimization rounds 0.45..0.55 s: about 2x, clearly significant.
    quick = report_cases.cases_from_benchmarks(
        [noisy("eager-fp32", 1.0, 0.2), noisy("sdpa-fp32", 0.5, 0.2)]
    )
    r = report_cases.speedup_ratios(quick)[quick[1].key]
    assert r is not None and r.low is not None and r.high is not None
    assert r.low < 2.0 < r.high and r.low > 1.5 and r.significant
    # The same medians with rounds that spread by a factor of 4.5: the interval holds 1x.
    loud = report_cases.cases_from_benchmarks(
        [noisy("eager-fp32", 1.0, 1.5), noisy("sdpa-fp32", 0.8, 1.5)]
    )
    r = report_cases.speedup_ratios(loud)[loud[1].key]
    assert r is not None and r.significant is False
    assert report_tables.fmt_ratio(r).endswith(report_tables.NOT_SIGNIFICANT)


def test_rounds_interval_needs_enough_rounds() -> None:
    assert report_cases.rounds_interval([1.0, 1.1], [1.0, 1.2]) is None
    low, high = report_cases.rounds_interval(
        [2.0, 2.1, 1.9, 2.05, 1.95], [1.0, 1.05, 0.95, 1.0, 1.02]
    )
    assert low < 2.0 < high


def test_console_summary_marks_not_significant_and_warns_on_noise() -> None:
    # Under load a 1.25x slower optimization, rounds spread by a factor of 4.5: not shown as fact.
    text = report_tables.console_summary(
        [noisy("eager-fp32", 1.0, 1.5), noisy("sdpa-fp32", 1.25, 1.5)]
    )
    sdpa = next(line for line in text.splitlines() if line.startswith("sdpa-fp32"))
    assert sdpa.endswith("n.s.") and "0.80x [" in sdpa
    assert "warning: 2 of 2 cases vary by more than 10%" in text
    assert "--gpt2-threads 1" in text
    quiet = report_tables.console_summary(
        [noisy("eager-fp32", 1.0, 0.02), noisy("sdpa-fp32", 0.5, 0.02)]
    )
    assert "warning" not in quiet
    sdpa = next(line for line in quiet.splitlines() if line.startswith("sdpa-fp32"))
    assert sdpa.endswith("2.00x [1.98, 2.02]")
    assert "1.00x (reference)" in quiet


def test_baseline_change_carries_its_interval() -> None:
    base = report_cases.cases_from_benchmarks([noisy("sdpa-fp32", 1.0, 0.02)])
    now = report_cases.cases_from_benchmarks([noisy("sdpa-fp32", 1.1, 0.02)])
    row = report_tables.baseline_table("train", now, base).rows[0]
    assert row[5].startswith("+10.0% [") and not row[5].endswith("n.s.")
    same = report_tables.baseline_table("train", base, base).rows[0]
    assert same[5].startswith("+0.0% [") and same[5].endswith("n.s.")


class Captured:
    """The figures the plot functions save, kept for inspection."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.figures: dict[str, Any] = {}
        original = report_plots._save

        def save(fig: Any, path: Path, title: str, cases: Any) -> Path:
            self.figures[path.name] = fig
            return original(fig, path, title, cases)

        monkeypatch.setattr(report_plots, "_save", save)

    def texts(self, name: str) -> list[str]:
        fig = self.figures[name]
        return [t.get_text() for ax in fig.axes for t in ax.texts]

    def title(self, name: str) -> str:
        return str(self.figures[name].get_suptitle())


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Captured:
    return Captured(monkeypatch)


def test_heatmap_cell_not_significant_is_neutral(tmp_path: Path, captured: Captured) -> None:
    entries = [
        noisy("eager-fp32", 1.0, 1.5),
        noisy("sdpa-fp32", 1.25, 1.5),
        result_entry("eager-fp32", 4, 64, 1.0),
        result_entry("sdpa-fp32", 4, 64, 0.5),
    ]
    cases = report_cases.cases_from_benchmarks(entries)
    assert report_plots.plot_speedup_heatmap("train", cases, tmp_path / "s.png") is not None
    texts = captured.texts("s.png")
    assert any(t.startswith("0.80x") and t.endswith("n.s.") for t in texts)
    assert any(t.startswith("2.00x") and "n.s." not in t for t in texts)
    fig = captured.figures["s.png"]
    colours = {tuple(round(c, 3) for c in p.get_facecolor()) for p in fig.axes[0].patches}
    neutral = tuple(round(c, 3) for c in matplotlib_rgba(report_plots.NEUTRAL))
    assert neutral in colours and len(colours) == 2  # one grey cell, one coloured


def matplotlib_rgba(colour: str) -> tuple[float, ...]:
    from matplotlib.colors import to_rgba

    return to_rgba(colour)


# --------------------------------------------------------------------------------------------
# Plots a reviewer can read (docs/report.md, "The plots")


def _title_fits(fig: Any) -> bool:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    box = fig._suptitle.get_window_extent(renderer)
    return box.x0 >= 0 and box.x1 <= fig.bbox.width


def test_every_plot_names_model_and_device_and_fits_its_title(
    tmp_path: Path, captured: Captured
) -> None:
    entries = [
        result_entry(o, b, s, 0.1 * b * s / 64)
        for o in ("eager-fp32", "sdpa-fp32")
        for b in (1, 4)
        for s in (64, 128)
    ]
    for e in entries:
        e["extra_info"]["device_name"] = "Intel(R) Xeon(R) Processor"
    report_document.write_plots(
        report_cases.cases_from_benchmarks(entries[:1]), tmp_path
    )  # one panel each
    report_document.write_plots(report_cases.cases_from_benchmarks(entries), tmp_path / "all")
    assert captured.figures
    for name, fig in captured.figures.items():
        title = captured.title(name)
        assert "tiny" in title and "cpu (Intel(R) Xeon(R) Processor)" in title.replace("\n", " ")
        assert _title_fits(fig), name


def test_memory_plot_says_when_memory_is_read(tmp_path: Path, captured: Captured) -> None:
    cases = report_cases.cases_from_benchmarks(
        [result_entry("eager-fp32", b, 64, 0.1) for b in (1, 4)]
    )
    report_plots.plot_memory("train", cases, tmp_path / "m.png")
    title = captured.title("m.png").replace("\n", " ")
    assert "during the measured rounds" not in title
    assert "settled untimed steps after the timed rounds" in title


def test_line_plots_do_not_hide_small_differences(tmp_path: Path, captured: Captured) -> None:
    entries = [result_entry(o, b, 64, 0.1) for o in ("eager-fp32", "sdpa-fp32") for b in (1, 4)]
    for e, mb in zip(entries, (1000.0, 1010.0, 1020.0, 1030.0), strict=True):
        e["extra_info"]["peak_memory_mb"] = mb  # differences of 1-3%
    report_plots.plot_memory(
        "train", report_cases.cases_from_benchmarks(entries), tmp_path / "m.png"
    )
    bottom, top = captured.figures["m.png"].axes[0].get_ylim()
    assert bottom > 900 and top < 1100


def test_generate_heatmap_axis_is_the_prompt_and_n_is_explained(
    tmp_path: Path, captured: Captured
) -> None:
    gen = {"phase": "generate", "function": "test_generate", "tail": "-n32", "new_tokens": 32}
    entries = [
        result_entry(o, b, s, 0.1 * b, **gen)
        for o in ("eager-fp32", "sdpa-fp32")
        for b in (1, 4)
        for s in (32, 64)
    ]
    report_plots.plot_speedup_heatmap(
        "generate", report_cases.cases_from_benchmarks(entries), tmp_path / "g.png"
    )
    ax = captured.figures["g.png"].axes[0]
    assert ax.get_xlabel() == "prompt length (tokens)"
    assert "32 new tokens" in ax.get_title() and "n32" not in ax.get_title()


def test_single_shape_speedup_is_a_bar_chart(tmp_path: Path, captured: Captured) -> None:
    cases = report_cases.cases_from_benchmarks(
        [
            result_entry(o, 1, 32, m, "distill", "test_distill")
            for o, m in (("eager-fp32", 1.0), ("sdpa-fp32", 0.5))
        ]
    )
    assert report_plots.plot_speedup_heatmap("distill", cases, tmp_path / "d.png") is not None
    ax = captured.figures["d.png"].axes[0]
    assert not ax.images  # no 1x1 heatmap
    assert len(ax.patches) == 1 and ax.containers  # one bar, with its interval
    assert "2.00x" in " ".join(t.get_text() for t in ax.texts)


def test_generation_bars_have_error_bars(tmp_path: Path, captured: Captured) -> None:
    entries = [
        result_entry(
            o,
            1,
            64,
            0.1,
            "generate",
            "test_generate",
            ttft_ms=9.0,
            ttft_ms_std=1.5,
            tpot_ms=2.0,
            tpot_ms_std=0.2,
        )
        for o in ("eager-fp32", "sdpa-fp32")
    ]
    report_plots.plot_generation(report_cases.cases_from_benchmarks(entries), tmp_path / "gen.png")
    for ax in captured.figures["gen.png"].axes:
        bars = [c for c in ax.containers if hasattr(c, "errorbar")]
        assert bars and all(c.errorbar is not None for c in bars)
        (segments,) = bars[0].errorbar.lines[2]
        assert segments.get_segments()[0][1][1] > segments.get_segments()[0][0][1]


def test_footprint_memory_is_plotted_when_present(tmp_path: Path) -> None:
    entries = [result_entry("eager-fp32", b, 64, 0.1, footprint_memory_mb=50.0 * b) for b in (1, 4)]
    plots = report_document.write_plots(report_cases.cases_from_benchmarks(entries), tmp_path)
    assert "footprint_train.png" in {p.path.name for p in plots["train"]}
    png_ok(tmp_path / "footprint_train.png")
    assert "footprint_train.png" not in {
        p.path.name
        for p in report_document.write_plots(
            report_cases.cases_from_benchmarks([result_entry("eager-fp32", 1, 64, 0.1)]),
            tmp_path / "x",
        )["train"]
    }


def test_baseline_from_another_machine_gets_a_note(tmp_path: Path) -> None:
    def doc(cpu: str, threads: int) -> dict[str, Any]:
        gpt2 = {"device": "cpu", "device_name": cpu, "cpu_model": cpu, "cpu_threads": threads}
        return {
            "machine_info": {"gpt2": gpt2},
            "benchmarks": [result_entry("eager-fp32", 1, 8, 0.1)],
        }

    here = _write_json(tmp_path / "now.json", doc("AMD EPYC", 2))
    there = _write_json(tmp_path / "base.json", doc("Intel Xeon", 1))
    files = report_document.write_report([here], tmp_path / "r", baseline_path=there)
    md = files.report.read_text()
    assert "different machine" in md and "device_name Intel Xeon -> AMD EPYC" in md
    assert md.count("Intel Xeon -> AMD EPYC") == 1  # device_name repeats the CPU model on CPU
    assert "cpu_threads 1 -> 2" in md
    files = report_document.write_report([here], tmp_path / "r", baseline_path=here)
    assert "different machine" not in files.report.read_text()


def _write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Bad input, no torch, repository hygiene (docs/report.md, "`gpt2-bench report`")


def test_truncated_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = tmp_path / "cut.json"
    cut.write_text(DATA.read_text()[:500])
    assert cli.main(["report", str(cut), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpt2-bench report: error:") and "not valid JSON" in err
    assert "truncated?" in err and len(err.strip().splitlines()) == 1
    assert "JSONDecodeError" not in err


@pytest.mark.parametrize("command", ["merge", "compare", "baseline", "report"])
def test_result_commands_do_not_import_torch(tmp_path: Path, command: str) -> None:
    data = str(DATA)
    argv = {
        "merge": ["merge", "-o", str(tmp_path / "m.json"), data],
        "compare": ["compare", data, data],
        "baseline": ["baseline", data, str(tmp_path / "b.json")],
        "report": ["report", data, "--out", str(tmp_path / "r")],
    }[command]
    code = (
        "import sys\nfrom gpt2_fixtures import cli\n"
        f"status = cli.main({argv!r})\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', status)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.stdout.strip().splitlines()[-1].startswith("NO-TORCH"), proc.stdout + proc.stderr


def test_run_outputs_are_ignored_by_git() -> None:
    root = Path(__file__).parent.parent
    paths = ["results.json", ".benchmarks/Linux/0001.json", "histogram.svg", "report/h.svg"]
    proc = subprocess.run(
        ["git", "check-ignore", *paths], cwd=root, capture_output=True, text=True, check=False
    )
    assert proc.stdout.split() == paths


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import gpt2_fixtures

    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"gpt2-bench {gpt2_fixtures.__version__}"


def test_without_rounds_the_interval_comes_from_mean_std_and_rounds() -> None:
    """A summary without stats.data (written before 0.3.0): still an interval."""
    entries = [result_entry("eager-fp32", 1, 64, 1.0), result_entry("sdpa-fp32", 1, 64, 0.5)]
    for entry in entries:
        del entry["stats"]["data"]
    cases = report_cases.cases_from_benchmarks(entries)
    r = report_cases.speedup_ratios(cases)[cases[1].key]
    assert r is not None and r.low is not None and r.high is not None
    assert r.low < 2.0 < r.high and r.significant


def test_throughput_title_says_what_the_figure_is_from(tmp_path: Path, captured: Captured) -> None:
    entries = [result_entry("eager-fp32", 1, s, 0.1) for s in (64, 128)]
    report_plots.plot_throughput(
        "train", report_cases.cases_from_benchmarks(entries), tmp_path / "a.png"
    )
    assert "per-round rates" in captured.title("a.png")
    for e in entries:
        e["extra_info"]["tokens_per_s_mean"] = 1.0  # written by 0.3.0 beside the median figure
    report_plots.plot_throughput(
        "train", report_cases.cases_from_benchmarks(entries), tmp_path / "b.png"
    )
    assert "the median round time" in captured.title("b.png")


def test_the_report_and_the_gate_show_one_interval() -> None:
    # one implementation: a change's interval in the report is the gate's, to the last digit
    from gpt2_fixtures.results.gate.stats import rounds_change_ci
    from gpt2_fixtures.results.report.cases import rounds_interval

    new = [0.0105 + 0.0002 * (i % 5) for i in range(20)]
    old = [0.0100 + 0.0003 * (i % 4) for i in range(20)]
    low, high = rounds_change_ci(new, old)
    assert low is not None and high is not None
    assert rounds_interval(new, old) == (1 + low, 1 + high)
