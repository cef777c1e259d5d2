"""Metric arithmetic, memory trackers and the control workload (no timing asserted)."""

import mmap
import statistics
import subprocess
import sys

import pytest
import torch
from helpers import FakeBenchmark

from gpt2_fixtures.bench import counters, measure, memory


def settled(*args, **kwargs):
    """The extra_info keys of memory.settle (without its profile)."""
    return memory.settle(*args, **kwargs)[0]


class FakeMemory:
    kind = "fake"

    def __init__(self, peaks, reserved=None):
        self.peaks, self.reserved, self.resets = list(peaks), reserved, 0

    def reset(self):
        self.resets += 1

    def release(self):
        self.releases = getattr(self, "releases", 0) + 1

    def read(self):
        return self.peaks.pop(0), self.reserved


def test_mean_std():
    assert measure.mean_std([2.0]) == (2.0, 0.0)
    mean, std = measure.mean_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(1.0)
    assert measure.mean_std([]) == (None, None)


def test_round_metrics_from_per_round_times():
    hooks = measure.RoundHooks(FakeMemory([99.0, 10.0, 12.0, 11.0]), control=None)
    for _ in range(4):  # one warmup round + three measured rounds
        hooks.setup()
        hooks.teardown()
    times = [0.5, 0.25, 1.0]
    m = measure.round_metrics(times, samples=4, tokens=4 * 128, hooks=hooks)
    # Throughput from the median round (0.5 s), as every table of medians shows it
    # (docs/measuring.md, "Throughput");
    # the mean of the per-round rates keeps its own name, the std stays the rates' std.
    assert m["samples_per_s"] == pytest.approx(4 / 0.5)
    assert m["samples_per_s_mean"] == pytest.approx((8 + 16 + 4) / 3)
    assert m["samples_per_s_std"] == pytest.approx(6.110100926607787)
    assert m["tokens_per_s"] == pytest.approx(m["samples_per_s"] * 128)
    assert m["tokens_per_s_mean"] == pytest.approx(m["samples_per_s_mean"] * 128)
    assert m["tokens_per_s_std"] == pytest.approx(m["samples_per_s_std"] * 128)
    # The warmup round's 99 MB is dropped: only measured rounds count.
    assert m["peak_memory_mb"] == 12.0
    assert m["peak_memory_mb_std"] == pytest.approx(1.0)
    assert m["memory_kind"] == "fake" and m["peak_reserved_mb"] is None
    assert m["control_round_s"] == [] and m["time_ratio_median"] is None
    assert m["control_kind"] is None
    assert hooks.memory.resets == 4


def test_control_ratio_is_per_round():
    class FixedControl:
        kind = "fixed"

        def __init__(self):
            self.values = [9.0, 0.1, 0.2, 0.4]

        def run(self):
            return self.values.pop(0)

    hooks = measure.RoundHooks(FakeMemory([1.0] * 4, reserved=5.0), FixedControl())
    for _ in range(4):
        hooks.setup()
        hooks.teardown()
    m = measure.round_metrics([0.3, 0.2, 1.2], samples=1, tokens=10, hooks=hooks)
    assert m["control_round_s"] == [0.1, 0.2, 0.4]
    assert m["time_ratio_median"] == pytest.approx(3.0)  # ratios 3, 1, 3
    assert m["peak_reserved_mb"] == 5.0
    assert m["control_kind"] == "fixed"


def test_page_faults_are_counted_inside_each_round_not_in_the_control(monkeypatch):
    counter = iter([100, 130, 130, 1130])  # read at each setup's end and teardown's start

    class FaultingControl:  # its faults happen before the round's count starts
        kind = "fixed"

        def run(self):
            return 0.1

    monkeypatch.setattr(measure, "page_faults", lambda: next(counter))
    hooks = measure.RoundHooks(FakeMemory([1.0] * 2), FaultingControl())
    for _ in range(2):  # one warmup round + one measured round
        hooks.setup()
        hooks.teardown()
    assert hooks.faults == [30.0, 1000.0]
    m = measure.round_metrics([0.3], samples=1, tokens=10, hooks=hooks)
    assert m["round_page_faults"] == [1000]


def test_page_faults_of_this_process_grow_when_fresh_memory_is_touched():
    pages = 4096
    fresh = mmap.mmap(-1, pages * mmap.PAGESIZE)  # anonymous: no page is there until touched
    if hasattr(mmap, "MADV_NOHUGEPAGE"):  # one 2 MiB fault would serve 512 pages
        fresh.madvise(mmap.MADV_NOHUGEPAGE)
    before = measure.page_faults()
    for page in range(pages):
        fresh[page * mmap.PAGESIZE] = 1
    assert measure.page_faults() - before >= pages
    fresh.close()


def test_cpu_rss_tracker_sees_a_new_peak_after_reset():
    tracker = memory.CpuRssTracker()
    assert tracker.kind in ("cpu_rss", "cpu_rss_lifetime")
    # Earlier tests may leave freed but resident heap that would serve the blob without a fault.
    memory.trim_heap()
    tracker.reset()
    before, reserved = tracker.read()
    assert reserved is None and before > 0
    blob = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
    blob += 1
    after, _ = tracker.read()
    del blob
    memory.trim_heap()  # the plugin's steady malloc setting keeps freed blocks in the heap
    assert after >= before + 32  # at least half of it shows up in the high-water mark
    if tracker.kind == "cpu_rss":
        tracker.reset()
        again, _ = tracker.read()
        assert again < after  # the reset brought the mark back down


def test_memory_tracker_kind_per_device():
    assert memory.memory_tracker("cpu").kind.startswith("cpu_rss")
    assert memory.CudaMemoryTracker.kind == "cuda_allocated"


def test_one_settled_step_reads_a_peak_and_no_spread(monkeypatch):
    monkeypatch.setattr(memory, "SETTLED_ROUNDS", 1)
    tracker = FakeMemory([520.0, 999.0])
    tracker.kind = "cpu_rss"
    info = settled(lambda: None, tracker, base_mb=500.0)
    assert info["peak_memory_mb"] == 520.0 and info["footprint_memory_mb"] == 20.0
    # one process's one step measures no spread: null, not a made-up 0
    assert info["peak_memory_mb_std"] is None and info["footprint_memory_mb_std"] is None


def test_settled_memory_reads_one_peak_per_untimed_step(monkeypatch):
    monkeypatch.setattr(memory, "SETTLED_ROUNDS", 3)
    peaks = [550.0, 500.0, 525.0]
    tracker = FakeMemory([*peaks, 999.0])  # 999: a read after the settled rounds, never taken
    tracker.kind = "cpu_rss"
    calls = []
    info = settled(lambda: calls.append(tracker.resets), tracker)
    # every step runs right after its own reset; then one profiled step (step_allocated_mb)
    assert calls == [*range(1, memory.SETTLED_ROUNDS + 1), memory.SETTLED_ROUNDS]
    assert info["step_allocated_mb"] == 0.0  # the step allocated no tensor
    assert info["peak_memory_mb"] == 550.0  # the highest round's, not the last one's
    assert info["peak_memory_mb_std"] == pytest.approx(statistics.stdev(peaks))


def test_settled_memory_combines_ranks_before_the_statistics():
    tracker = FakeMemory([500.0] * memory.SETTLED_ROUNDS)
    tracker.kind = "cpu_rss"
    info = settled(lambda: None, tracker, reduce=lambda p: [x + 100 for x in p])
    assert info == {
        "peak_memory_mb": 600.0,
        "peak_memory_mb_std": 0.0,
        "step_allocated_mb": 100.0,
        # the profiled step's totals go through the same reduction (one call for all of them)
        "ops_per_step": 100,
        "host_syncs_per_step": 100,
        "allocs_per_step": 100,
        "ops_by_name": {},
    }


def test_settled_memory_on_cuda_reads_reserved_too(monkeypatch):
    monkeypatch.setattr(memory, "SETTLED_ROUNDS", 2)
    tracker = FakeMemory([300.0, 310.0, 300.0, 300.0, 300.0], reserved=512.0)
    tracker.kind = "cuda_allocated"
    profiled = []

    def fake_profile(step, cuda=False):
        profiled.append(cuda)
        return counters.from_events(["aten::mm"], [], [("kernel", "gemm")], cuda=cuda)

    monkeypatch.setattr(counters, "profile_step", fake_profile)
    info = settled(lambda: None, tracker)
    assert info["peak_memory_mb"] == 310.0 and info["peak_reserved_mb"] == 512.0
    assert tracker.resets == memory.SETTLED_ROUNDS
    # the profiled step (CUDA activities on) starts from released memory too; no
    # step_allocated_mb on CUDA, where the allocator's peak is exact already
    assert tracker.releases == memory.SETTLED_ROUNDS + 1 and profiled == [True]
    assert info["kernel_launches_per_step"] == 1 and "step_allocated_mb" not in info


def test_round_hooks_release_the_control_before_the_settled_steps():
    class Twin:
        kind = "twin-infer"

        def run(self):
            return 0.1

    tracker = FakeMemory([400.0] * memory.SETTLED_ROUNDS)
    tracker.kind = "cpu_rss"
    hooks = measure.RoundHooks(tracker, Twin())
    seen = []
    info = hooks.settled_memory(lambda: seen.append(hooks.control))
    # no step ran beside the control's tensors: the five settled ones nor the profiled one
    assert seen == [None] * (memory.SETTLED_ROUNDS + 1)
    assert info["step_allocated_mb"] == 0.0 and info["ops_per_step"] == 0
    assert info["peak_memory_mb"] == 400.0 and info["peak_memory_mb_std"] == 0.0


def test_settled_memory_footprint_is_the_peak_above_the_base(monkeypatch):
    monkeypatch.setattr(memory, "SETTLED_ROUNDS", 2)
    tracker = FakeMemory([550.0, 525.0, 500.0, 500.0, 500.0][: memory.SETTLED_ROUNDS])
    tracker.kind = "cpu_rss"
    info = settled(lambda: None, tracker, base_mb=420.0)
    assert info["footprint_memory_mb"] == pytest.approx(130.0)
    assert info["footprint_memory_mb_std"] == pytest.approx(info["peak_memory_mb_std"])


def test_settled_footprint_is_reduced_per_rank_before_the_max():
    tracker = FakeMemory([500.0] * memory.SETTLED_ROUNDS)
    tracker.kind = "cpu_rss"
    seen = []

    def reduce(values):
        seen.append(list(values))
        return [v + 1 for v in values]

    info = settled(lambda: None, tracker, reduce=reduce, base_mb=400.0)
    assert seen[0] == [100.0] * memory.SETTLED_ROUNDS  # this rank's own footprints
    assert info["footprint_memory_mb"] == 101.0 and info["peak_memory_mb"] == 501.0


def test_resident_mb_follows_what_the_process_holds():
    memory.trim_heap()
    before = memory.resident_mb("cpu")
    if before is None:
        pytest.skip("no /proc/self/status on this system: no CPU footprint")
    blob = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
    held = memory.resident_mb("cpu")
    del blob
    assert held is not None and held >= before + 32


def test_resident_mb_on_cuda_is_what_the_allocator_holds(monkeypatch):
    """No GPU here: the CUDA branch reads memory_allocated of the case's device, nothing else."""
    seen = []

    def allocated(device=None):
        seen.append(device)
        return 3 * memory.MB

    monkeypatch.setattr(torch.cuda, "memory_allocated", allocated)
    assert memory.resident_mb("cuda:1") == 3.0
    assert seen == [torch.device("cuda:1")]


def test_measure_case_picks_the_timed_calls_out_of_every_call_of_the_step():
    records = []
    counted = measure.CountedStep(lambda: records.append(len(records)))
    counted()  # a call before the rounds (prepare: compile, attention-kernel profile)
    tracker = FakeMemory([1.0] * 20)
    tracker.kind = "cpu_rss"
    hooks = measure.RoundHooks(tracker, control=None)
    plan = measure.RoundPlan(most=3, warmup=2)
    m = measure.measure_case(FakeBenchmark(), counted, hooks, plan, (1, 8), base_mb=0.5)
    # 1 prepare + 2 warmup + 3 timed + 5 settled memory steps + 1 profiled for allocations
    assert counted.calls == len(records) == 1 + 2 + 3 + memory.SETTLED_ROUNDS + 1
    assert m.timed == range(3, 6)
    assert m.timed_of(records) == [3, 4, 5]  # not the last three calls (settled steps)
    assert len(m.timed_of(records)) == len(m.times)
    assert m.info["footprint_memory_mb"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="per-call records"):
        m.timed_of(records[:-1])


def test_every_timed_round_has_a_control_right_before_and_right_after_it():
    events = []

    class LoggedControl:
        kind = "logged"

        def __init__(self):
            self.values = iter([9.0, 0.1, 0.2, 0.4, 0.8])

        def run(self):
            events.append("control")
            return next(self.values)

    counted = measure.CountedStep(lambda: events.append("step"))
    tracker = FakeMemory([1.0] * 20)
    tracker.kind = "cpu_rss"
    hooks = measure.RoundHooks(tracker, LoggedControl())
    plan = measure.RoundPlan(most=3, warmup=1)
    m = measure.measure_case(FakeBenchmark(), counted, hooks, plan, (1, 8))
    # warmup and 3 timed rounds, each after its control; one more control after the last round;
    # the settled memory steps run once the control is released
    settled = ["step"] * (memory.SETTLED_ROUNDS + 1)
    assert events == ["control", "step"] * 4 + ["control"] + settled
    assert m.info["control_round_s"] == [0.1, 0.2, 0.4]
    assert m.info["control_after_round_s"] == [0.2, 0.4, 0.8]
    # without a control there is nothing after either
    hooks = measure.RoundHooks(tracker, control=None)
    step = measure.CountedStep(lambda: None)
    m = measure.measure_case(FakeBenchmark(), step, hooks, plan, (1, 8))
    assert m.info["control_after_round_s"] is None and m.info["control_round_s"] == []


def test_the_control_after_the_last_round_is_reduced_across_ranks():
    hooks = measure.RoundHooks(FakeMemory([1.0] * 4), control=None)
    hooks.control_s, hooks.control_after_s = [0.1, 0.2], 0.3
    hooks.reduce(lambda values: [v * 2 for v in values])
    assert hooks.control_s == [0.2, 0.4] and hooks.control_after_s == 0.6
    assert hooks.controls_after(2) == [0.4, 0.6]


def test_measure_case_reduces_every_per_round_value_across_ranks():
    counted = measure.CountedStep(lambda: None)
    tracker = FakeMemory([1.0] * 20)
    tracker.kind = "cpu_rss"
    hooks = measure.RoundHooks(tracker, control=None)
    calls = []

    def reduce(values):
        calls.append(len(values))
        return [v * 2 for v in values]

    plan = measure.RoundPlan(most=2, warmup=0)
    m = measure.measure_case(FakeBenchmark(), counted, hooks, plan, (1, 1), reduce=reduce)
    assert m.times == pytest.approx([0.2, 0.4])  # the job's rounds: the slowest rank's
    assert hooks.peaks_mb == [2.0, 2.0]
    assert m.info["peak_memory_mb"] == 2.0 and m.info["footprint_memory_mb"] is None
    assert m.info["rounds_why"] == "fixed: 2 rounds (no round budget)"


@pytest.mark.parametrize(
    ("budget", "warm_s", "rounds", "why"),
    [
        (2.0, 0.8, 10, "budget 2 s / warm step 800.0 ms = 3 rounds, raised to the minimum 10"),
        (2.0, 0.15, 14, "budget 2 s / warm step 150.0 ms = 14 rounds"),
        (2.0, 0.024, 20, "budget 2 s / warm step 24.0 ms = 84 rounds, capped at 20"),
        (2.0, 0.1, 20, "budget 2 s / warm step 100.0 ms = 20 rounds"),
        (None, 0.8, 20, "fixed: 20 rounds (no round budget)"),
        (0.0, 0.8, 20, "fixed: 20 rounds (no round budget)"),
        (2.0, None, 20, "fixed: 20 rounds (no warmup round to plan from)"),
    ],
)
def test_a_round_budget_gives_long_steps_fewer_rounds_within_the_bounds(
    budget, warm_s, rounds, why
):
    plan = measure.RoundPlan(most=20, warmup=2, budget_s=budget, least=10)
    assert plan.rounds(warm_s) == (rounds, why)


def test_the_minimum_never_exceeds_the_most_rounds():
    plan = measure.RoundPlan(most=3, warmup=1, budget_s=2.0, least=10)
    assert plan.rounds(5.0) == (
        3,
        "budget 2 s / warm step 5000.0 ms = 1 rounds, raised to the minimum 3",
    )


class FakeClock:
    """perf_counter that advances by the step's declared seconds (no real timing)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_measure_case_plans_its_rounds_from_the_last_warmup_step(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(measure.time, "perf_counter", clock)
    durations = iter([3.0, 0.5])  # a cold first warmup step, then a warm one

    def step():
        clock.now += next(durations, 0.5)

    counted = measure.CountedStep(step)
    tracker = FakeMemory([1.0] * 30)
    tracker.kind = "cpu_rss"
    hooks = measure.RoundHooks(tracker, control=None)
    plan = measure.RoundPlan(most=8, warmup=2, budget_s=2.0, least=3)
    m = measure.measure_case(FakeBenchmark(), counted, hooks, plan, (1, 1))
    assert len(m.times) == 4  # 2 s / 0.5 s, not the cold 3 s nor --gpt2-rounds' 8
    assert m.info["warm_step_s"] == pytest.approx(0.5)
    assert m.info["rounds_why"] == "budget 2 s / warm step 500.0 ms = 4 rounds"
    assert m.timed == range(2, 6)  # after the two warmup calls
    assert len(hooks.measured(hooks.peaks_mb, 4)) == 4


def test_ranks_plan_from_the_slowest_rank_warm_step(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(measure.time, "perf_counter", clock)

    def step():
        clock.now += 0.25

    tracker = FakeMemory([1.0] * 30)
    tracker.kind = "cpu_rss"
    hooks = measure.RoundHooks(tracker, control=None)
    plan = measure.RoundPlan(most=8, warmup=1, budget_s=2.0, least=2)
    m = measure.measure_case(
        FakeBenchmark(), measure.CountedStep(step), hooks, plan, (1, 1),
        reduce=lambda values: [v * 2 for v in values],  # another rank twice as slow
    )  # fmt: skip
    assert m.info["warm_step_s"] == pytest.approx(0.5) and len(m.times) == 4


def test_settled_memory_leaves_lifetime_peaks_alone():
    tracker = FakeMemory([])
    tracker.kind = "cpu_rss_lifetime"
    assert settled(lambda: pytest.fail("no extra step"), tracker) == {}


FAULTS_PER_STEP = """
import resource, statistics, sys
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from gpt2_fixtures.bench import memory

print(memory.configure_malloc(sys.argv[1]))
torch.manual_seed(0)
torch.set_num_threads(1)
model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=128))
batch = torch.randint(0, 50257, (1, 128))
opt = torch.optim.AdamW(model.parameters())

def step():
    model(input_ids=batch, labels=batch).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

for _ in range(3):
    step()
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(statistics.median(faults))
"""


@pytest.mark.skipif(
    memory.glibc() is None,
    reason="the steady setting needs glibc's mallopt",
)
def test_steady_malloc_keeps_a_warmed_up_training_step_free_of_page_faults():
    # A fresh process: the allocator's state is what is tested. With glibc's own dynamic
    # thresholds the same step re-faulted a median 18-25k pages here (memory.configure_malloc).
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_STEP, "steady"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split("\n")
    assert out[0].startswith("glibc mmap_max=0")
    assert float(out[1]) < 100


HEAP_AFTER_FREE = """
import ctypes, sys
from gpt2_fixtures.bench import memory

class MallInfo2(ctypes.Structure):  # glibc >= 2.33, malloc.h
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

if len(sys.argv) > 1:  # the threshold of another release
    memory.STEADY_TRIM_THRESHOLD = int(sys.argv[1])
print(memory.configure_malloc("steady"))
libc = memory.glibc()
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
block = libc.malloc(1200 << 20)  # above the 1 GiB of 0.5.1, never touched: no page is faulted
libc.free(block)
print(libc.mallinfo2().arena >> 20)
"""


@pytest.mark.skipif(
    memory.glibc() is None or not hasattr(memory.glibc(), "mallinfo2"),
    reason="needs glibc >= 2.33 (mallopt, mallinfo2)",
)
def test_steady_malloc_never_trims_the_heap_on_free():
    # A training step at batch 4 x 256 freed more than the 1 GiB threshold of 0.5.1 at its heap
    # top: glibc gave it back and the next round re-faulted it (docs/measuring.md, "Host
    # allocator"). Steady now keeps any freed block; the old threshold, run the same way, trims.
    def heap_mb(*threshold: str) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", HEAP_AFTER_FREE, *threshold],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()
        return " ".join(out[:-1]), int(out[-1])

    label, kept_mb = heap_mb()
    assert label == "glibc mmap_max=0 trim_threshold=never"
    assert kept_mb >= 1200
    assert heap_mb(str(1 << 30))[1] < 100


def test_malloc_setting_is_recorded_and_checked(monkeypatch):
    monkeypatch.setattr(memory, "_malloc_setting", "system")
    assert memory.configure_malloc("system") == "system" == memory.malloc_setting()
    with pytest.raises(ValueError, match="malloc mode 'fast': expected one of steady, system"):
        memory.configure_malloc("fast")
    monkeypatch.setattr(memory, "_set_glibc_steady", lambda: False)  # musl, macOS
    assert memory.configure_malloc("steady") == "system"
    monkeypatch.setattr(memory, "_set_glibc_steady", lambda: True)
    assert memory.configure_malloc("steady").startswith("glibc mmap_max=0")
    assert memory.malloc_setting() == memory.configure_malloc("steady")


def test_step_allocated_mb_counts_the_tensors_a_step_holds_at_its_peak():
    """Exact on a CPU, where the resident set is not: 40 MB more held through the step's peak
    is 40 MB more, a buffer freed before the peak adds nothing, and memory alive before the
    step is not counted."""
    kept = torch.ones(8 * 2**20, dtype=torch.uint8)  # alive before: not the step's

    def step(extra_mb: int = 0, early_mb: int = 0) -> None:
        early = torch.ones(early_mb * 2**20, dtype=torch.uint8)
        del early
        held = torch.ones(extra_mb * 2**20, dtype=torch.uint8)
        work = torch.ones(16 * 2**20, dtype=torch.uint8)
        del work, held

    plain = memory.step_allocated_mb(step)
    assert plain == pytest.approx(16.0, abs=0.01)
    assert memory.step_allocated_mb(lambda: step(extra_mb=40)) == pytest.approx(56.0, 0.001)
    assert memory.step_allocated_mb(lambda: step(early_mb=10)) == pytest.approx(16.0, 0.001)
    assert kept.sum() > 0


def test_what_the_process_keeps_for_good_is_frozen_once(monkeypatch):
    """gc.freeze before the first model: later untimed collections skip the startup objects."""
    froze = []
    monkeypatch.setattr(memory, "_kept", False)
    monkeypatch.setattr(memory.gc, "freeze", lambda: froze.append(True))
    memory.keep_for_good()
    memory.keep_for_good()
    assert froze == [True]
