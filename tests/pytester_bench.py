"""Shared by the pytester tests: a benchmark file like the real ones, and a runner."""

import pytest

BENCH = """
import math
import pytest
from gpt2_fixtures import steps

@pytest.mark.train
def test_train(benchmark, gpt2_case, gpt2_session):
    model = gpt2_session.model(gpt2_case)
    batch = gpt2_session.batch(gpt2_case)
    step, state = steps.train_step(model, batch, gpt2_case.recipe, gpt2_session.settings.device)
    info = gpt2_session.measure(benchmark, gpt2_case, step, model)
    info["loss"] = state.loss()
    benchmark.extra_info.update(info)
    assert math.isfinite(info["loss"]), f"loss is {info['loss']}"

@pytest.mark.inference
def test_infer(benchmark, gpt2_case, gpt2_session):
    model = gpt2_session.model(gpt2_case)
    batch = gpt2_session.batch(gpt2_case)
    step, _ = steps.infer_step(model, batch, gpt2_case.recipe, gpt2_session.settings.device)
    benchmark.extra_info.update(gpt2_session.measure(benchmark, gpt2_case, step, model))
"""

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
    pytester.makepyfile(test_bench=BENCH)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "gpt2_fixtures.plugin", *args)
