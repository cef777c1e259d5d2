"""Inference forward pass under torch.inference_mode, over optimization x batch size x length."""

import math

import pytest

from gpt2_fixtures.bench import steps


@pytest.mark.inference
def test_infer(benchmark, gpt2_case, gpt2_session):
    model = gpt2_session.model(gpt2_case)
    batch = gpt2_session.batch(gpt2_case)
    step, _ = steps.infer_step(model, batch, gpt2_case.recipe, gpt2_session.settings.device)
    info = gpt2_session.measure(benchmark, gpt2_case, step, model).info
    benchmark.extra_info.update(info)
    # Reduced precision that broke the model (NaN/inf logits) must fail, not report a speed-up.
    diff = info["max_logit_diff"]
    assert diff is None or math.isfinite(diff), f"max_logit_diff against fp32 is {diff}"
