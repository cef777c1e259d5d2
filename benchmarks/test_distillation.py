"""Knowledge-distillation step: teacher forward + student training step (docs/phases.md)."""

import math

import pytest

from gpt2_fixtures.bench import distill, models


@pytest.mark.distillation
def test_distill(benchmark, gpt2_case, gpt2_session):
    student = gpt2_session.model(gpt2_case)
    teacher = gpt2_session.teacher(gpt2_case)
    batch = gpt2_session.batch(gpt2_case)
    opts = gpt2_session.distill_options()
    device = gpt2_session.settings.device
    step, distiller = distill.distill_step(
        student, teacher, batch, gpt2_case.recipe, device, opts.temperature, opts.alpha
    )
    measured = gpt2_session.measure(benchmark, gpt2_case, step, student)
    # The timed rounds' shares, one per stats.data entry (not warmup or settled memory steps).
    info = measured.info | distill.share_metrics(measured.timed_of(distiller.teacher_shares()))
    state = distiller.state
    info |= {"loss": state.loss(), "kd_loss": state.kd_loss(), "lm_loss": state.lm_loss()}
    info["teacher_n_params"] = models.n_params(teacher)
    benchmark.extra_info.update(info)
    # A step that did not train (NaN/inf loss) must fail, not report a time.
    assert info["loss"] is not None and math.isfinite(info["loss"]), f"loss is {info['loss']}"
