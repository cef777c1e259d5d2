"""tools/bare_loop.py and tools/wall_split.py in a real benchmark process (slow: it spawns one).

What is checked is that they measure what they say and report it, never a timing: the bare loop
runs for the fp32 train/infer case and only for it, the ratio is the reported median over the
bare median, the band decides the exit status; the wall split's timed part is the rounds' own
sum and no part is counted twice (docs/measuring.md, "What a round measures, against a bare
loop" and "Where a run's time goes")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import load_tool, pytest_with_tools

GRID = ["benchmarks/test_inference.py", "--gpt2-optimizations", "sdpa-fp32,int8"]
GRID += ["--gpt2-batch-sizes", "1", "--gpt2-seq-lens", "32", "--gpt2-threads", "1"]
GRID += ["--gpt2-rounds", "3", "--gpt2-warmup", "1"]


def run(tmp_path: Path, band: str) -> tuple[int, dict[str, Any], dict[str, Any], dict[str, Any]]:
    env = {"BARE_LOOP_ROUNDS": "3", "BARE_LOOP_JSON": str(tmp_path / "bare.json")}
    env |= {"WALL_SPLIT_JSON": str(tmp_path / "wall.json")}
    args = [f"--benchmark-json={tmp_path / 'out.json'}", f"--bare-loop-band={band}", *GRID]
    args.append("--bare-loop-steady=1000")  # judged however far a 3-round bare loop moves
    proc = pytest_with_tools(["bare_loop", "wall_split"], args, env)
    assert "| part | seconds |" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    loads = [json.loads((tmp_path / f).read_text()) for f in ("bare.json", "wall.json", "out.json")]
    return proc.returncode, *loads


def test_bare_loop_and_wall_split_report_what_they_measured(tmp_path: Path) -> None:
    code, bare, wall, out = run(tmp_path, "0,1000")
    assert code == 0
    (case,) = bare["cases"]  # int8 is not a plain fp32 case: no bare loop for it
    assert case["name"] == "test_infer[sdpa-fp32-b1-s32]" and case["verdict"] == "inside"
    assert case["bare_moved"] == case["bare_after_ms"] / case["bare_before_ms"] - 1
    entry = next(b for b in out["benchmarks"] if b["name"] == case["name"])
    data = sorted(entry["stats"]["data"])
    assert case["reported_ms"] == data[1] * 1e3  # the median of 3 rounds
    bare_ms = case["reported_ms"] / case["ratio"]
    assert min(case["bare_before_ms"], case["bare_after_ms"]) <= bare_ms
    assert bare_ms <= max(case["bare_before_ms"], case["bare_after_ms"])
    timed = sum(sum(b["stats"]["data"]) for b in out["benchmarks"])
    assert abs(wall["timed"] - timed) < 1e-6 * max(1.0, timed)
    controls = sum(sum(b["extra_info"]["control_round_s"]) for b in out["benchmarks"])
    assert wall["control"] >= controls  # the warmup rounds' controls are in it too
    assert wall["warmup"] > 0  # the warmup rounds run before pedantic (measure.warm_up)
    assert all(seconds >= 0 for seconds in wall.values()), wall  # no part counted twice


def test_a_ratio_outside_the_band_fails_the_session(tmp_path: Path) -> None:
    code, bare, _, _ = run(tmp_path, "1000,2000")
    assert bare["band"] == [1000.0, 2000.0] and code == 1


@pytest.mark.parametrize(
    ("ratio", "before", "after", "expected"),
    [
        (1.05, 10.0, 10.4, "inside"),  # the bare loop moved 4%: judged
        (1.15, 10.0, 10.4, "outside"),
        (0.85, 10.0, 9.6, "outside"),
        (1.05, 10.0, 10.6, "not judged"),  # it moved 6%: the machine, not the suite
        (1.15, 10.0, 9.3, "not judged"),  # not outside either: the ratio is not evidence
    ],
)
def test_a_ratio_is_judged_only_where_the_bare_loop_held_still(
    ratio: float, before: float, after: float, expected: str
) -> None:
    assert load_tool("bare_loop").verdict(ratio, before, after, (0.9, 1.1), 0.05) == expected
