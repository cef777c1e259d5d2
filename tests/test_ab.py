"""Tests of the interleaved A/B command on temporary git repositories (no timing asserted)."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest

from gpt2_fixtures.results import ab, pooling

ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]

# A project shaped like this one, without torch: its benchmark records which tree it ran from.
MINI_BENCH = """
import gpt2_fixtures


def test_tree(benchmark):
    benchmark.extra_info["tree"] = gpt2_fixtures.TREE
    benchmark.extra_info["control_round_s"] = [1.0, 1.0, 1.0]
    benchmark.extra_info["control_kind"] = "twin"
    benchmark.pedantic(lambda: None, rounds=3, iterations=1)
"""


# ... and records a fingerprint, which the gate requires of both sides (docs/gate.md,
# "Comparable or not")
MINI_CONFTEST = """
def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["gpt2"] = {"device": "cpu", "device_name": "mini"}
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True)


def make_repo(path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "base")
    return path


def ab_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ab.add_ab_arguments(parser)
    return parser.parse_args(argv)


def test_order_alternates_who_goes_first() -> None:
    assert ab.order(3) == ["base", "head", "head", "base", "base", "head"]


def test_pooled_mean_std_equals_the_union() -> None:
    a, b = [1.0, 2.0, 4.0], [3.0, 5.0]
    parts = [(statistics.fmean(x), statistics.stdev(x), len(x)) for x in (a, b)]
    mean, std = pooling.pooled_mean_std(parts)
    assert mean == pytest.approx(3.0)
    assert std == pytest.approx(1.5811388, rel=1e-6)  # stdev of [1, 2, 4, 3, 5]


def test_pool_results_concatenates_rounds_and_control() -> None:
    def entry(data: list[float], control: list[float] | None) -> dict:
        return {
            "name": "t",
            "fullname": "f::t",
            "stats": {"data": data, "rounds": len(data), "median": 0.0, "mean": 0.0},
            "extra_info": {
                "control_round_s": control,
                "tokens_per_s": 10.0,
                "tokens_per_s_std": 0.0,
            },
        }

    docs = [{"benchmarks": [entry([1.0, 2.0], [0.5, 0.5])]}, {"benchmarks": [entry([3.0], [1.0])]}]
    pooled = ab.pool_results(docs)
    (bench,) = pooled["benchmarks"]
    assert bench["stats"]["data"] == [1.0, 2.0, 3.0]
    assert bench["stats"]["median"] == 2.0 and bench["stats"]["rounds"] == 3
    assert bench["extra_info"]["control_round_s"] == [0.5, 0.5, 1.0]
    assert bench["extra_info"]["tokens_per_s"] == 10.0
    docs[1]["benchmarks"][0]["extra_info"]["control_round_s"] = None
    assert ab.pool_results(docs)["benchmarks"][0]["extra_info"]["control_round_s"] is None


def test_pool_results_pools_every_judged_metric() -> None:
    """Once mfu, achieved_tflops and peak_reserved_mb came from the first run only."""
    from gpt2_fixtures.results.metrics import EXTRA_METRICS

    def entry(data: list[float], scale: float) -> dict:
        info: dict = {key.key: 10.0 * scale for key in EXTRA_METRICS}
        info["ttft_round_ms"] = [5.0 * scale] * len(data)
        return {
            "name": "t",
            "fullname": "f::t",
            "stats": {"data": data, "rounds": len(data), "median": 0.0, "mean": 0.0},
            "extra_info": info,
        }

    docs = [{"benchmarks": [entry([1.0, 2.0], 1.0)]}, {"benchmarks": [entry([3.0, 4.0], 2.0)]}]
    info = ab.pool_results(docs)["benchmarks"][0]["extra_info"]
    for metric in EXTRA_METRICS:
        assert info[metric.key] == pytest.approx(15.0), metric.key
        assert f"{metric.key}_std" not in info  # no run recorded a std: none is made up
    assert info["ttft_round_ms"] == [5.0, 5.0, 10.0, 10.0]
    del docs[1]["benchmarks"][0]["extra_info"]["mfu"]
    info = ab.pool_results(docs)["benchmarks"][0]["extra_info"]
    assert info["mfu"] is None  # not the first run's value standing for both


@pytest.mark.slow
def test_ab_runs_the_base_commit_and_the_working_tree(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "repo",
        {
            "conftest.py": MINI_CONFTEST,
            "gpt2_fixtures/__init__.py": 'TREE = "base"\n',
            "benchmarks/test_mini.py": MINI_BENCH,
        },
    )
    (repo / "gpt2_fixtures/__init__.py").write_text('TREE = "head"\n')  # uncommitted change
    out = tmp_path / "out"
    verdict = tmp_path / "verdict.json"
    args = ab_args("--base", "HEAD", "--repeats", "2", "--repo", str(repo), "--out", str(out))
    args.json = str(verdict)
    code = ab.run_ab_command(args)
    # the verdict on a no-op is noise (0, 1, or 3 not judged); the mechanics are what is tested
    assert code in (0, 1, 3)
    for side in ("base", "head"):
        runs = [json.loads((out / f"{side}-{i}.json").read_text()) for i in (1, 2)]
        assert {r["benchmarks"][0]["extra_info"]["tree"] for r in runs} == {side}
        pooled = json.loads((out / f"{side}-pooled.json").read_text())
        assert pooled["benchmarks"][0]["stats"]["rounds"] == 6
    rows = json.loads(verdict.read_text())["rows"]
    assert {r["metric"] for r in rows} >= {"time", "time/control"}
    assert not (repo / ".git" / "worktrees").exists()  # the repository was not touched
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True)
    assert status.stdout.decode().split() == ["M", "gpt2_fixtures/__init__.py"]


def test_ab_unknown_ref_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path / "repo", {"conftest.py": ""})
    assert ab.run_ab_command(ab_args("--base", "no-such-ref", "--repo", str(repo))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpt2-bench ab: error: git rev-parse") and "\n" not in err


@pytest.mark.slow
def test_ab_on_the_tiny_grid(tmp_path: Path) -> None:
    """The real benchmarks of a copy of this project, one tiny case, few rounds, one repeat."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("gpt2_fixtures", "benchmarks"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("conftest.py", "pyproject.toml"):
        shutil.copy(ROOT / name, repo / name)
    make_repo(repo, {})
    out = tmp_path / "out"
    grid = ["-k", "infer", "--gpt2-optimizations", "sdpa", "--gpt2-batch-sizes", "1"]
    grid += ["--gpt2-seq-lens", "32", "--gpt2-rounds", "3", "--gpt2-warmup", "1"]
    args = ab_args(
        "--base", "HEAD", "--repeats", "1", "--repo", str(repo), "--out", str(out), "--", *grid
    )
    assert args.pytest_args[0] == "--"
    # 3 rounds a side: the gate may judge (0, 1) or say it could not (3); never a crash (2)
    assert ab.run_ab_command(args) in (0, 1, 3)
    base = json.loads((out / "base-pooled.json").read_text())
    head = json.loads((out / "head-pooled.json").read_text())
    for doc in (base, head):
        (bench,) = doc["benchmarks"]
        assert bench["name"] == "test_infer[sdpa-fp32-b1-s32]"
        assert bench["stats"]["rounds"] == 3
        assert len(bench["extra_info"]["control_round_s"]) == 3
        assert doc["machine_info"]["gpt2"]["device"] == "cpu"
