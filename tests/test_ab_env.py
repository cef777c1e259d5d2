"""`gpt2-bench ab` across two environments (docs/upgrades.md): argument handling, the one-line
exit-2 cases and the header here; the real A/B with the slow-torch stand-in in test_ab_stack.py."""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gpt2_fixtures.results import ab, ab_env, gate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "tests" / "data" / "comment" / "results"  # real runs (see the README there)


def ab_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ab.add_ab_arguments(parser)
    return parser.parse_args(argv)


def fake_python(path: Path, script: str) -> str:
    """An "interpreter" that answers the import check as told, without running anything."""
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return str(path)


def probe_answer(device: str = "cpu", name: str = "x86_64", torch: str = "2.13.0") -> str:
    facts = {
        "gpt2_fixtures": str(ROOT / "gpt2_fixtures" / "__init__.py"),
        "torch": torch,
        "device": device,
        "device_name": name,
        "python": "3.11.7",
    }
    return f"echo '{json.dumps(facts)}'"


def run_refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run `gpt2-bench ab` expecting exit 2 before anything ran; return its one error line."""
    assert ab.run_ab_command(ab_args("--repo", str(ROOT), *argv)) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("gpt2-bench ab: error: ") and "\n" not in err, err
    assert captured.out == ""  # no verdict, no PASS printed
    return err


def test_neither_base_nor_base_python_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--base-python" in run_refused(capsys)


def test_arguments_parse() -> None:
    args = ab_args("--base-python", "/a/py", "--head-python", "/b/py", "--", "-k", "infer")
    assert (args.base, args.base_python, args.head_python) == (None, "/a/py", "/b/py")
    assert args.pytest_args == ["--", "-k", "infer"]
    args = ab_args("--base", "origin/main")  # the old form, unchanged
    assert (args.base, args.base_python, args.head_python) == ("origin/main", None, None)


@pytest.mark.parametrize(
    "where",
    ["/proc/no-such-dir/verdict.json", "FILE/verdict.json", "DIR"],
    ids=["unwritable", "under-a-file", "a-directory"],
)
@pytest.mark.parametrize("option", ["--json", "--markdown"])
def test_unwritable_output_is_exit_2_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, option: str
) -> None:
    """An unwritable output gave a traceback and exit 1 after printing PASS; now one line,
    exit 2, and nothing ran (the interpreter below would fail the import check if it were asked)."""
    (tmp_path / "FILE").write_text("")
    (tmp_path / "DIR").mkdir()
    target = where if where.startswith("/") else str(tmp_path / where)
    broken = fake_python(tmp_path / "py", "echo ran >> " + str(tmp_path / "ran") + "; exit 1")
    out = tmp_path / "out"
    err = run_refused(capsys, "--base-python", broken, "--out", str(out), option, target)
    assert target in err
    assert not (tmp_path / "ran").exists() and not out.exists()


def test_interpreter_without_the_project_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = fake_python(
        tmp_path / "py", "echo \"ModuleNotFoundError: No module named 'torch'\" >&2; exit 1"
    )
    err = run_refused(capsys, "--base-python", broken, "--head-python", broken)
    assert "cannot import gpt2_fixtures and torch" in err and "No module named 'torch'" in err


def test_missing_interpreter_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_refused(capsys, "--base-python", str(tmp_path / "nowhere" / "python"))
    assert "no such executable interpreter" in err


def test_interpreter_on_another_device_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cpu = fake_python(tmp_path / "cpu", probe_answer())
    cuda = fake_python(tmp_path / "cuda", probe_answer("cuda", "NVIDIA H100"))
    err = run_refused(capsys, "--base-python", cpu, "--head-python", cuda)
    assert "different devices" in err and "cuda NVIDIA H100" in err


def test_probe_of_this_interpreter() -> None:
    """The real import check: this tree, torch, the device the benchmarks would use."""
    seen = ab_env.probe(ROOT, sys.executable, ab.side_env(ROOT))
    assert seen.facts["torch"] and seen.facts["device"] in ("cpu", "cuda")


# --- the verdict on real result files -------------------------------------------------------------


def slower(doc: dict[str, Any], factor: float, torch: str) -> dict[str, Any]:
    """`doc` as a torch release `factor` slower on every operator would have measured it: the
    step and the twin control alike, so their ratio stays where it was."""
    out = copy.deepcopy(doc)
    out["machine_info"]["gpt2"]["torch"] = torch
    for bench in out["benchmarks"]:
        stats = bench["stats"]
        stats["data"] = [t * factor for t in stats["data"]]
        for key in ("min", "max", "mean", "median", "stddev", "q1", "q3", "iqr"):
            if isinstance(stats.get(key), float):
                stats[key] *= factor
        info = bench["extra_info"]
        info["control_round_s"] = [t * factor for t in info["control_round_s"]]
        for key in ("tokens_per_s", "samples_per_s", "tokens_per_s_std", "samples_per_s_std"):
            if isinstance(info.get(key), float):
                info[key] /= factor
    return out


def real_runs(factor: float = 1.0, torch: str = "2.13.0+cpu") -> list[dict[str, Any]]:
    """Two real processes of one grid (base.json, cur.json), as a side of an A/B."""
    docs = [json.loads((RESULTS / f"{name}.json").read_text()) for name in ("base", "cur")]
    return [slower(doc, factor, torch) for doc in docs]


def test_stack_regression_is_caught_on_raw_time_and_hidden_by_the_twin() -> None:
    # 10 noisy rounds a process: +30% is not significant on every row after Holm; +50% is
    base_runs, head_runs = real_runs(), real_runs(1.5, "2.13.0+cpu.slow")
    base, head = ab.pool_results(base_runs), ab.pool_results(head_runs)
    pythons = {"base": "/old/bin/python", "head": "/new/bin/python"}
    runs = (base_runs, head_runs)
    lines, result = ab_env.judge_across(base, head, gate.GateSettings(), pythons, runs)
    assert result.exit_code == 1
    time_rows = [r for r in result.rows if r.metric == "time"]
    assert time_rows and all(r.verdict == gate.REGRESSION for r in time_rows)
    assert all(r.change == pytest.approx(0.5) for r in time_rows)
    assert not [r for r in result.rows if r.metric == "time/control"]  # not judged ...
    twin = [n for n in result.notes if n.startswith("twin (not judged)")]
    assert len(twin) == len(time_rows)  # ... but shown, and it cannot see the slowdown
    assert all("time/control +0.0%" in n and "the twin itself +50.0%" in n for n in twin)
    assert not [n for n in twin if n.endswith(gate.REGRESSION)]
    assert lines == list(result.notes[:4])
    assert "/old/bin/python" in lines[0] and "/new/bin/python" in lines[0]
    assert lines[1] == "stack differs: torch 2.13.0+cpu -> 2.13.0+cpu.slow"
    assert "basis: raw wall-clock, 2 interleaved processes a side" in lines[2]
    assert lines[3].startswith("thresholds from the processes' own spread")
    assert not [n for n in result.notes if n.startswith("baseline calibrated from")]
    # the stored-baseline gate on the same pair: never a pass
    assert gate.gate_documents(base, head).exit_code != 0


def test_thresholds_come_from_the_spread_of_processes_within_each_side() -> None:
    """Rounds of one process share its machine state; the processes are the unit."""
    base_runs, head_runs = real_runs(), real_runs(1.2)
    base = ab.pool_results(base_runs)
    judged, note = ab_env.calibrated(base, base_runs, head_runs)
    section = judged["gpt2_calibration"]
    assert section["processes"] == 2 and "sqrt(2/2)" in note
    name = base["benchmarks"][0]["fullname"]
    one = [statistics.median(d["benchmarks"][0]["stats"]["data"]) for d in base_runs]
    own = statistics.stdev(one) / statistics.fmean(one)  # the same on both sides (scaled)
    scale = (2 / 2) ** 0.5 / (1 + 1 / 2) ** 0.5
    assert section["benchmarks"][name]["time"] == pytest.approx(scale * own)
    assert "gpt2_calibration" not in base  # the pooled file itself is left as it was
    unchanged, why = ab_env.calibrated(base, base_runs[:1], head_runs[:1])
    assert unchanged == base and why.startswith("one process a side")


def test_same_stack_is_said_in_the_header() -> None:
    base = json.loads((RESULTS / "base.json").read_text())
    cur = json.loads((RESULTS / "cur.json").read_text())
    lines = ab_env.header({"base": "a", "head": "b"}, base, cur, runs=1)
    assert lines[1].startswith("stack the same on both sides (torch 2.13.0+cpu, transformers ")
    assert ab_env.stack_differences(base, cur) == []


def test_another_measuring_setup_is_refused() -> None:
    base = json.loads((RESULTS / "base.json").read_text())
    head = copy.deepcopy(base)
    head["machine_info"]["gpt2"]["cpu_threads"] = 2
    with pytest.raises(ab_env.files.UnusableInput, match="measuring setup differs"):
        ab_env.judge_across(base, head, gate.GateSettings(), {"base": "a", "head": "b"})


def test_a_pass_at_a_capped_threshold_is_not_shown() -> None:
    """Processes spread beyond the cap (other load): the rounds' interval cannot show a pass."""
    capped = "20% (capped: 3 x 12.58% spread is 44%; recalibrate)"
    row = gate.Row("t", "time", "ms", 1.0, 0.8, -0.2, -0.3, -0.1, 0.5, capped, gate.PASS)
    assert ab_env._too_spread(row).verdict == gate.INCONCLUSIVE
    assert "more --repeats" in ab_env._too_spread(row).note
    worse = replace(row, verdict=gate.REGRESSION)
    assert ab_env._too_spread(worse) == worse  # beyond the cap and significant: still one
    uncapped = replace(row, threshold="14.8% (3 x 4.29% between-process spread)")
    assert ab_env._too_spread(uncapped) == uncapped


def test_a_regression_the_processes_do_not_confirm_is_not_judged() -> None:
    """Rounds can be significant where processes are not: the process is the unit."""
    base_runs = [*real_runs(), slower(real_runs()[0], 1.001, "2.13.0+cpu")]
    factors = (1.6, 0.98, 1.01)  # one head process hit by other load, the others unchanged
    head_runs = [slower(d, f, "2.13.0+cpu") for d, f in zip(base_runs, factors, strict=True)]
    name = base_runs[0]["benchmarks"][0]["name"]
    row = gate.Row(name, "time", "ms", 1.0, 1.2, 0.2, 0.1, 0.3, 1e-6, "10%", gate.REGRESSION)
    check = ab_env._ProcessCheck(base_runs, head_runs, 0.01)
    assert check(row).verdict == gate.INCONCLUSIVE and "do not confirm" in check(row).note
    steady = [slower(d, 1.5, "2.13.0+cpu") for d in base_runs]
    assert ab_env._ProcessCheck(base_runs, steady, 0.01)(row) == row
    assert ab_env._ProcessCheck(base_runs[:2], head_runs[:2], 0.01)(row) == row  # too few
