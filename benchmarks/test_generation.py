"""Greedy generation with the KV cache: end-to-end latency, TTFT, TPOT (docs/phases.md)."""

import pytest

from gpt2_fixtures.bench.phases import GENERATE


@pytest.mark.generation
def test_generate(benchmark, gpt2_case, gpt2_bench):
    model = gpt2_bench.model(gpt2_case)
    batch = gpt2_bench.batch(gpt2_case)  # the prompts: seq_len = prompt length
    step, state = GENERATE.step(gpt2_bench, gpt2_case, model, batch)
    # tokens_per_s counts generated tokens: batch x new tokens per call (GENERATE.tokens).
    measured = gpt2_bench.measure(benchmark, gpt2_case, step, model)
    # Exactly new_tokens per call; TTFT/TPOT of the timed rounds, one per stats.data entry.
    info = measured.info | GENERATE.record(gpt2_bench, gpt2_case, measured, state)
    benchmark.extra_info.update(info)
