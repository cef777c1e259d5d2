"""Training step: forward + backward + AdamW step, over optimization x batch size x length."""

import math

import pytest

from gpt2_fixtures.bench import steps


@pytest.mark.train
def test_train(benchmark, gpt2_case, gpt2_session):
    model = gpt2_session.model(gpt2_case)
    batch = gpt2_session.batch(gpt2_case)
    step, state = steps.train_step(model, batch, gpt2_case.recipe, gpt2_session.settings.device)
    info = gpt2_session.measure(benchmark, gpt2_case, step, model).info
    info["loss"] = state.loss()
    benchmark.extra_info.update(info)
    # A step that did not train (NaN/inf loss) must fail, not report a time.
    assert info["loss"] is not None and math.isfinite(info["loss"]), f"loss is {info['loss']}"
