"""The Weights & Biases sink: what it logs, that it runs offline, and that it never breaks a run.

Everything that starts wandb runs in a subprocess: wandb keeps process-wide state (its settings
singleton reads WANDB_* once), and the tests must also see whether wandb was imported at all.
All wandb files go to tmp_path (WANDB_DIR, WANDB_DATA_DIR, WANDB_CACHE_DIR, WANDB_CONFIG_DIR).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2_fixtures.results import tracking
from gpt2_fixtures.results.report import cases as report_cases

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "results_tiny.json"
FAKE_KEY = "k" * 40  # looks like an API key; must never end up in a file

BENCH = """
def test_noop(benchmark):
    benchmark.extra_info.update(
        phase="train", optimization="eager-fp32", batch_size=1, seq_len=8, memory_kind="cpu_rss"
    )
    benchmark.pedantic(lambda: None, rounds=3, iterations=1)
"""
RECORD_WANDB_IMPORT = """
import pathlib, sys
{block}
def pytest_unconfigure(config):
    imported = sys.modules.get("wandb") is not None
    pathlib.Path("wandb_imported.txt").write_text(str(imported))
"""


def wandb_env(tmp_path: Path, mode: str | None = "offline") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        WANDB_DIR=str(tmp_path),
        WANDB_DATA_DIR=str(tmp_path / "data"),
        WANDB_CACHE_DIR=str(tmp_path / "cache"),
        WANDB_CONFIG_DIR=str(tmp_path / "config"),
        WANDB_API_KEY=FAKE_KEY,
    )
    if mode:
        env["WANDB_MODE"] = mode
    return env


def only_run_dir(root: Path) -> Path:
    (run_dir,) = (root / "wandb").glob("offline-run-*")
    return run_dir


def logged_table(run_dir: Path) -> dict:
    (table,) = (run_dir / "files" / "media" / "table").glob("cases_*.table.json")
    return json.loads(table.read_text())


# --------------------------------------------------------------------------------------------
# What is logged (no wandb needed)


def test_table_config_and_summary_from_results() -> None:
    results = json.loads(DATA.read_text())
    cases = report_cases.cases_from_benchmarks(results["benchmarks"])
    rows = tracking.table_rows(cases)
    assert len(rows) == len(results["benchmarks"])
    assert all(len(row) == len(tracking.TABLE_COLUMNS) for row in rows)
    by_name = {row[0]: dict(zip(tracking.TABLE_COLUMNS, row, strict=True)) for row in rows}
    first = results["benchmarks"][0]
    assert by_name[first["name"]]["median_ms"] == pytest.approx(first["stats"]["median"] * 1e3)
    assert by_name[first["name"]]["tokens_per_s"] == first["extra_info"]["tokens_per_s"]

    config = tracking.run_config(results, cases)
    assert config["grid"]["cases"] == len(cases)
    assert "eager-fp32" in config["grid"]["optimizations"]
    assert config["versions"]["torch"] == results["machine_info"]["gpt2"]["torch"]
    assert config["commit"]["id"] == results["commit_info"].get("id")

    summary = tracking.summary_metrics(cases)
    name = first["name"].partition("[")[2].rstrip("]")
    assert summary[f"{first['extra_info']['phase']}/{name}/median_ms"] == pytest.approx(
        first["stats"]["median"] * 1e3
    )


def test_metric_columns_come_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A judged metric is one row in results/metrics.py, not a copy here."""
    from gpt2_fixtures.results.metrics import EXTRA_METRICS

    keys = [m.key for m in EXTRA_METRICS]
    assert [c for c in tracking.TABLE_COLUMNS if c in keys] == keys
    assert "peak_reserved_mb" in tracking.TABLE_COLUMNS  # was missing from the old copy
    results = json.loads(DATA.read_text())
    cases = report_cases.cases_from_benchmarks(results["benchmarks"])
    row = dict(zip(tracking.TABLE_COLUMNS, tracking.table_rows(cases)[4], strict=True))
    low, high = row["speedup_vs_eager-fp32_low"], row["speedup_vs_eager-fp32_high"]
    assert low is not None and high is not None
    assert low <= row["speedup_vs_eager-fp32"] <= high  # the speedup with its interval


def test_disabled_mode_logs_nothing_without_importing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    outcome = tracking.log_results({"benchmarks": []}, tracking.WandbOptions())
    assert outcome.ok and "disabled" in outcome.message and outcome.run_dir is None


# --------------------------------------------------------------------------------------------
# wandb itself, offline, in a subprocess

LOG_SCRIPT = """
import json, sys
from gpt2_fixtures.results import tracking
results = json.load(open(sys.argv[1]))
outcome = tracking.log_results(results, tracking.WandbOptions(run_name="unit"))
print(json.dumps({"ok": outcome.ok, "message": outcome.message, "run_dir": str(outcome.run_dir)}))
"""


def test_offline_run_holds_table_plots_and_results(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", LOG_SCRIPT, str(DATA)],
        env=wandb_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    run_dir = only_run_dir(tmp_path)
    assert outcome["ok"] and outcome["run_dir"] == str(run_dir)
    assert f"wandb sync {run_dir}" in outcome["message"]

    results = json.loads(DATA.read_text())
    table = logged_table(run_dir)
    assert table["columns"] == list(tracking.TABLE_COLUMNS)
    assert sorted(row[0] for row in table["data"]) == sorted(
        b["name"] for b in results["benchmarks"]
    )
    saved = json.loads((run_dir / "files" / tracking.RESULTS_FILE).read_text())
    assert saved == results
    plots = list((run_dir / "files" / "media" / "images").rglob("*.png"))
    assert any(p.name.startswith("speedup_") for p in plots)
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path


def test_online_without_key_falls_back_to_offline(tmp_path: Path) -> None:
    env = wandb_env(tmp_path, mode=None)
    del env["WANDB_API_KEY"]
    env["NETRC"] = str(tmp_path / "no-netrc")
    one_case = json.loads(DATA.read_text())
    one_case["benchmarks"] = one_case["benchmarks"][:1]  # fewer plots: this test is about login
    (tmp_path / "one.json").write_text(json.dumps(one_case))
    proc = subprocess.run(
        [sys.executable, "-c", LOG_SCRIPT, str(tmp_path / "one.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not outcome["ok"]
    assert outcome["message"].startswith("no W&B API key found")
    assert logged_table(only_run_dir(tmp_path))["data"]


# --------------------------------------------------------------------------------------------
# The plugin: --gpt2-wandb, end to end (pytester, subprocess)


def run_plugin(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str, block: str = ""
) -> pytest.RunResult:
    for key, value in wandb_env(pytester.path).items():
        monkeypatch.setenv(key, value)
    pytester.makepyfile(test_bench=BENCH)
    pytester.makeconftest(RECORD_WANDB_IMPORT.format(block=block))
    return pytester.runpytest_subprocess(
        "-p", "gpt2_fixtures.plugin", "-p", "no:cacheprovider", *args, timeout=300
    )


def test_without_flag_wandb_is_never_imported(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_plugin(pytester, monkeypatch)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*gpt2-bench summary*", "eager-fp32 * 1 * 8 *1.00x (reference)"])
    assert (pytester.path / "wandb_imported.txt").read_text() == "False"
    assert not (pytester.path / "wandb").exists()


def test_flag_with_wandb_missing_warns_once_and_goes_on(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = 'sys.modules["wandb"] = None  # makes `import wandb` raise ImportError'
    result = run_plugin(pytester, monkeypatch, "--gpt2-wandb", block=block)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    assert result.stdout.str().count("wandb is not installed") == 1
    assert "gpt2-bench summary" in result.stdout.str()


def test_flag_offline_writes_one_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_plugin(pytester, monkeypatch, "--gpt2-wandb", "--gpt2-wandb-run-name=pytester-run")
    assert result.ret == pytest.ExitCode.OK
    run_dir = only_run_dir(pytester.path)
    result.stdout.fnmatch_lines([f"gpt2-bench wandb: wrote an offline run in {run_dir}*"])
    (row,) = logged_table(run_dir)["data"]
    assert row[:3] == ["test_noop", "train", "eager-fp32"]
    saved = json.loads((run_dir / "files" / tracking.RESULTS_FILE).read_text())
    assert saved["commit_info"] is not None and "gpt2" in saved["machine_info"]
    assert (pytester.path / "wandb_imported.txt").read_text() == "True"
