"""End-to-end tests of the pytest gate options (pytester).

The benchmarks here time a no-op and record a chosen `peak_memory_mb`, so every verdict is
deterministic: memory decides, and the baseline's round times are set far above anything a no-op
takes (time can only improve).
"""

from __future__ import annotations

import json
from pathlib import Path

# Imported once here: pytester's in-process runs drop the modules they import, and some extension
# modules refuse a second import (pyarrow types under datasets, numpy's fft under scipy.stats).
import datasets  # noqa: F401
import pytest
import scipy.stats  # noqa: F401

pytest_plugins = ["pytester"]

BENCH = """
import pytest

{marker}
def test_noop(benchmark):
    benchmark.extra_info.update(peak_memory_mb={mem}, memory_kind="cpu_rss")
    benchmark.pedantic(lambda: None, rounds=5, iterations=1)
"""


def write_bench(pytester: pytest.Pytester, mem: float, marker: str = "") -> None:
    pytester.makepyfile(test_bench=BENCH.format(mem=mem, marker=marker))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "gpt2_fixtures.plugin", "-p", "no:cacheprovider", *args)


@pytest.fixture
def baseline(pytester: pytest.Pytester) -> Path:
    """A baseline saved by the plugin itself, its round times then set to 1 s."""
    write_bench(pytester, mem=400.0)
    result = run(pytester, "--gpt2-save-baseline", "base.json")
    assert result.ret == pytest.ExitCode.OK
    path = pytester.path / "base.json"
    doc = json.loads(path.read_text())
    assert doc["machine_info"]["gpt2"]["device"] == "cpu"
    (bench,) = doc["benchmarks"]
    assert len(bench["stats"]["data"]) == 5
    bench["stats"].update(data=[1.0] * 5, median=1.0, mean=1.0, stddev=0.0)
    path.write_text(json.dumps(doc))
    return path


def test_same_memory_passes_and_writes_reports(pytester: pytest.Pytester, baseline: Path) -> None:
    result = run(
        pytester,
        f"--gpt2-baseline={baseline}",
        "--gpt2-gate-markdown=summary.md",
        "--gpt2-gate-json=verdict.json",
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*gpt2 regression gate*", "*gpt2 gate: PASS*"])
    verdict = json.loads((pytester.path / "verdict.json").read_text())
    assert verdict["verdict"] == "pass"
    assert {(r["metric"], r["verdict"]) for r in verdict["rows"]} == {
        ("time", "improved"),
        ("peak_memory_mb", "pass"),
    }
    assert "| test_noop | peak_memory_mb |" in (pytester.path / "summary.md").read_text()


def test_memory_regression_fails_the_session(pytester: pytest.Pytester, baseline: Path) -> None:
    # +50%: a CPU's resident peak from a one-process baseline is a regression beyond 40%
    write_bench(pytester, mem=600.0)
    result = run(pytester, f"--gpt2-baseline={baseline}", "--gpt2-gate-json=verdict.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_noop*peak_memory_mb*+50.0%*REGRESSION*", "*gate: FAIL*"])
    assert json.loads((pytester.path / "verdict.json").read_text())["exit_code"] == 1


def test_threshold_option_and_marker_override(pytester: pytest.Pytester, baseline: Path) -> None:
    # +55%: a regression at the default 10%, a pass at a 60% given by option or marker
    write_bench(pytester, mem=620.0)
    loose = run(pytester, f"--gpt2-baseline={baseline}", "--gpt2-threshold=peak_memory_mb=60%")
    assert loose.ret == pytest.ExitCode.OK
    assert run(pytester, f"--gpt2-baseline={baseline}").ret == pytest.ExitCode.TESTS_FAILED
    marker = '@pytest.mark.gpt2_gate(peak_memory_mb="60%")'
    write_bench(pytester, mem=620.0, marker=marker)
    assert run(pytester, f"--gpt2-baseline={baseline}").ret == pytest.ExitCode.OK
    write_bench(pytester, mem=420.0, marker='@pytest.mark.gpt2_gate(peak_memory_mb="10")')
    bad = run(pytester, f"--gpt2-baseline={baseline}")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*test_noop*gpt2_gate marker*needs a % sign*"])


def test_bad_alpha_stops_before_running(pytester: pytest.Pytester, baseline: Path) -> None:
    write_bench(pytester, mem=400.0)
    result = run(pytester, f"--gpt2-baseline={baseline}", "--gpt2-alpha=5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gpt2-alpha: '5' must be in (0, 1)*"])
    result.stdout.no_fnmatch_line("*passed*")


def test_unusable_baseline_stops_before_running(pytester: pytest.Pytester) -> None:
    write_bench(pytester, mem=400.0)
    (pytester.path / "bad.json").write_text('{"benchmarks": [')
    result = run(pytester, "--gpt2-baseline=bad.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gpt2-baseline: bad.json: not valid JSON*"])
    result.stdout.no_fnmatch_line("*passed*")


def test_baseline_from_another_device_is_refused(pytester: pytest.Pytester, baseline: Path) -> None:
    doc = json.loads(baseline.read_text())
    doc["machine_info"]["gpt2"]["device_name"] = "NVIDIA H200"
    baseline.write_text(json.dumps(doc))
    refused = run(pytester, f"--gpt2-baseline={baseline}")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*device differs*NVIDIA H200*--gpt2-allow-device-mismatch*"])
    allowed = run(pytester, f"--gpt2-baseline={baseline}", "--gpt2-allow-device-mismatch")
    # Across devices time is judged on the control ratio only; test_noop has no control, so the
    # run is not fully judged (exit 3), never a silent PASS.
    assert allowed.ret == 3
    allowed.stdout.fnmatch_lines(["*device differs*compared anyway*", "*NOT FULLY JUDGED*"])
    lenient = run(
        pytester,
        f"--gpt2-baseline={baseline}",
        "--gpt2-allow-device-mismatch",
        "--gpt2-inconclusive=pass",
    )
    assert lenient.ret == pytest.ExitCode.OK


def test_pytest_benchmark_compare_keeps_working_beside_the_gate(
    pytester: pytest.Pytester, baseline: Path
) -> None:
    assert run(pytester, "--benchmark-autosave", "--benchmark-storage=store").ret == 0
    (saved,) = (pytester.path / "store").rglob("*.json")
    doc = json.loads(saved.read_text())
    doc["benchmarks"][0]["stats"]["mean"] = 0.0  # anything is slower than this
    saved.write_text(json.dumps(doc))
    storage = ["--benchmark-storage=store", "--benchmark-compare"]
    lenient = run(
        pytester, *storage, "--benchmark-compare-fail=min:100", f"--gpt2-baseline={baseline}"
    )
    assert lenient.ret == pytest.ExitCode.OK
    lenient.stdout.fnmatch_lines(["*test_noop (NOW)*", "*gpt2 gate: PASS*"])  # both tables
    strict = run(
        pytester, *storage, "--benchmark-compare-fail=mean:0.0", f"--gpt2-baseline={baseline}"
    )
    assert strict.ret != pytest.ExitCode.OK
    assert "Performance has regressed" in strict.stdout.str() + strict.stderr.str()


def test_no_benchmark_results_nothing_gated(pytester: pytest.Pytester, baseline: Path) -> None:
    result = run(pytester, f"--gpt2-baseline={baseline}", "--benchmark-skip")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*no benchmark results in this run; nothing gated*"])


def test_autosave_keeps_the_per_round_samples(pytester: pytest.Pytester) -> None:
    # without --benchmark-save-data pytest-benchmark would store means only, and the gate could
    # not judge rounds: the plugin always keeps them
    write_bench(pytester, mem=400.0)
    assert run(pytester, "--benchmark-autosave", "--benchmark-storage=store").ret == 0
    (saved,) = (pytester.path / "store").rglob("*.json")
    (bench,) = json.loads(saved.read_text())["benchmarks"]
    assert len(bench["stats"]["data"]) == 5
