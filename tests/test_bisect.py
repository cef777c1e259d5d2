"""`gpt2-bench bisect`: a throwaway copy of the project with a deliberately slowed commit."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2_fixtures import cli
from gpt2_fixtures.results import bisect, gate

ROOT = Path(__file__).resolve().parents[1]

# The slowed commit wraps the inference step in a 0.5 s sleep through a conftest in benchmarks/:
# the tiny eager step takes tens of ms on a quiet machine and some hundreds on a crowded one, and
# a sleep does not slow the twin control, so the step's ratio to the control at least doubles.
SLOW_CONFTEST = '''"""Deliberately slowed commit for tests/test_bisect.py."""
import time

from gpt2_fixtures.bench import steps

_infer_step = steps.infer_step


def _slowed(*args, **kwargs):
    step, state = _infer_step(*args, **kwargs)

    def slow_step():
        time.sleep(0.5)
        return step()

    return slow_step, state


steps.infer_step = _slowed
'''
PYTEST_ARGS = [
    "-m",
    "inference",
    "-k",
    "eager",
    "--gpt2-rounds",
    # enough rounds that an unchanged commit's interval (the twin ratio's, the noisier) shows
    # it within the 50% below: with 6, one came out inconclusive and the bisect skipped it
    "15",
    "--gpt2-warmup",
    "1",
    "--gpt2-batch-sizes",
    "1",
    "--gpt2-seq-lens",
    "64",
]


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _commit(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


def make_repo(tmp_path: Path) -> tuple[Path, list[str]]:
    """c0..c8: c5 adds the sleep (slow from then on), c6 does not build (a syntax error in the
    benchmark file), c7 repairs it."""
    repo = tmp_path / "repo"
    tracked = _git(ROOT, "ls-files", "-z").split("\0")
    for name in filter(None, tracked):
        src = ROOT / name
        if src.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / name)
    _git(tmp_path, "init", "-q", str(repo))
    shas = [_commit(repo, "c0: the good commit")]
    bench = repo / "benchmarks" / "test_inference.py"
    for i in range(1, 9):
        (repo / "HISTORY_NOTE.txt").write_text(f"change {i}\n")
        if i == 5:
            (repo / "benchmarks" / "conftest.py").write_text(SLOW_CONFTEST)
        if i == 6:
            bench.write_text(bench.read_text() + "\ndef broken(:\n")
        if i == 7:
            bench.write_text(bench.read_text().replace("\ndef broken(:\n", ""))
        shas.append(_commit(repo, f"c{i}: {'slow step' if i == 5 else 'a change'}"))
    return repo, shas


def test_bisect_finds_the_slowed_commit(tmp_path, capsys):
    repo, shas = make_repo(tmp_path)
    out = tmp_path / "out"
    status = cli.main(
        [
            "bisect",
            shas[0],
            shas[-1],
            "--repo",
            str(repo),
            "--repeats",
            "1",
            # This shared machine's speed swings several-fold between processes (a control 360%
            # apart was seen): the test is about bisecting, so the speed check is opened wide and
            # only an effect of 50% counts; the sleep makes several times that. Throughput is
            # judged as a metric of its own, so it gets the same 50%: at its default 10%, two
            # unchanged commits 7-8% apart in raw throughput were inconclusive and skipped,
            # and the bisect ended between skipped commits (CI, 2026-12-03).
            "--control-tolerance",
            "5000%",
            "--threshold",
            "time=50%",
            "--threshold",
            "samples_per_s=50%",
            "--threshold",
            "tokens_per_s=50%",
            "--out",
            str(out),
            "--json",
            str(tmp_path / "bisect.json"),
            "--",
            *PYTEST_ARGS,
        ]
    )
    captured = capsys.readouterr()
    text = captured.out
    log = (out / "bisect-run.log").read_text() if (out / "bisect-run.log").exists() else ""
    assert status == 0, text + captured.err + log
    outcome = json.loads((tmp_path / "bisect.json").read_text())
    assert outcome["first_bad"] == shas[5]
    assert f"first bad commit: {shas[5]} c5: slow step" in text
    assert "REGRESSION" in text  # the gate table that convicted it
    # within log2(N)+1 A/B runs, the skipped commit included
    assert len(outcome["steps"]) <= math.log2(len(shas)) + 1, outcome["steps"]
    verdicts = {s["commit"]: s["verdict"] for s in outcome["steps"]}
    assert verdicts.get(shas[5]) == "bad"
    assert verdicts.get(shas[6]) == "skip"  # c6 does not build
    reason = (out / "steps" / shas[6] / "reason.txt").read_text()
    assert reason.startswith("cannot be measured")
    assert all(verdicts[shas[i]] == "good" for i in range(1, 5) if shas[i] in verdicts)
    # the user's repository is left as it was: no worktree, no bisection under way
    assert _git(repo, "worktree", "list").count("\n") == 0
    assert _git(repo, "rev-parse", "HEAD") == shas[-1]
    assert not (repo / ".git" / "BISECT_LOG").exists()


def test_bisect_rejects_unusable_input(tmp_path, capsys):
    repo = tmp_path / "r"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a").write_text("1")
    first = _commit(repo, "one")
    (repo / "a").write_text("2")
    second = _commit(repo, "two")
    for good, bad in ((second, first), ("no-such-ref", second), (first, first)):
        assert cli.main(["bisect", good, bad, "--repo", str(repo), "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("gpt2-bench bisect: error: ") and err.count("\n") == 1, err


def test_first_bad_is_read_from_git_output():
    sha = "a" * 40
    found = bisect._first_bad(f"running x\n{sha} is the first bad commit\ncommit {sha}\n")
    assert found == {"first_bad": sha, "candidates": [sha]}
    skipped = bisect._first_bad(
        f"There are only 'skip'ped commits left to test.\nThe first bad commit could be any of:\n"
        f"{sha}\n{'b' * 40}\nWe cannot bisect more!\n"
    )
    assert skipped == {"first_bad": None, "candidates": [sha, "b" * 40]}
    with pytest.raises(bisect.BisectError, match="bisect run failed"):
        bisect._first_bad("bisect run failed:\nexit code 200\nbisect run failed")


def _result(*verdicts: str) -> gate.GateResult:
    rows = tuple(
        gate.Row("b", "time", "ms", 1.0, 1.0, 0.0, None, None, 0.5, "10%", v) for v in verdicts
    )
    return gate.GateResult(rows, (), (), (), gate.GateSettings(), compared=1)


def test_step_verdicts_follow_the_gate():
    assert bisect._verdict(_result(gate.PASS)) == "good"
    assert bisect._verdict(_result(gate.PASS, gate.REGRESSION)) == "bad"
    assert bisect._verdict(_result(gate.PASS, gate.INCONCLUSIVE)) == "skip"
    assert bisect._verdict(_result(gate.DRIFT)) == "good"


def test_step_runs_this_installation_not_the_commit_under_test(tmp_path):
    command = bisect._step_command(tmp_path)
    assert command[:3] == [sys.executable, "-P", "-m"]
    here = str(Path(bisect.__file__).resolve().parents[2])
    assert bisect._step_env()["PYTHONPATH"].split(":")[0] == here


@pytest.mark.parametrize(
    ("argv", "pytest_args", "repeats"),
    [
        (["G", "B", "--repeats", "1", "--", "-m", "inference"], ["-m", "inference"], 1),
        (["--repeats", "3", "G", "B"], [], 3),
        (["G", "B", "--", "-k", "x"], ["-k", "x"], 2),  # argparse drops this `--`
        (["G", "B", "--repeats=4"], [], 4),
    ],
)
def test_options_go_before_or_after_the_commits(argv, pytest_args, repeats):
    args = cli.build_parser(["bisect"]).parse_args(["bisect", *argv])
    assert bisect._split_rest(args) == pytest_args
    assert (args.good, args.bad, args.repeats) == ("G", "B", repeats)


def _record(out: Path, commit: str, verdict: str, table: str = "", reason: str = "") -> None:
    record = out / "steps" / commit
    record.mkdir(parents=True)
    (record / "verdict").write_text(verdict + "\n")
    if table:
        (record / "table.txt").write_text(table)
    if reason:
        (record / "reason.txt").write_text(reason)


def test_the_report_says_what_was_found(tmp_path, capsys):
    bad, good = "b" * 40, "a" * 40
    outcome = {"first_bad": bad, "good": good, "subject": "slow", "steps": [{}, {}]}
    _record(tmp_path / "found", bad, "bad", table="test_infer  time  REGRESSION\n")
    assert bisect._report(outcome, tmp_path / "found") == 0
    text = capsys.readouterr().out
    assert f"first bad commit: {bad} slow" in text and "2 A/B run(s)" in text
    assert "test_infer  time  REGRESSION" in text
    _record(tmp_path / "passes", bad, "good")
    assert bisect._report(outcome, tmp_path / "passes") == 1
    assert "does not regress against GOOD (it passes)" in capsys.readouterr().out
    _record(tmp_path / "skip", bad, "skip", reason="cannot be measured: no build")
    assert bisect._report(outcome, tmp_path / "skip") == 3
    assert "could not be judged against GOOD (cannot be measured: no build)" in (
        capsys.readouterr().out
    )
    lost = {"first_bad": None, "candidates": [bad, good], "good": good, "steps": [{}]}
    assert bisect._report(lost, tmp_path) == 3
    assert "bbbbbbbbbbbb, aaaaaaaaaaaa" in capsys.readouterr().out
