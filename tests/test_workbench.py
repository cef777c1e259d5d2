"""Workbench end to end on the tiny preset with a stand-in benchmark fixture: what each phase's
benchmark records, and from which rounds (no timing is asserted: the times are made up)."""

import statistics

import pytest
from helpers import FakeBenchmark, count_profile_passes

from gpt2_fixtures.bench import distill, generation, memory, settings, steps
from gpt2_fixtures.bench import workbench as workbench_module
from gpt2_fixtures.bench.workbench import Workbench
from gpt2_fixtures.config import Case, parse_optimization

SDPA = parse_optimization("sdpa")
ROUNDS, WARMUP = 3, 1
# Tokenizing the corpus, building models and profiling take about a minute on 2 shared cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench():
    s = settings.resolve(
        device="cpu", batch_sizes=(1,), seq_lens=(16,), rounds=ROUNDS, warmup=WARMUP,
        prompt_lens=(16,), new_tokens=(4,), teacher="tiny", control="matmul",
    )  # fmt: skip
    b = Workbench(s)
    yield b
    b.free_model()


def test_infer_records_loss_as_null_and_throughput_from_the_median(bench):
    case = Case("infer", SDPA, 1, 16)
    model = bench.model(case)
    step, _ = steps.infer_step(model, bench.batch(case), SDPA, "cpu")
    benchmark = FakeBenchmark()
    info = bench.measure(benchmark, case, step, model).info
    assert "loss" in info and info["loss"] is None  # README: null where it does not apply
    times = benchmark.stats.stats.data
    assert info["samples_per_s"] == pytest.approx(1 / statistics.median(times))
    assert info["samples_per_s_mean"] == pytest.approx(statistics.fmean(1 / t for t in times))
    assert info["tokenizer"] == "embedded"
    if info["memory_kind"] == "cpu_rss":
        assert 0 < info["footprint_memory_mb"] < info["peak_memory_mb"]


def test_generate_latencies_come_from_the_timed_rounds_only(bench):
    case = generation.grid([SDPA], bench.settings.generate)[0]
    model = bench.model(case)
    step, state = generation.generate_step(model, bench.batch(case), SDPA, "cpu", 4)
    measured = bench.measure(FakeBenchmark(), case, step, model)  # counts 1 x 4 new tokens
    every_call = state.clock.rounds_s()
    # the warmup, the timed rounds, the settled memory steps and the profiled one
    assert len(every_call) == measured.calls > ROUNDS + WARMUP
    rounds = measured.timed_of(every_call)
    assert rounds == every_call[measured.timed.start : measured.timed.stop]
    assert measured.timed.stop < len(every_call)  # the settled steps came after them
    m = generation.generation_metrics(rounds, 1, 16, 4)
    assert len(m["ttft_round_ms"]) == len(m["tpot_round_ms"]) == len(measured.times) == ROUNDS
    assert m["ttft_ms"] == pytest.approx(statistics.fmean(m["ttft_round_ms"]))


def test_distill_teacher_share_comes_from_the_timed_rounds_only(bench):
    case = distill.grid([SDPA], bench.distill_options())[0]
    student, teacher = bench.model(case), bench.teacher(case)
    step, distiller = distill.distill_step(student, teacher, bench.batch(case), SDPA, "cpu", 2, 0.5)
    measured = bench.measure(FakeBenchmark(), case, step, student)
    shares = distiller.teacher_shares()
    assert len(shares) == measured.calls
    assert len(measured.timed_of(shares)) == len(measured.times) == ROUNDS


def test_one_profiled_step_gives_the_counters_and_the_attention_kernel(bench, monkeypatch):
    passes = count_profile_passes(monkeypatch)
    case = Case("infer", SDPA, 1, 16)
    model = bench.model(case)
    step, _ = steps.infer_step(model, bench.batch(case), SDPA, "cpu")
    info = bench.measure(FakeBenchmark(), case, step, model).info
    if info["memory_kind"] != "cpu_rss":
        pytest.skip("no resettable resident peak here: no settled profile to reuse")
    assert passes == [False]  # no profile of its own for the kernel
    assert info["attn_kernel"] == "flash" and info["ops_per_step"] > 0


def test_without_a_settled_profile_the_kernel_call_is_counted_with_the_step(bench, monkeypatch):
    """No resettable peak: no settled steps, so the kernel comes from one more call, which the
    per-call records must still line up with."""

    class Lifetime(memory.CpuRssTracker):
        def __init__(self):
            self.kind = "cpu_rss_lifetime"

    monkeypatch.setattr(workbench_module, "memory_tracker", lambda device: Lifetime())
    case = generation.grid([SDPA], bench.settings.generate)[0]
    model = bench.model(case)
    step, state = generation.generate_step(model, bench.batch(case), SDPA, "cpu", 4)
    measured = bench.measure(FakeBenchmark(), case, step, model)
    assert measured.info["attn_kernel"] == "flash"
    assert "ops_per_step" not in measured.info  # no settled profile: no counters
    every_call = state.clock.rounds_s()
    assert len(every_call) == measured.calls == WARMUP + ROUNDS + 1
    assert len(measured.timed_of(every_call)) == ROUNDS
