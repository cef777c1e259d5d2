"""Knowledge-distillation step: teacher forward + student training step (docs/phases.md)."""

import math

import pytest

from gpt2_fixtures.bench.phases import DISTILL


@pytest.mark.distillation
def test_distill(benchmark, gpt2_case, gpt2_bench):
    student = gpt2_bench.model(gpt2_case)  # the teacher is built beside it by DISTILL.step
    batch = gpt2_bench.batch(gpt2_case)
    step, distiller = DISTILL.step(gpt2_bench, gpt2_case, student, batch)
    measured = gpt2_bench.measure(benchmark, gpt2_case, step, student)
    # Teacher share of the timed rounds, the losses, the teacher's size.
    info = measured.info | DISTILL.record(gpt2_bench, gpt2_case, measured, distiller)
    benchmark.extra_info.update(info)
    # A step that did not train (NaN/inf loss) must fail, not report a time.
    assert info["loss"] is not None and math.isfinite(info["loss"]), f"loss is {info['loss']}"
