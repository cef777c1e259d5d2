"""Generation phase: metric arithmetic, options and grid, the step on a micro model, a smoke run."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import documented_keys

from gpt2_fixtures.bench import generation, measure, phases, settings
from gpt2_fixtures.bench.generation import GenerateOptions, TokenClock, TokenTimes
from gpt2_fixtures.config import Case, parse_optimization

ROOT = Path(__file__).resolve().parents[1]
SDPA = parse_optimization("sdpa")


# -- arithmetic --------------------------------------------------------------------------------
def test_token_times_ttft_and_tpot():
    t = TokenTimes((0.10, 0.13, 0.16, 0.19))
    assert t.ttft_s == pytest.approx(0.10)
    assert t.tpot_s == pytest.approx(0.03)  # (0.19 - 0.10) / 3 gaps
    assert TokenTimes((0.05,)).tpot_s is None  # one token: no time per *later* token


def test_token_times_reject_empty_and_backwards():
    with pytest.raises(ValueError, match="without any"):
        TokenTimes(())
    with pytest.raises(ValueError, match="backwards"):
        TokenTimes((0.2, 0.1))


def test_generation_metrics_by_hand():
    # Round 1: ttft 100 ms, tpot (300-100)/2 = 100 ms; round 2: ttft 200 ms, tpot 200 ms.
    m = generation.generation_metrics([[0.1, 0.2, 0.3], [0.2, 0.4, 0.6]], 4, 16, 3)
    assert m["prompt_len"] == 16 and m["new_tokens"] == 3
    assert m["ttft_ms"] == pytest.approx(150.0)
    assert m["ttft_ms_std"] == pytest.approx(math.sqrt(2 * 50.0**2))  # sample std of 100, 200
    assert m["tpot_ms"] == pytest.approx(150.0)
    # decode throughput per round = batch / tpot: 4 / 0.1 = 40, 4 / 0.2 = 20 tokens/s.
    assert m["decode_tokens_per_s"] == pytest.approx(30.0)
    assert m["decode_tokens_per_s_std"] == pytest.approx(math.sqrt(2 * 10.0**2))


def test_generation_metrics_single_token_and_single_round():
    m = generation.generation_metrics([[0.25]], 1, 8, 1)
    assert m["ttft_ms"] == pytest.approx(250.0) and m["ttft_ms_std"] == 0.0
    assert m["tpot_ms"] is None and m["decode_tokens_per_s"] is None


class FakeClock:
    """Stamps are the numbers it is told; seconds are differences, like perf_counter."""

    def __init__(self, times):
        self.times = iter(times)

    def stamp(self):
        return next(self.times)

    def seconds(self, start, end):
        return end - start


def test_token_clock_records_per_round_and_keeps_scores():
    clock = TokenClock(FakeClock([10.0, 10.5, 10.7, 20.0, 20.2]))
    scores = torch.randn(2, 5)
    clock.start()
    assert clock(torch.zeros(2, 3), scores) is scores
    clock(torch.zeros(2, 4), scores)
    clock.start()
    clock(torch.zeros(2, 3), scores)
    assert clock.rounds_s() == [pytest.approx([0.5, 0.7]), pytest.approx([0.2])]


def test_generation_metrics_keep_each_round_in_order():
    # Three rounds: ttft 100, 300, 200 ms; tpot (t_last - t_first) / 2 = 50, 100, 25 ms.
    rounds = [[0.1, 0.15, 0.2], [0.3, 0.4, 0.5], [0.2, 0.225, 0.25]]
    m = generation.generation_metrics(rounds, 1, 8, 3)
    assert m["ttft_round_ms"] == pytest.approx([100.0, 300.0, 200.0])
    assert m["tpot_round_ms"] == pytest.approx([50.0, 100.0, 25.0])
    assert m["ttft_ms"] == pytest.approx(200.0)
    one_token = generation.generation_metrics([[0.1], [0.2]], 1, 8, 1)
    assert one_token["ttft_round_ms"] == pytest.approx([100.0, 200.0])
    assert one_token["tpot_round_ms"] is None  # no time per later token with one new token


def test_timed_rounds_of_the_clock_exclude_warmup_and_settled_steps():
    """The clock has a round per call of the step: 1 prepare, 2 warmup, 3 timed, 5 settled."""
    clock = TokenClock(FakeClock([t for i in range(11) for t in (10.0 * i, 10.0 * i + i)]))
    for _ in range(11):
        clock.start()
        clock(None, None)
    measured = measure.Measured([0.3, 0.4, 0.5], {}, range(3, 6), 11)
    rounds = measured.timed_of(clock.rounds_s())
    assert rounds == [[3.0], [4.0], [5.0]]  # the timed calls, aligned with stats.data
    m = generation.generation_metrics(rounds, 1, 8, 1)
    assert len(m["ttft_round_ms"]) == len(measured.times)
    assert m["ttft_ms"] == pytest.approx(4000.0)  # the last three rounds' mean would be 9000


# -- options and grid --------------------------------------------------------------------------
def test_resolve_options_device_defaults_and_explicit_values():
    cpu = generation.resolve_options("cpu", None, None, None, (1, 4), 1024)
    assert cpu == GenerateOptions((32,), (32,), (1,))
    cuda = generation.resolve_options("cuda", None, None, None, (1, 8, 32), 1024)
    assert cuda == GenerateOptions((128,), (128,), (1, 8, 32))
    given = generation.resolve_options("cpu", (16, 64), (8,), (2,), (1, 4), 1024)
    assert given == GenerateOptions((16, 64), (8,), (2,))


def test_resolve_options_rejects_prompt_plus_new_beyond_positions():
    with pytest.raises(ValueError, match="n_positions=1024"):
        generation.resolve_options("cpu", (1000,), (32,), None, (1,), 1024)


def test_grid_ids_and_new_tokens():
    cases = generation.grid([SDPA], GenerateOptions((32, 64), (16,), (1, 4)))
    assert [c.id for c in cases] == [
        "sdpa-fp32-b1-s32-n16",
        "sdpa-fp32-b1-s64-n16",
        "sdpa-fp32-b4-s32-n16",
        "sdpa-fp32-b4-s64-n16",
    ]
    assert {c.phase for c in cases} == {"generate"}
    assert generation.new_tokens_of(cases[0]) == 16
    with pytest.raises(ValueError, match="new-token count"):
        generation.new_tokens_of(Case("generate", SDPA, 1, 32))


def test_settings_resolve_takes_the_generation_options():
    s = settings.resolve(device="cpu", prompt_lens=(8,), new_tokens=(4, 6), batch_sizes=(2,))
    # the CPU default grid (int8 runs in the inference and generation phases)
    assert [r.id for r in s.optimizations] == ["eager-fp32", "sdpa-fp32", "sdpa-int8"]
    assert [c.id for c in phases.grid("generate", s)] == [
        "eager-fp32-b2-s8-n4",
        "eager-fp32-b2-s8-n6",
        "sdpa-fp32-b2-s8-n4",
        "sdpa-fp32-b2-s8-n6",
        "sdpa-int8-b2-s8-n4",
        "sdpa-int8-b2-s8-n6",
    ]
    assert "prompt_lens=8 new_tokens=4,6" in s.header()
    with pytest.raises(settings.SettingsError, match="n_positions"):
        settings.resolve(device="cpu", prompt_lens=(1020,), new_tokens=(8,))


# -- the step on a micro model -----------------------------------------------------------------
@pytest.fixture
def micro_model():
    from transformers import AutoModelForCausalLM, GPT2Config

    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64, vocab_size=97)
    config.bos_token_id = config.eos_token_id = 96
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()


def test_generate_step_makes_exactly_the_tokens_asked_even_past_eos(micro_model):
    prompt = torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        first = micro_model.generate(prompt, max_new_tokens=1, do_sample=False, pad_token_id=96)
    # Make the first greedy token of row 0 the EOS token: a plain generate now stops there.
    micro_model.generation_config.eos_token_id = int(first[0, -1])
    with torch.inference_mode():
        plain = micro_model.generate(prompt[:1], max_new_tokens=6, do_sample=False, pad_token_id=96)
    assert plain.shape[1] - 8 < 6  # the early stop this step must prevent

    step, state = generation.generate_step(micro_model, prompt, SDPA, "cpu", 6)
    step()
    step()
    assert state.generated == [6, 6]
    state.check_counts()
    rounds = state.clock.rounds_s()
    assert [len(r) for r in rounds] == [6, 6]
    assert all(0 < r[0] <= r[-1] for r in rounds)


def test_generate_step_clock_does_not_change_the_tokens(micro_model):
    prompt = torch.randint(0, 96, (1, 8), generator=torch.Generator().manual_seed(2))
    captured = {}
    original = micro_model.generate

    def spy(*args, **kwargs):
        captured["out"] = original(*args, **kwargs)
        return captured["out"]

    micro_model.generate = spy
    step, _ = generation.generate_step(micro_model, prompt, SDPA, "cpu", 5)
    step()
    with torch.inference_mode():
        reference = original(
            prompt, max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=96
        )
    assert torch.equal(captured["out"], reference)


def test_check_counts_fails_when_a_row_stopped_early():
    clock = TokenClock(FakeClock([0.0, 0.1, 0.2]))
    clock.start()
    clock(None, None)
    clock(None, None)
    state = generation.GenerationState(8, 2, clock, pad_token_id=7, generated=[2])
    state.last_new = torch.tensor([[3, 4], [5, 7]])  # row 1 ended and was padded
    with pytest.raises(generation.GenerationError, match=r"rows \[1\]"):
        state.check_counts()
    state.last_new = torch.tensor([[3, 4], [5, 6]])
    state.check_counts()


def test_check_counts_fails_on_a_short_generation():
    clock = TokenClock(FakeClock([0.0, 0.1, 0.2]))
    clock.start()
    clock(None, None)
    clock(None, None)
    state = generation.GenerationState(8, 3, clock, generated=[2])
    with pytest.raises(generation.GenerationError, match="exactly 3"):
        state.check_counts()


# -- smoke run of both new benchmark files -----------------------------------------------------
GEN_KEYS = {"ttft_ms", "tpot_ms", "decode_tokens_per_s", "prompt_len", "new_tokens"}
KD_KEYS = {"teacher", "student", "temperature", "alpha", "kd_loss", "teacher_share", "loss"}
COMMON = {"phase", "optimization", "tokens_per_s", "peak_memory_mb", "control_round_s"}


def test_generation_and_distillation_benchmarks_write_their_keys(tmp_path):
    out = tmp_path / "out.json"
    args = [
        *("benchmarks/test_generation.py", "benchmarks/test_distillation.py"),
        *("--gpt2-device", "cpu", "--gpt2-optimizations", "sdpa", "--gpt2-batch-sizes", "1"),
        *("--gpt2-seq-lens", "16", "--gpt2-prompt-lens", "8", "--gpt2-new-tokens", "4"),
        *("--gpt2-rounds", "2", "--gpt2-warmup", "0", "-p", "no:cacheprovider"),
        f"--benchmark-json={out}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    benches = {b["name"]: b for b in json.loads(out.read_text())["benchmarks"]}
    assert set(benches) == {"test_generate[sdpa-fp32-b1-s8-n4]", "test_distill[sdpa-fp32-b1-s16]"}
    gen = benches["test_generate[sdpa-fp32-b1-s8-n4]"]["extra_info"]
    kd = benches["test_distill[sdpa-fp32-b1-s16]"]["extra_info"]
    assert gen.keys() >= GEN_KEYS | COMMON and kd.keys() >= KD_KEYS | COMMON
    assert gen["phase"] == "generate" and (gen["prompt_len"], gen["new_tokens"]) == (8, 4)
    assert gen["ttft_ms"] > 0 and gen["tpot_ms"] > 0 and gen["decode_tokens_per_s"] > 0
    assert kd["phase"] == "distill" and (kd["teacher"], kd["student"]) == ("tiny-teacher", "tiny")
    assert (kd["temperature"], kd["alpha"]) == (2.0, 0.5)
    assert 0 < kd["teacher_share"] < 1 and math.isfinite(kd["kd_loss"])
    # one latency per timed round, in stats.data's order (docs/phases.md, "Generation")
    assert len(gen["ttft_round_ms"]) == len(gen["tpot_round_ms"]) == 2
    assert gen["loss"] is None
    undocumented = (gen.keys() | kd.keys()) - documented_keys()
    assert not undocumented, f"extra_info keys missing from the README: {sorted(undocumented)}"
