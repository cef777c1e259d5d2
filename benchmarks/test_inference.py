"""Inference forward pass under torch.inference_mode, over optimization x batch size x length."""

import math

import pytest

from gpt2_fixtures.bench.phases import INFER


@pytest.mark.inference
def test_infer(benchmark, gpt2_case, gpt2_bench):
    model = gpt2_bench.model(gpt2_case)
    batch = gpt2_bench.batch(gpt2_case)
    step, state = INFER.step(gpt2_bench, gpt2_case, model, batch)
    measured = gpt2_bench.measure(benchmark, gpt2_case, step, model)
    info = measured.info | INFER.record(gpt2_bench, gpt2_case, measured, state)
    benchmark.extra_info.update(info)
    # Reduced precision that broke the model (NaN/inf logits) must fail, not report a speed-up.
    diff = info["max_logit_diff"]
    assert diff is None or math.isfinite(diff), f"max_logit_diff against fp32 is {diff}"
