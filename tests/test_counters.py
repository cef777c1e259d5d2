"""The exact counters of a step (bench/counters.py): the counting on fake events (CUDA's too,
which cannot run here), and on real small steps under the profiler."""

from __future__ import annotations

import pytest
import torch
from helpers import count_profile_passes, load_tool

from gpt2_fixtures.bench import counters, measure, memory
from gpt2_fixtures.results.metrics import COUNTERS


def test_ops_syncs_and_allocations_from_fake_cpu_events():
    ops = ["aten::mm", "aten::item", "aten::_local_scalar_dense", "aten::mm", "Optimizer.step"]
    allocs = [(1, 100), (2, 50), (3, -100), (4, 30), (4, -50)]
    profile = counters.from_events(ops, allocs)
    info = profile.counters()
    assert info == {
        "ops_per_step": 4,  # aten ops only, nested calls included: every dispatch
        "host_syncs_per_step": 1,  # a CPU counts the scalar reads
        "allocs_per_step": 3,
        "ops_by_name": {"aten::_local_scalar_dense": 1, "aten::item": 1, "aten::mm": 2},
    }
    # ties: the allocation at t=4 counts before the free at t=4, so the peak is 150
    assert profile.peak_bytes == 150


def test_cuda_counts_blocking_waits_kernels_and_device_to_host_copies():
    """One .item() on CUDA: the scalar read, a DtoH copy, one cudaStreamSynchronize; the step's
    closing torch.cuda.synchronize: one cudaDeviceSynchronize. Untested on a GPU here."""
    ops = ["aten::addmm", "aten::item", "aten::_local_scalar_dense"]
    device = [
        ("cuda_runtime", "cudaLaunchKernel"),
        ("kernel", "ampere_sgemm_128x64_tn"),
        ("cuda_driver", "cuLaunchKernel"),
        ("kernel", "void at::native::vectorized_elementwise_kernel<...>"),
        ("cuda_runtime", "cudaMemcpyAsync"),
        ("gpu_memcpy", "Memcpy DtoH (Device -> Pageable)"),
        ("cuda_runtime", "cudaStreamSynchronize"),
        ("gpu_memcpy", "Memcpy HtoD (Pageable -> Device)"),
        ("gpu_memset", "Memset (Device)"),
        ("cuda_runtime", "cudaDeviceSynchronize"),
        ("cpu_op", "aten::addmm"),  # kineto's own copy of a host op: not a device event
    ]
    info = counters.from_events(ops, [], device, cuda=True).counters()
    assert info["host_syncs_per_step"] == 2  # the scalar read's wait and the explicit sync
    assert info["kernel_launches_per_step"] == 2  # kernels, not memcpy or memset
    assert info["dtoh_copies_per_step"] == 1
    assert info["ops_per_step"] == 3


def test_no_cuda_keys_off_cuda_and_every_key_is_registered():
    info = counters.from_events(["aten::mm"], []).counters()
    assert "kernel_launches_per_step" not in info
    cuda = counters.from_events([], [], cuda=True).counters()
    registered = {m.key for m in COUNTERS}
    assert set(cuda) - {"ops_by_name"} <= registered
    assert set(counters.TOTAL_KEYS) == {k for k in registered if k.endswith("_per_step")}


def test_totals_reduce_across_ranks_in_one_call():
    calls = []

    def reduce(values):
        calls.append(values)
        return [v + 1 for v in values]

    info = counters.reduced({"ops_per_step": 4, "allocs_per_step": 2, "ops_by_name": {}}, reduce)
    assert calls == [[4.0, 2.0]]
    assert info == {"ops_per_step": 5, "allocs_per_step": 3, "ops_by_name": {}}


def _small_step(reads: int = 0):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    x = torch.randn(8, 16)

    def step() -> None:
        loss = model(x).square().mean()
        for _ in range(reads):
            loss.item()
        loss.backward()

    return step


def test_a_real_step_counts_two_added_host_reads_exactly():
    plain, reads = counters.profile_step(_small_step()), counters.profile_step(_small_step(2))
    assert reads.counters()["host_syncs_per_step"] == plain.counters()["host_syncs_per_step"] + 2
    assert (
        reads.ops["aten::_local_scalar_dense"] - plain.ops.get("aten::_local_scalar_dense", 0) == 2
    )
    assert reads.ops["aten::item"] == plain.ops.get("aten::item", 0) + 2
    assert plain.ops["aten::addmm"] == 2 and plain.counters()["allocs_per_step"] > 0


def test_a_real_step_gives_the_same_counters_every_call():
    step = _small_step()
    step()  # the first call creates .grad: later calls are the steady step
    first, again = counters.profile_step(step), counters.profile_step(step)
    assert first.counters() == again.counters()
    assert first.peak_bytes == again.peak_bytes


def test_step_allocated_mb_and_the_counters_come_from_one_profiler_pass(monkeypatch):
    passes = count_profile_passes(monkeypatch)
    tracker = memory.CpuRssTracker()
    if tracker.kind != "cpu_rss":
        pytest.skip("no resettable resident peak here (/proc/self/clear_refs)")
    info = measure.RoundHooks(tracker, None).settled_memory(_small_step())
    assert passes == [False]
    assert info["step_allocated_mb"] > 0 and info["ops_per_step"] > 0


def test_compile_counters_are_deltas_and_rounds_count_any_compilation():
    before = counters.CompileMark(graphs=3, graph_breaks=1, frame_compiles=5, recompiles=2)
    warm = counters.CompileMark(graphs=5, graph_breaks=2, frame_compiles=8, recompiles=3)
    after = counters.CompileMark(graphs=6, graph_breaks=2, frame_compiles=9, recompiles=4)
    assert counters.compile_counters(before, warm, after) == {
        "compile_graphs": 2,
        "compile_graph_breaks": 1,
        "compile_recompiles": 1,
        "recompiles_in_rounds": 1,
    }
    assert counters.compile_counters(None, warm, after) == {}


def test_round_hooks_probe_before_the_first_and_after_the_last_timed_round():
    ticks = iter(range(100))
    hooks = measure.RoundHooks(memory.CpuRssTracker(), None, probe=lambda: next(ticks))
    for _ in range(2 + 3):  # two warmup rounds, three timed
        hooks.setup()
        hooks.teardown()
    assert hooks.timed_probes(3) == (4, 9)
    assert measure.RoundHooks(memory.CpuRssTracker(), None).timed_probes(3) == (None, None)


def test_dynamo_marks_count_a_graph_break_and_a_recompile():
    torch._dynamo.reset()
    before = counters.compile_mark()
    assert before is not None

    def f(x):
        y = x.sin()
        torch._dynamo.graph_break()
        return y.cos()

    compiled = torch.compile(f, backend="eager", dynamic=False)
    compiled(torch.ones(3))
    warm = counters.compile_mark()
    compiled(torch.ones(5))  # another static shape: the frames compile again
    after = counters.compile_mark()
    found = counters.compile_counters(before, warm, after)
    assert found["compile_graph_breaks"] == 1 and found["compile_graphs"] == 2
    assert found["compile_recompiles"] == 0 and found["recompiles_in_rounds"] >= 1
    torch._dynamo.reset()


def test_gate_inject_adds_host_reads_that_the_counters_see() -> None:
    inject = load_tool("gate_inject")
    assert inject.parse("reads=2, breaks=1") == {"reads": 2.0, "breaks": 1.0}
    step = _small_step()
    step()
    plain = counters.profile_step(step).counters()
    read = counters.profile_step(inject.wrap(step, {"reads": 2}, "cpu")).counters()
    assert read["host_syncs_per_step"] == plain["host_syncs_per_step"] + 2
    assert read["ops_per_step"] == plain["ops_per_step"] + 4  # aten::item and the scalar read


def test_gate_inject_reaches_the_workbench(monkeypatch) -> None:
    """The Workbench calls the measure_case it imported: the injection must replace that one."""
    from types import SimpleNamespace

    from gpt2_fixtures.bench import workbench

    inject = load_tool("gate_inject")
    monkeypatch.setenv(inject.ENV, "reads=2")
    monkeypatch.setattr(measure, "measure_case", measure.measure_case)
    monkeypatch.setattr(workbench, "measure_case", workbench.measure_case)
    original = workbench.measure_case
    inject.pytest_configure(SimpleNamespace(stash={}))
    assert workbench.measure_case is not original
    assert workbench.measure_case is measure.measure_case
