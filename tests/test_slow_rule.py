"""The rule that marks tests ``slow`` (conftest.py): a test that spawns a process, found from
the source, directly, through a helper or through a fixture."""

from pathlib import Path

import pytest
from helpers import spawning_functions

PROBE = """
import subprocess

from helpers import run


def _git(*args):
    return subprocess.run(["git", *args], check=False)


def _indirect():
    return _git("status")


@pytest.fixture
def spawned():
    return _indirect()


def test_direct():
    subprocess.run(["true"], check=False)


def test_through_two_helpers():
    _indirect()


def test_through_pytester(pytester):
    pytester.runpytest_subprocess("-q")


def test_through_the_shared_runner(pytester):
    run(pytester, "-q")


def test_pure():
    assert sum([1, 2]) == 3
"""


def test_spawning_functions_follow_calls_and_the_shared_helpers(tmp_path: Path) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    found = spawning_functions(probe)
    expected = {"test_direct", "test_through_two_helpers", "test_through_pytester"}
    assert expected | {"test_through_the_shared_runner", "spawned", "_git"} <= found
    assert "test_pure" not in found


def test_a_real_spawning_test_is_marked_and_a_pure_one_is_not(
    request: pytest.FixtureRequest,
) -> None:
    here = spawning_functions(Path(__file__))
    assert "test_a_real_spawning_test_is_marked_and_a_pure_one_is_not" not in here
    assert request.node.get_closest_marker("slow") is None
    smoke = Path(__file__).with_name("test_benchmarks_smoke.py")
    assert "test_train_and_inference_write_results" in spawning_functions(smoke)
