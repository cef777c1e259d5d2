"""Greedy generation with the KV cache: end-to-end latency, TTFT, TPOT (docs/phases.md)."""

import pytest

from gpt2_fixtures.bench import generation


@pytest.mark.generation
def test_generate(benchmark, gpt2_case, gpt2_session):
    model = gpt2_session.model(gpt2_case)
    batch = gpt2_session.batch(gpt2_case)  # the prompts: seq_len = prompt length
    new_tokens = generation.new_tokens_of(gpt2_case)
    device = gpt2_session.settings.device
    step, state = generation.generate_step(model, batch, gpt2_case.recipe, device, new_tokens)
    # tokens_per_s counts generated tokens: batch x new tokens per call.
    measured = gpt2_session.measure(
        benchmark, gpt2_case, step, model, tokens=gpt2_case.batch_size * new_tokens
    )
    state.check_counts()  # exactly new_tokens per call, no early EOS stop
    rounds = measured.timed_of(state.clock.rounds_s())  # one per stats.data entry
    info = measured.info | generation.generation_metrics(
        rounds, gpt2_case.batch_size, gpt2_case.seq_len, new_tokens
    )
    benchmark.extra_info.update(info)
