"""Shard assignment: every case in exactly one shard, the same shard in every process."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpt2_fixtures.plugin.shard import Shard, parse_shard, select, shard_of

# A grid shaped like the real one: phases x optimizations x batch sizes x lengths.
GRID_IDS = [
    f"test_{phase}[{optimization}-b{batch}-s{seq}]"
    for phase, optimization, batch, seq in itertools.product(
        ("train", "infer", "generate"),
        ("eager-fp32", "sdpa-fp32", "sdpa-bf16", "flash2-bf16", "int8", "sdpa-bf16-compile"),
        (1, 8, 32),
        (128, 512, 1024),
    )
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1/1", Shard(1, 1)), ("1/4", Shard(1, 4)), ("4/4", Shard(4, 4)), (" 2/3 ", Shard(2, 3))],
)
def test_parse_shard_accepts_i_of_n(text: str, expected: Shard) -> None:
    assert parse_shard(text) == expected
    assert str(expected) == text.strip()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "expected I/N"),
        ("2", "expected I/N"),
        ("a/b", "expected I/N"),
        ("1/2/3", "expected I/N"),
        ("1.5/2", "expected I/N"),
        ("1/0", "N must be at least 1"),
        ("1/-2", "N must be at least 1"),
        ("0/2", "between 1 and 2"),
        ("3/2", "between 1 and 2"),
        ("-1/2", "between 1 and 2"),
    ],
)
def test_parse_shard_rejects_with_reason(text: str, reason: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_shard(text)
    assert reason in str(info.value)
    assert repr(text) in str(info.value)


def test_shard_dataclass_validates() -> None:
    with pytest.raises(ValueError, match="invalid shard 0/2"):
        Shard(0, 2)
    with pytest.raises(ValueError, match="at least 1"):
        shard_of("x", 0)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_every_case_in_exactly_one_shard(n: int) -> None:
    kept_per_shard = [select(GRID_IDS, Shard(i, n), key=str)[0] for i in range(1, n + 1)]
    union = [case for kept in kept_per_shard for case in kept]
    assert sorted(union) == sorted(GRID_IDS)
    assert len(union) == len(set(union)) == len(GRID_IDS)
    for i, kept in enumerate(kept_per_shard, start=1):
        assert all(shard_of(case, n) == i for case in kept)


def test_select_keeps_order_and_returns_the_complement() -> None:
    shard = Shard(2, 3)
    kept, dropped = select(GRID_IDS, shard, key=str)
    assert kept == [case for case in GRID_IDS if shard.owns(case)]
    assert dropped == [case for case in GRID_IDS if not shard.owns(case)]


def test_shards_are_not_degenerate_on_a_real_sized_grid() -> None:
    # 162 cases into 4 shards: a hash that put nearly everything on one shard would fail here.
    sizes = [len(select(GRID_IDS, Shard(i, 4), key=str)[0]) for i in range(1, 5)]
    assert min(sizes) >= 20, sizes


def test_assignment_does_not_depend_on_the_other_cases() -> None:
    subset = GRID_IDS[::5]
    for case in subset:
        assert shard_of(case, 3) == shard_of(case, 3)
    kept_small = select(subset, Shard(1, 3), key=str)[0]
    kept_full = select(GRID_IDS, Shard(1, 3), key=str)[0]
    assert set(kept_small) == set(kept_full) & set(subset)


@pytest.mark.parametrize(
    ("case_id", "shards_for_2_3_4_7"),
    [
        ("test_train[eager-fp32-b8-s128]", [2, 1, 4, 2]),
        ("test_infer[sdpa-bf16-b1-s512]", [1, 1, 3, 5]),
        ("test_generate[int8-b1-s128]", [1, 3, 1, 5]),
        ("test_train[sdpa-bf16-compile-b32-s1024]", [1, 1, 3, 2]),
    ],
)
def test_known_assignments_are_pinned(case_id: str, shards_for_2_3_4_7: list[int]) -> None:
    # Changing the hash would move cases between the shards of existing CI matrices (and so
    # between runners of different speed): a change must be deliberate, so it fails here.
    assert [shard_of(case_id, n) for n in (2, 3, 4, 7)] == shards_for_2_3_4_7


def test_assignment_is_stable_across_processes_with_different_hash_seeds() -> None:
    script = (
        "import json, sys; from gpt2_fixtures.plugin.shard import shard_of; "
        "ids = json.load(sys.stdin); print(json.dumps([shard_of(i, 5) for i in ids]))"
    )
    outputs = []
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(GRID_IDS),
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=60,
        )
        outputs.append(json.loads(proc.stdout))
    assert outputs[0] == outputs[1] == [shard_of(case, 5) for case in GRID_IDS]


# --- The plugin option, end to end on the real benchmarks/ grid (collection only: fast) ---

_COLLECT_SCRIPT = """
import json, sys
import pytest

class Recorder:
    def __init__(self):
        self.items, self.deselected = [], []
    def pytest_collection_finish(self, session):
        self.items = [item.nodeid for item in session.items]
    def pytest_deselected(self, items):
        self.deselected += [item.nodeid for item in items]

results = {}
for shard in json.loads(sys.argv[1]):
    recorder = Recorder()
    args = ["benchmarks", "--collect-only", "-q", "-p", "no:cacheprovider",
            "--gpt2-device", "cpu", "--gpt2-model", "tiny"]
    if shard:
        args += ["--gpt2-shard", shard]
    code = pytest.main(args, plugins=[recorder])
    results[shard] = {"code": int(code), "items": recorder.items, "deselected": recorder.deselected}
print("RESULTS=" + json.dumps(results))
"""


@pytest.fixture(scope="module")
def collected() -> dict[str, dict[str, Any]]:
    """Collect benchmarks/ unsharded, as 1/2, 2/2 and with an invalid shard, in one process."""
    root = Path(__file__).resolve().parents[1]
    shards = ["", "1/2", "2/2", "3/2"]
    proc = subprocess.run(
        [sys.executable, "-c", _COLLECT_SCRIPT, json.dumps(shards)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULTS=")), None)
    assert line is not None, proc.stdout[-3000:] + proc.stderr[-3000:]
    results: dict[str, dict[str, Any]] = json.loads(line.removeprefix("RESULTS="))
    results["3/2"]["stderr"] = proc.stderr
    return results


def test_two_shards_together_select_the_full_grid_once(collected: dict[str, Any]) -> None:
    full, one, two = collected[""], collected["1/2"], collected["2/2"]
    assert full["code"] == one["code"] == two["code"] == 0
    assert len(full["items"]) >= 4
    assert one["items"] and two["items"]
    assert sorted(one["items"] + two["items"]) == sorted(full["items"])
    assert not set(one["items"]) & set(two["items"])
    # Deselected items are reported to pytest (the "N deselected" count) and are the other shard.
    assert sorted(one["deselected"]) == sorted(two["items"])
    assert sorted(two["deselected"]) == sorted(one["items"])
    assert full["deselected"] == []


def test_shard_is_chosen_by_the_name_part_of_the_node_id(collected: dict[str, Any]) -> None:
    for index in (1, 2):
        for nodeid in collected[f"{index}/2"]["items"]:
            name = nodeid.rsplit("::", 1)[1]  # e.g. test_train[eager-fp32-b8-s128]
            assert shard_of(name, 2) == index, nodeid


def test_invalid_shard_is_a_usage_error(collected: dict[str, Any]) -> None:
    bad = collected["3/2"]
    assert bad["code"] == 4  # pytest.ExitCode.USAGE_ERROR
    assert "--gpt2-shard" in bad["stderr"]
    assert "the shard index I must be between 1 and 2" in bad["stderr"]
