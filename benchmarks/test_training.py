"""Training step: forward + backward + AdamW step, over optimization x batch size x length."""

import math

import pytest

from gpt2_fixtures.bench.phases import TRAIN


@pytest.mark.train
def test_train(benchmark, gpt2_case, gpt2_bench):
    model = gpt2_bench.model(gpt2_case)
    batch = gpt2_bench.batch(gpt2_case)
    step, state = TRAIN.step(gpt2_bench, gpt2_case, model, batch)
    measured = gpt2_bench.measure(benchmark, gpt2_case, step, model)
    info = measured.info | TRAIN.record(gpt2_bench, gpt2_case, measured, state)
    benchmark.extra_info.update(info)
    # A step that did not train (NaN/inf loss) must fail, not report a time.
    assert info["loss"] is not None and math.isfinite(info["loss"]), f"loss is {info['loss']}"
