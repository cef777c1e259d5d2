"""tools/bare_loop.py and tools/wall_split.py in a real benchmark process (slow: it spawns one).

What is checked is that they measure what they say and report it, never a timing: the bare loop
runs for the fp32 train/infer case and only for it, one bare call paired with each round, the
ratio is the median of round / bare with its interval, the band decides the exit status; the
wall split's timed part is the rounds' own sum and no part is counted twice
(docs/measuring.md, "What a round measures, against a bare loop" and "Where a run's time
goes")."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
from helpers import load_tool, pytest_with_tools

from gpt2_fixtures.results.gate.stats import median_interval

GRID = ["benchmarks/test_inference.py", "--gpt2-optimizations", "sdpa-fp32,int8"]
GRID += ["--gpt2-batch-sizes", "1", "--gpt2-seq-lens", "32", "--gpt2-threads", "1"]
GRID += ["--gpt2-rounds", "3", "--gpt2-warmup", "1"]


def run(tmp_path: Path, band: str) -> tuple[int, dict[str, Any], dict[str, Any], dict[str, Any]]:
    env = {"BARE_LOOP_JSON": str(tmp_path / "bare.json")}
    env |= {"WALL_SPLIT_JSON": str(tmp_path / "wall.json")}
    args = [f"--benchmark-json={tmp_path / 'out.json'}", f"--bare-loop-band={band}", *GRID]
    proc = pytest_with_tools(["bare_loop", "wall_split"], args, env)
    assert "| part | seconds |" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    loads = [json.loads((tmp_path / f).read_text()) for f in ("bare.json", "wall.json", "out.json")]
    return proc.returncode, *loads


def test_bare_loop_and_wall_split_report_what_they_measured(tmp_path: Path) -> None:
    code, bare, wall, out = run(tmp_path, "0,1000")
    assert code == 0
    (case,) = bare["cases"]  # int8 is not a plain fp32 case: no bare loop for it
    assert case["name"] == "test_infer[sdpa-fp32-b1-s32]" and case["verdict"] == "inside"
    entry = next(b for b in out["benchmarks"] if b["name"] == case["name"])
    data = entry["stats"]["data"]
    assert case["reported_ms"] == statistics.median(data) * 1e3  # the median of 3 rounds
    bare = case["bare_round_ms"]
    assert case["rounds"] == len(bare) == len(data) == 3  # one bare call paired with each round
    ratios = [t * 1e3 / b for t, b in zip(data, bare, strict=True)]
    assert case["ratio"] == pytest.approx(statistics.median(ratios))
    # three rounds give no narrower 95% interval for a median than their whole range
    assert (case["ratio_low"], case["ratio_high"]) == pytest.approx((min(ratios), max(ratios)))
    assert case["bare_ms"] == pytest.approx(statistics.median(bare))
    timed = sum(sum(b["stats"]["data"]) for b in out["benchmarks"])
    assert abs(wall["timed"] - timed) < 1e-6 * max(1.0, timed)
    controls = sum(sum(b["extra_info"]["control_round_s"]) for b in out["benchmarks"])
    assert wall["control"] >= controls  # the warmup rounds' controls are in it too
    assert wall["warmup"] > 0  # the warmup rounds run before pedantic (measure.warm_up)
    assert all(seconds >= 0 for seconds in wall.values()), wall  # no part counted twice


def test_a_run_that_checked_nothing_does_not_pass(tmp_path: Path) -> None:
    args = ["benchmarks/test_inference.py", "--gpt2-optimizations", "int8", "--gpt2-threads", "1"]
    args += ["--gpt2-batch-sizes", "1", "--gpt2-seq-lens", "32", "--gpt2-rounds", "2"]
    proc = pytest_with_tools(["bare_loop"], [*args, "--gpt2-warmup", "1"], {})
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert load_tool("bare_loop").NOTHING_CHECKED in proc.stdout


def test_a_ratio_outside_the_band_fails_the_session(tmp_path: Path) -> None:
    code, bare, _, _ = run(tmp_path, "1000,2000")
    assert bare["band"] == [1000.0, 2000.0] and code == 1


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.95, 1.05, "inside"),
        (0.9, 1.1, "inside"),  # the band's edges belong to it
        (1.12, 1.3, "outside"),
        (0.7, 0.85, "outside"),
        (1.05, 1.15, "not judged"),  # straddles an edge: the rounds cannot tell
        (0.85, 1.15, "not judged"),
    ],
)
def test_a_case_is_judged_by_its_interval(low: float, high: float, expected: str) -> None:
    assert load_tool("bare_loop").verdict(low, high, (0.9, 1.1)) == expected


@pytest.mark.parametrize("n", [3, 5, 6, 9, 10, 20, 40])
def test_the_median_interval_is_the_binomial_order_statistics(n: int) -> None:
    low, high = median_interval([float(x) for x in range(1, n + 1)])
    k = int(low)
    assert high == n + 1 - k  # symmetric order statistics
    below = sum(math.comb(n, j) for j in range(k)) / 2**n  # P(X < k), X ~ binomial(n, 1/2)
    if k > 1:  # k = 1: too few values for 95%, the whole range
        assert below <= 0.025  # coverage at least 95%
    assert below + math.comb(n, k) / 2**n > 0.025  # k is the largest: one step in covers less
    if n == 20:
        assert (low, high) == (6.0, 15.0)  # the textbook pair for n = 20


class FakeControl:
    kind = "twin-infer"

    def run(self) -> float:
        return 0.5


def test_the_bare_burst_runs_before_the_control_and_times_only_its_last_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tool = load_tool("bare_loop")
    monkeypatch.setenv("BARE_LOOP_BURST", "3")
    calls: list[int] = []
    pairs = tool.Pairs()
    control = tool.BareBeforeControl(FakeControl(), lambda: calls.append(1), pairs)
    assert control.kind == "twin-infer"
    assert control.run() == 0.5 and control.run() == 0.5  # the control's own time, untouched
    assert len(calls) == 6 and len(pairs.bare) == 2  # 3 calls a round, the last one timed
    assert pairs.control == [0.5, 0.5]


def pairs(bare: list[float], control: list[float]) -> Any:
    return load_tool("bare_loop").Pairs(bare, control)


@pytest.mark.parametrize(
    ("bare", "control"),
    [
        ([0.01, 0.01], [0.1, 0.2]),  # fewer bare calls than rounds
        ([0.01] * 4, [0.1, 0.2, 0.3, 0.4]),  # the rounds' controls were 0.2-0.4 s: shifted
    ],
)
def test_a_case_whose_rounds_cannot_be_paired_is_not_judged(
    bare: list[float], control: list[float]
) -> None:
    recorded = [0.1, 0.2, 0.3]
    row = load_tool("bare_loop").summarise("c", [0.01] * 3, recorded, pairs(bare, control), (0, 9))
    assert row["verdict"] == "not judged" and "not paired" in row["why"]


def test_rounds_are_paired_with_the_last_bare_calls() -> None:
    # two warmup rounds' bare calls first (0.5 s: they must not be used), then the timed ones
    control = [9.0, 9.0, 0.1, 0.2, 0.3]
    done = pairs([0.5, 0.5, 1.0, 1.0, 2.0], control)
    row = load_tool("bare_loop").summarise("c", [2.0, 3.0, 4.0], [0.1, 0.2, 0.3], done, (0, 9))
    assert row["bare_round_ms"] == [1000.0, 1000.0, 2000.0]
    assert row["ratio"] == 2.0 and (row["ratio_low"], row["ratio_high"]) == (2.0, 3.0)
    assert row["verdict"] == "inside"


def test_the_control_after_the_last_round_is_left_out_of_the_pairing() -> None:
    # the case ran its control once more after its last round (0.7 s), with a burst before it
    bare_loop = load_tool("bare_loop")
    done = pairs([0.5, 1.0, 1.0, 2.0, 5.0], [9.0, 0.1, 0.2, 0.3, 0.7])
    after = [0.2, 0.3, 0.7]  # the case's control_after_round_s
    row = bare_loop.summarise("c", [2.0, 3.0, 4.0], [0.1, 0.2, 0.3], done, (0, 9), after)
    assert row["bare_round_ms"] == [1000.0, 1000.0, 2000.0] and row["verdict"] == "inside"
    # told nothing of it, the last three controls are not the rounds' own: not paired
    row = bare_loop.summarise("c", [2.0, 3.0, 4.0], [0.1, 0.2, 0.3], done, (0, 9))
    assert row["verdict"] == "not judged"
