"""Shared by the pytester tests: the real benchmark files in a pytester folder, and a runner."""

from pathlib import Path

import pytest

# The real benchmark files, so the plugin tests exercise what `pytest benchmarks` runs.
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
BENCH_FILES = ("test_training", "test_inference")

SMALL = [
    "--gpt2-batch-sizes",
    "1,2",
    "--gpt2-seq-lens",
    "16,32",
    "--gpt2-rounds",
    "3",
    "--gpt2-warmup",
    "1",
]


def make_bench_dir(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(
        "[pytest]\nmarkers =\n    train: t\n    inference: i\n    generation: g\n"
        "    distillation: d\n"
    )
    pytester.makepyfile(**{name: (BENCHMARKS / f"{name}.py").read_text() for name in BENCH_FILES})
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "gpt2_fixtures.plugin", *args)
