"""`gpt2-bench history`: series built from real result files with steps injected.

The fast tests start from baselines/cpu-tiny.json (a real default-grid result of this project:
three processes of 20 rounds pooled, 60 rounds per case); the slow one runs the tiny grid
itself. Each commit of a synthetic series is a copy of the real file whose per-round times (and
the control's per-round times) are scaled: by the injected effect, by a seeded per-commit
"machine" factor shared by step and control, and by seeded per-round jitter, so every series is
deterministic.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import statistics
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpt2_fixtures import cli

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "baselines" / "cpu-tiny.json"
TARGET = "test_infer[eager-fp32-b1-s64]"
KEEP = (TARGET, "test_infer[sdpa-fp32-b1-s64]", "test_train[eager-fp32-b1-s64]")
Effect = Callable[[str, int], float]


def _one(name: str, i: int) -> float:
    return 1.0


def sha(i: int, salt: str = "") -> str:
    return hashlib.sha1(f"commit {i}{salt}".encode()).hexdigest()


def _restat(bench: dict[str, Any]) -> None:
    data, stats = bench["stats"]["data"], bench["stats"]
    stats.update(
        min=min(data),
        max=max(data),
        mean=statistics.fmean(data),
        median=statistics.median(data),
        stddev=statistics.stdev(data),
        rounds=len(data),
    )


def _scale(
    bench: dict[str, Any],
    f: float,
    g: float,
    m: float,
    rng: np.random.Generator,
    redraw: bool = False,
) -> None:
    info = bench["extra_info"]
    k = len(bench["stats"]["data"])
    if redraw:  # keep the file's medians, draw the spread: independent of how busy it ran
        for values in (bench["stats"]["data"], info["control_round_s"]):
            values[:] = [statistics.median(values)] * k
    load = np.exp(rng.normal(0, 0.02, k))  # a busy round slows step and control alike
    jitter_t, jitter_c = np.exp(rng.normal(0, 0.02, (2, k)))
    bench["stats"]["data"] = [
        float(x * f * machine)
        for x, machine in zip(bench["stats"]["data"], load * jitter_t * m, strict=True)
    ]
    info["control_round_s"] = [
        float(x * g * machine)
        for x, machine in zip(info["control_round_s"], load * jitter_c * m, strict=True)
    ]
    for key in ("samples_per_s", "tokens_per_s"):
        info[key] = info[key] / (f * m)
    _restat(bench)


def make_series(
    real: dict[str, Any],
    n: int = 15,
    time: Effect = _one,
    control: Effect = _one,
    memory: Effect = _one,
    seed: int = 0,
    salt: str = "",
    redraw: bool = False,
) -> list[dict[str, Any]]:
    """n commits, one hour apart; effects are factors by (benchmark name, commit index)."""
    rng = np.random.default_rng(seed)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    docs = []
    for i in range(n):
        doc = copy.deepcopy(real)
        when = (t0 + timedelta(hours=i)).isoformat()
        doc["commit_info"] = {**real["commit_info"], "id": sha(i, salt), "time": when}
        doc["commit_info"]["dirty"] = False
        doc["datetime"] = (t0 + timedelta(hours=i, minutes=30)).isoformat()
        for bench in doc["benchmarks"]:
            name = bench["name"]
            m = math.exp(rng.normal(0, 0.03))  # this process's machine speed
            _scale(bench, time(name, i), control(name, i), m, rng, redraw)
            info = bench["extra_info"]
            info["peak_memory_mb"] = info["peak_memory_mb"] * memory(name, i) + rng.normal(0, 0.05)
        docs.append(doc)
    return docs


def write(docs: list[dict[str, Any]], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(docs):
        # pytest-benchmark storage names; the order comes from commit_info, not the names
        (folder / f"{len(docs) - i:04d}_run.json").write_text(json.dumps(doc))
    return folder


def run_history(tmp_path: Path, *paths: Path, extra: tuple[str, ...] = ()) -> tuple[int, dict]:
    out, js = tmp_path / "out", tmp_path / "history.json"
    status = cli.main(["history", *map(str, paths), "--out", str(out), "--json", str(js), *extra])
    return status, json.loads(js.read_text())


@pytest.fixture(scope="module")
def real() -> dict[str, Any]:
    doc = json.loads(BASELINE.read_text())
    doc["benchmarks"] = [b for b in doc["benchmarks"] if b["name"] in KEEP]
    assert len(doc["benchmarks"]) == len(KEEP)
    return doc


@pytest.fixture(scope="session")
def tiny_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of the tiny inference grid, as the plugin writes it today."""
    out = tmp_path_factory.mktemp("tiny") / "tiny.json"
    args = ["-m", "inference", "--gpt2-rounds", "5", "--gpt2-batch-sizes", "1"]
    args += ["--gpt2-seq-lens", "64", "-p", "no:cacheprovider", "-q", f"--benchmark-json={out}"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


def step_at(k: int, factor: float, name: str = TARGET) -> Effect:
    return lambda n, i: factor if (n == name and i >= k) else 1.0


# --- steps ----------------------------------------------------------------------------------------


def test_a_30_percent_step_is_found_at_its_commit_range(tmp_path, real, capsys):
    folder = write(make_series(real, time=step_at(7, 1.3)), tmp_path / "runs")
    status, hist = run_history(tmp_path, folder)
    assert status == 1  # the newest commits still carry it
    [change] = hist["change_points"]
    assert (change["benchmark"], change["metric"]) == (TARGET, "time/control")
    assert (change["last_good"], change["first_bad"]) == (sha(6), sha(7))  # commit 8 of 15
    assert change["direction"] == "regression" and change["kind"] == "step"
    assert change["still_in_place"]
    assert 0.2 < change["change"] < 0.4
    assert change["change_low"] < 0.3 < change["change_high"] and change["change_low"] > 0.1
    assert change["p_value"] < 0.01 / len(KEEP)
    md = (tmp_path / "out" / "history.md").read_text()
    assert f"`{sha(7)[:7]}` | `{sha(6)[:7]}`" in md and "still in place" in md
    [png] = (tmp_path / "out").glob("*.png")
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert "REGRESSION still in place: " + TARGET in capsys.readouterr().out


def test_an_improvement_is_reported_as_one_and_does_not_fail(tmp_path, real):
    folder = write(make_series(real, time=step_at(9, 0.7), seed=3), tmp_path / "runs")
    status, hist = run_history(tmp_path, folder)
    assert status == 0
    [change] = hist["change_points"]
    assert change["direction"] == "improvement" and change["first_bad"] == sha(9)
    assert change["change"] < -0.2 and not change["still_in_place"]


@pytest.mark.parametrize(("factor", "direction"), [(1.3, "regression"), (0.7, "improvement")])
def test_throughput_directions_are_the_metrics_own(tmp_path, real, factor, direction):
    # slower steps: fewer tokens/s, a regression with a negative change; faster: an improvement
    folder = write(make_series(real, time=step_at(7, factor), seed=8), tmp_path / "runs")
    status, hist = run_history(tmp_path, folder, extra=("--metric", "tokens_per_s"))
    [change] = hist["change_points"]
    assert (change["metric"], change["direction"]) == ("tokens_per_s", direction)
    assert (change["change"] < 0) == (direction == "regression")
    assert status == (1 if direction == "regression" else 0)


def test_a_fixed_regression_is_two_changes_and_not_in_place(tmp_path, real):
    effect: Effect = lambda n, i: 1.3 if (n == TARGET and 4 <= i < 10) else 1.0  # noqa: E731
    folder = write(make_series(real, time=effect, seed=5), tmp_path / "runs")
    status, hist = run_history(tmp_path, folder)
    changes = sorted(hist["change_points"], key=lambda c: c["index"])
    assert [(c["first_bad"], c["direction"]) for c in changes] == [
        (sha(4), "regression"),
        (sha(10), "improvement"),
    ]
    assert status == 0 and not hist["still_in_place"]


def test_a_memory_step(tmp_path, real):
    # +50%: a CPU's resident peak without a calibrated spread is a regression beyond 40%
    # (one process a side; docs/gate.md, "Memory")
    folder = write(make_series(real, memory=step_at(7, 1.5), seed=1), tmp_path / "runs")
    status, hist = run_history(tmp_path, folder)  # peak_memory_mb is a default metric
    assert status == 1
    [change] = hist["change_points"]
    assert (change["metric"], change["benchmark"]) == ("peak_memory_mb", TARGET)
    assert (change["last_good"], change["first_bad"]) == (sha(6), sha(7))
    assert change["direction"] == "regression" and change["unit"] == "MB"
    assert change["change"] == pytest.approx(0.5, abs=0.005)


def test_a_slow_drift_is_a_gradual_regression(tmp_path, real):
    drift: Effect = lambda n, i: 1.0 + 0.02 * i if n == TARGET else 1.0  # noqa: E731
    folder = write(make_series(real, time=drift, seed=2), tmp_path / "runs")
    status, hist = run_history(tmp_path, folder)
    assert status == 1
    assert hist["change_points"], "a 28% creep over 15 commits went unnoticed"
    for change in hist["change_points"]:
        assert change["benchmark"] == TARGET and change["direction"] == "regression"
        assert change["kind"] == "gradual"  # no two neighbouring commits hold the change


def test_a_step_in_series_made_from_a_fresh_tiny_grid_run(tmp_path, tiny_result):
    names = [b["name"] for b in tiny_result["benchmarks"]]
    target = names[0]
    docs = make_series(tiny_result, time=step_at(7, 1.3, target), seed=4, redraw=True)
    status, hist = run_history(tmp_path, write(docs, tmp_path / "runs"))
    [change] = hist["change_points"]
    assert (change["benchmark"], change["metric"]) == (target, "time/control")
    assert (change["last_good"], change["first_bad"], change["kind"]) == (sha(6), sha(7), "step")
    assert status == 1 and hist["series"] == 2 * len(names)
    [png] = (tmp_path / "out").glob("*.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


# --- nothing to report ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_flat_noisy_series_with_one_burst_has_no_change_point(tmp_path, real, seed):
    burst: Effect = lambda n, i: 1.6 if (n == TARGET and i == 6) else 1.0  # noqa: E731
    folder = write(make_series(real, time=burst, seed=seed), tmp_path / "runs")
    status, hist = run_history(tmp_path, folder)
    assert (status, hist["change_points"]) == (0, [])
    assert hist["series"] == 2 * len(KEEP)  # time/control and peak_memory_mb, every benchmark
    assert not list((tmp_path / "out").glob("*.png"))
    assert "No change points" in (tmp_path / "out" / "history.md").read_text()


def test_a_slower_machine_moves_time_but_not_time_over_control(tmp_path, real):
    # step and control 30% slower from commit 7: the runner, not the code; raw time is drift
    both = step_at(7, 1.3)
    folder = write(make_series(real, time=both, control=both), tmp_path / "runs")
    status, hist = run_history(tmp_path, folder, extra=("--metric", "time/control"))
    assert (status, hist["change_points"]) == (0, [])
    status, hist = run_history(tmp_path, folder, extra=("--metric", "time"))
    assert (status, hist["change_points"]) == (0, [])  # the gate calls raw time drift


def test_ratios_to_another_control_kind_are_not_one_series(tmp_path, real):
    # the first 7 commits predate the twin control: their ratios are to the matmul loop, at
    # another level entirely; the series follows the newest kind and finds the step at 10
    older: Effect = lambda n, i: 1.0 / 1.5 if i < 7 else 1.0  # noqa: E731
    docs = make_series(real, control=older, time=step_at(10, 1.3), seed=6)
    for doc in docs[:7]:
        for bench in doc["benchmarks"]:
            bench["extra_info"]["control_kind"] = "matmul"
    status, hist = run_history(tmp_path, write(docs, tmp_path / "runs"))
    [change] = hist["change_points"]
    assert (change["metric"], change["first_bad"]) == ("time/control", sha(10))
    assert status == 1


# --- devices, order, pooling, --since -------------------------------------------------------------


def _on_device(docs: list[dict[str, Any]], name: str, threads: int) -> list[dict[str, Any]]:
    for doc in docs:
        doc["machine_info"]["gpt2"].update(device_name=name, cpu_model=name, cpu_threads=threads)
    return docs


def test_devices_are_never_mixed_in_one_series(tmp_path, real):
    fast = _on_device(make_series(real, n=8, seed=1), "cpu A", 4)
    # the other machine is 2x slower throughout and regresses on its own from its commit 4
    slow_fx: Effect = lambda n, i: 2.0 * (1.3 if (n == TARGET and i >= 4) else 1.0)  # noqa: E731
    slow = _on_device(make_series(real, n=8, time=slow_fx, seed=2, salt="b"), "cpu B", 8)
    # interleaved in time: mixed, the 2x between machines would look like steps everywhere
    for i, doc in enumerate(slow):
        when = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(hours=i, minutes=20)
        doc["commit_info"]["time"] = when.isoformat()
    folder = write(fast, tmp_path / "a")
    write(slow, tmp_path / "b")
    status, hist = run_history(tmp_path, folder, tmp_path / "b")
    assert [d["device"] for d in hist["devices"]] == [
        "cpu cpu A (4 threads)",
        "cpu cpu B (8 threads)",
    ]
    [change] = hist["change_points"]
    assert change["device"] == "cpu cpu B (8 threads)" and change["first_bad"] == sha(4, "b")
    assert status == 1


def test_order_comes_from_commit_time_then_datetime(tmp_path, real):
    docs = make_series(real, time=step_at(7, 1.3))
    for doc in docs:
        del doc["commit_info"]  # no commit: the run's datetime orders, and labels, the points
    write(list(reversed(docs)), tmp_path / "runs")
    status, hist = run_history(tmp_path, tmp_path / "runs")
    [change] = hist["change_points"]
    assert change["first_bad"] == datetime(2026, 11, 1, 7, 30, tzinfo=UTC).strftime(
        "%Y-%m-%d %H:%M"
    )
    assert status == 1


def test_reruns_of_a_commit_are_pooled_into_one_point(tmp_path, real):
    docs = make_series(real, time=step_at(7, 1.3))
    reruns = make_series(real, time=step_at(7, 1.3), seed=9)
    write(docs, tmp_path / "a")
    write(reruns, tmp_path / "b")
    status, hist = run_history(tmp_path, tmp_path / "a", tmp_path / "b")
    assert status == 1
    assert hist["devices"][0]["files"] == 30 and len(hist["devices"][0]["commits"]) == 15
    [change] = hist["change_points"]
    assert (change["last_good"], change["first_bad"]) == (sha(6), sha(7))


def test_since_keeps_only_later_commits(tmp_path, real):
    folder = write(make_series(real, n=20, time=step_at(4, 1.3)), tmp_path / "runs")
    status, hist = run_history(tmp_path, folder, extra=("--since", sha(8)[:10]))
    assert (status, hist["change_points"]) == (0, [])
    assert len(hist["devices"][0]["commits"]) == 12
    status, hist = run_history(tmp_path, folder, extra=("--since", "2026-11-01T00:00:00+00:00"))
    assert status == 1 and hist["change_points"][0]["first_bad"] == sha(4)


# --- unusable input -------------------------------------------------------------------------------


def test_unusable_input_is_one_line_and_exit_2(tmp_path, real, capsys):
    folder = write(make_series(real, n=3), tmp_path / "runs")
    (tmp_path / "broken.json").write_text('{"benchmarks": [')
    (tmp_path / "empty").mkdir()
    cases = [
        [str(tmp_path / "missing.json")],
        [str(tmp_path / "broken.json")],
        [str(tmp_path / "empty")],
        [str(folder), "--since", "not-a-ref-anywhere"],
        [str(folder), "--metric", "speed"],
    ]
    for args in cases:
        assert cli.main(["history", *args, "--out", str(tmp_path / "o")]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("gpt2-bench history: error: ") and err.count("\n") == 1, err


def test_a_verdict_json_in_the_folder_is_left_out_with_a_note(tmp_path, real):
    folder = write(make_series(real, n=6), tmp_path / "runs")
    (folder / "verdict.json").write_text(json.dumps({"verdict": "pass", "rows": []}))
    status, hist = run_history(tmp_path, folder)
    assert status == 0 and any(
        "verdict.json: not a pytest-benchmark result" in n for n in hist["notes"]
    )


def test_history_never_imports_torch_or_pytest(tmp_path, real):
    folder = write(make_series(real, time=step_at(7, 1.3)), tmp_path / "runs")
    code = (
        "import sys; from gpt2_fixtures import cli; "
        f"status = cli.main(['history', {str(folder)!r}, '--out', {str(tmp_path / 'o')!r}]); "
        "bad = [m for m in ('torch', 'pytest', 'transformers') if m in sys.modules]; "
        "assert 'matplotlib' in sys.modules and not bad, bad; sys.exit(status)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr  # the step is in place; and it plotted
