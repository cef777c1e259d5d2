"""Exact counters of a step: operators, host syncs, allocations, CUDA kernel launches from the
one profiled untimed step (``memory.settle``), and torch.compile's graphs, graph breaks
and recompiles over a case's warmup and timed rounds (docs/measuring.md, "Exact counters").

The counting is pure (``StepProfile.counters``, ``CompileMark``) and tested on fake events; the
torch profiler and dynamo are read in ``profile_step`` and ``compile_mark`` only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpt2_fixtures.results.metrics import COUNTERS, OPS_BY_NAME, SCALAR_READ_OP

# Every scalar read of a tensor (``.item()``, ``bool(t)``, ``int(t)``, ``float(t)``) dispatches
# SCALAR_READ_OP (aten::item calls it): on CUDA it copies to the host and waits for the stream.
# CUDA runtime calls that block the host until the device is done (kineto's "cuda_runtime").
SYNC_CALLS = frozenset({"cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventSynchronize"})
# kineto's activity types of device-side events (libkineto ActivityType names)
KERNEL, MEMCPY = "kernel", "gpu_memcpy"
RUNTIME = frozenset({"cuda_runtime", "cuda_driver"})


@dataclass(frozen=True)
class StepProfile:
    """What one profiled call of a step did: aten ops by name (nested calls included: every
    dispatch), allocation events (bytes, negative for a free, in time order), and on CUDA the
    runtime calls and device activities by name."""

    ops: Mapping[str, int]
    allocations: tuple[int, ...] = ()
    # every op name (any namespace, e.g. flash_attn::), once, in order of first call: which
    # attention kernel ran is read from it (prepare.attention_kernel)
    op_names: tuple[str, ...] = ()
    runtime: Mapping[str, int] = field(default_factory=dict)
    kernels: int = 0
    dtoh_copies: int = 0
    cuda: bool = False

    @property
    def peak_bytes(self) -> int:
        """The highest running sum of the allocation events (``memory.step_allocated_mb``)."""
        live = peak = 0
        for size in self.allocations:
            live += size
            peak = max(peak, live)
        return peak

    @property
    def scalar_reads(self) -> int:
        return self.ops.get(SCALAR_READ_OP, 0)

    @property
    def host_syncs(self) -> int:
        """Where the host waits for the device. On CUDA: the blocking runtime calls (every scalar
        read of a CUDA tensor, every blocking device-to-host copy and every explicit synchronize
        makes one). On a CPU: the scalar reads, which are syncs once the step runs on a GPU."""
        if not self.cuda:
            return self.scalar_reads
        return sum(n for name, n in self.runtime.items() if name in SYNC_CALLS)

    def counters(self) -> dict[str, Any]:
        """The ``extra_info`` keys: totals per step and the per-operator counts."""
        info: dict[str, Any] = {
            "ops_per_step": sum(self.ops.values()),
            "host_syncs_per_step": self.host_syncs,
            "allocs_per_step": sum(1 for size in self.allocations if size > 0),
        }
        if self.cuda:
            info["kernel_launches_per_step"] = self.kernels
            info["dtoh_copies_per_step"] = self.dtoh_copies
        info[OPS_BY_NAME] = dict(sorted(self.ops.items()))
        return info


# the totals reduced across ranks (the per-operator map stays the local rank's)
TOTAL_KEYS = tuple(m.key for m in COUNTERS if m.key.endswith("_per_step"))


def reduced(
    info: Mapping[str, Any], reduce: Callable[[list[float]], list[float]]
) -> dict[str, Any]:
    """The totals of ``counters()`` as the max over ranks (every rank calls ``reduce`` once)."""
    keys = [k for k in TOTAL_KEYS if k in info]
    values = reduce([float(info[k]) for k in keys])
    return {**info, **{k: int(v) for k, v in zip(keys, values, strict=True)}}


def from_events(
    ops: Iterable[str],
    allocations: Iterable[tuple[int, int]],
    device_events: Iterable[tuple[str, str]] = (),
    cuda: bool = False,
) -> StepProfile:
    """A StepProfile from plain events: op names in order of call, (time ns, bytes) allocation
    events, and (activity type, name) kineto events. At equal times allocations count before
    frees, so a tie never lowers the peak."""
    ops = list(ops)
    aten = Counter(name for name in ops if name.startswith("aten::"))
    ordered = sorted(allocations, key=lambda e: (e[0], e[1] < 0))
    runtime: Counter[str] = Counter()
    kernels = dtoh = 0
    for kind, name in device_events:
        if kind in RUNTIME:
            runtime[name] += 1
        elif kind == KERNEL:
            kernels += 1
        elif kind == MEMCPY and "DtoH" in name:
            dtoh += 1
    return StepProfile(
        ops=dict(aten),
        allocations=tuple(size for _, size in ordered),
        op_names=tuple(dict.fromkeys(ops)),
        runtime=dict(runtime),
        kernels=kernels,
        dtoh_copies=dtoh,
        cuda=cuda,
    )


def profile_step(step: Callable[[], None], cuda: bool = False) -> StepProfile:
    """One call of ``step`` under torch.profiler (memory events on; CUDA activities on CUDA):
    one profiler pass gives the allocation peak and every counter."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, profile_memory=True) as prof:
        step()
    results = prof.profiler.kineto_results
    ops: list[tuple[int, str]] = []
    allocations: list[tuple[int, int]] = []
    stack = list(results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            allocations.append((node.start_time_ns, node.extra_fields.alloc_size))
        elif node.tag == _EventType.TorchOp:
            ops.append((node.start_time_ns, node.name))
        stack.extend(node.children)
    device = [(e.activity_type(), e.name()) for e in results.events()] if cuda else []
    return from_events((name for _, name in sorted(ops)), allocations, device, cuda)


# ---------------------------------------------------------------------------------------------
# torch.compile


@dataclass(frozen=True)
class CompileMark:
    """dynamo's process-wide counts at one moment: graphs compiled, graph breaks, frame
    compilations and recompilations (compilations of a frame compiled before)."""

    graphs: int
    graph_breaks: int
    frame_compiles: int
    recompiles: int

    def since(self, before: CompileMark) -> CompileMark:
        return CompileMark(
            self.graphs - before.graphs,
            self.graph_breaks - before.graph_breaks,
            self.frame_compiles - before.frame_compiles,
            self.recompiles - before.recompiles,
        )


def compile_mark() -> CompileMark | None:
    """dynamo's counters now (``torch._dynamo.utils.counters`` and the per-frame compile counter
    of ``torch._dynamo.convert_frame``, torch 2.13); None where they are not found."""
    try:
        from torch._dynamo import convert_frame
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    per_frame = getattr(convert_frame, "FRAME_COMPILE_COUNTER", None)
    if not isinstance(per_frame, Mapping):
        return None
    compiles = sum(per_frame.values())
    return CompileMark(
        graphs=int(counters["stats"]["unique_graphs"]),
        graph_breaks=int(sum(counters["graph_break"].values())),
        frame_compiles=int(compiles),
        recompiles=int(compiles - len(per_frame)),
    )


def compile_counters(
    before: CompileMark | None, warm: CompileMark | None, after: CompileMark | None
) -> dict[str, int]:
    """The ``extra_info`` keys of a compiled case: what dynamo did from before its first call to
    the first timed round (``before`` -> ``warm``: compilation and warmup), and the frames
    compiled during the timed rounds (``warm`` -> ``after``: none on a healthy case)."""
    if before is None or warm is None or after is None:
        return {}
    setup, rounds = warm.since(before), after.since(warm)
    return {
        "compile_graphs": setup.graphs,
        "compile_graph_breaks": setup.graph_breaks,
        "compile_recompiles": setup.recompiles,
        "recompiles_in_rounds": rounds.frame_compiles,
    }
