"""Measuring: device sync, the control workload, per-round statistics, one ``measure_case``.

pytest-benchmark times each round (``benchmark.pedantic``). Around it, ``RoundHooks`` runs in
pedantic's untimed ``setup``/``teardown``: before a round it times the control workload and
resets the memory peak, after a round it reads the peak. The warmup rounds run before pedantic
through the same hooks (``warm_up``), and their entries are dropped afterwards; the last warmup
step plans how many rounds the case times under a round budget (``RoundPlan``). The recorded
memory comes from settled untimed steps after the timed ones (memory.py), once the control
workload is released. ``measure_case`` is that sequence, for one device and for a job of ranks
(``Job``, distributed.py) alike.
"""

from __future__ import annotations

import math
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch

from gpt2_fixtures.bench.counters import StepProfile
from gpt2_fixtures.bench.memory import MB, CpuRssTracker, MemoryTracker, Reduce, settle

T = TypeVar("T")


def synchronize(device: str) -> None:
    """Wait for queued kernels: CUDA launches are asynchronous, a step is done only after this."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


# ---------------------------------------------------------------------------------------------
# Control workload


class Control(Protocol):
    """A fixed workload timed before every round (controls.py: the GPT-2 twin, the matmul loop)."""

    kind: str

    def run(self) -> float:
        """Seconds for one run of the workload, synchronized on both ends."""
        ...


# ---------------------------------------------------------------------------------------------
# Rounds


def page_faults() -> int:
    """Page faults of this process so far, minor and major (getrusage): a step that faults is
    touching memory the OS had not given it yet (docs/measuring.md, "Host allocator")."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt + usage.ru_majflt


@dataclass
class RoundHooks:
    """pedantic's setup/teardown: control time and memory peak of every round."""

    memory: MemoryTracker
    control: Control | None
    control_s: list[float] = field(default_factory=list)
    peaks_mb: list[float] = field(default_factory=list)
    reserved_mb: list[float] = field(default_factory=list)
    # read before and after every round, untimed (counters.compile_mark for a compiled case)
    probe: Callable[[], Any] | None = None
    probed: list[Any] = field(default_factory=list)
    # the profiled settled step (exact counters, the attention kernel); None until settled
    profile: StepProfile | None = None
    # page faults taken inside each round (between setup and teardown): information only
    faults: list[float] = field(default_factory=list)
    # the control run once more after the last timed round (``close``), so that every timed round
    # has a control right before and right after it
    control_after_s: float | None = None
    _faults_at: int = 0

    def setup(self) -> None:
        if self.probe is not None:
            self.probed.append(self.probe())
        if self.control is not None:
            self.control_s.append(self.control.run())
        self.memory.reset()
        self._faults_at = page_faults()

    def teardown(self, *args: Any, **kwargs: Any) -> None:
        self.faults.append(float(page_faults() - self._faults_at))
        if self.probe is not None:
            self.probed.append(self.probe())
        peak, reserved = self.memory.read()
        self.peaks_mb.append(peak)
        if reserved is not None:
            self.reserved_mb.append(reserved)

    def close(self) -> None:
        """After the last timed round, untimed: the control once more. A round's speed follows
        the machine's speed in the seconds around it; the controls on both sides of it measure
        that better than the one before it alone (docs/measuring.md, "The control on both sides
        of a round")."""
        if self.control is not None:
            self.control_after_s = self.control.run()

    def controls_after(self, rounds: int) -> list[float] | None:
        """The control that ran right after each of the last ``rounds`` rounds: the next round's
        own, and for the last round the one ``close`` ran; None without it."""
        before = self.measured(self.control_s, rounds)
        if self.control_after_s is None or len(before) != rounds or rounds < 1:
            return None
        return [*before[1:], self.control_after_s]

    def measured(self, values: list[float], rounds: int) -> list[float]:
        """Drop the warmup rounds' entries: the last ``rounds`` belong to measured rounds."""
        return values[-rounds:] if values else []

    def timed_probes(self, rounds: int) -> tuple[Any, Any]:
        """The probe's values before the first timed round and after the last (None, None
        without a probe or rounds)."""
        if self.probe is None or rounds < 1 or len(self.probed) < 2 * rounds:
            return None, None
        return self.probed[-2 * rounds], self.probed[-1]

    def reduce(self, reduce: Reduce) -> None:
        """Combine the per-round peaks and control times across ranks (``reduce``: collective)."""
        self.peaks_mb = reduce(self.peaks_mb)
        self.reserved_mb = reduce(self.reserved_mb)
        self.control_s = reduce(self.control_s)
        self.faults = reduce(self.faults)
        if self.control_after_s is not None:
            self.control_after_s = reduce([self.control_after_s])[0]

    def settled_memory(
        self, step: Callable[[], None], reduce: Reduce | None = None, base_mb: float | None = None
    ) -> dict[str, Any]:
        """Release the control (its tensors are no part of the step's memory), then read the
        step's memory in settled rounds and profile one more step (``memory.settle``)."""
        self.control = None
        info, self.profile = settle(step, self.memory, reduce, base_mb)
        return info


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (std 0.0 for a single value; both None for none)."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def round_metrics(
    times_s: Sequence[float], samples: int, tokens: int, hooks: RoundHooks
) -> dict[str, Any]:
    """Throughput and memory from the per-round times: each round is one step.

    ``samples_per_s``/``tokens_per_s`` come from the median round time, so they agree with
    every view of the median; ``*_mean`` and ``*_std`` are over the per-round rates."""
    rounds = len(times_s)
    median_s = statistics.median(times_s)
    sps_mean, sps_std = mean_std([samples / t for t in times_s])
    tps_mean, tps_std = mean_std([tokens / t for t in times_s])
    peaks = hooks.measured(hooks.peaks_mb, rounds)
    reserved = hooks.measured(hooks.reserved_mb, rounds)
    control = hooks.measured(hooks.control_s, rounds)
    faults = hooks.measured(hooks.faults, rounds)
    return {
        "samples_per_s": samples / median_s,
        "samples_per_s_mean": sps_mean,
        "samples_per_s_std": sps_std,
        "tokens_per_s": tokens / median_s,
        "tokens_per_s_mean": tps_mean,
        "tokens_per_s_std": tps_std,
        "peak_memory_mb": max(peaks) if peaks else None,
        "peak_memory_mb_std": mean_std(peaks)[1],
        "footprint_memory_mb": None,
        "footprint_memory_mb_std": None,
        "memory_kind": hooks.memory.kind,
        "peak_reserved_mb": max(reserved) if reserved else None,
        "control_round_s": list(control),
        "control_after_round_s": hooks.controls_after(rounds),
        "control_kind": hooks.control.kind if hooks.control is not None else None,
        "round_page_faults": [int(f) for f in faults],
        "time_ratio_median": (
            statistics.median(t / c for t, c in zip(times_s, control, strict=True))
            if control
            else None
        ),
    }


@dataclass(frozen=True)
class RoundPlan:
    """How many rounds a case times. With a budget, a case gets ``ceil(budget / warm step)``
    rounds, within [``least``, ``most``]: the long cases, which hold most of a grid's time, stop
    at ``least`` while short ones keep ``most`` (pytest-benchmark's ``--benchmark-max-time`` idea,
    planned once from the last warmup step; docs/measuring.md, "Rounds"). Without a budget (None or
    0) or a warmup round to time, every case gets ``most``."""

    most: int
    warmup: int
    budget_s: float | None = None
    least: int = 10

    @property
    def fewest(self) -> int:
        """The minimum, capped by the most rounds."""
        return min(self.least, self.most)

    def setup_key(self) -> str | None:
        """What ``machine_info.gpt2.round_plan`` records: the budget and bounds; None without."""
        if not self.budget_s:
            return None
        return f"budget {self.budget_s:g} s, {self.fewest}-{self.most} rounds"

    def rounds(self, warm_s: float | None) -> tuple[int, str]:
        """(rounds, why): the count for a case whose warm step took ``warm_s`` seconds."""
        if not self.budget_s:
            return self.most, f"fixed: {self.most} rounds (no round budget)"
        if warm_s is None or warm_s <= 0:
            return self.most, f"fixed: {self.most} rounds (no warmup round to plan from)"
        least = self.fewest
        want = math.ceil(self.budget_s / warm_s)
        rounds = min(self.most, max(least, want))
        why = f"budget {self.budget_s:g} s / warm step {warm_s * 1e3:.1f} ms = {want} rounds"
        if want < least:
            why += f", raised to the minimum {least}"
        elif want > self.most:
            why += f", capped at {self.most}"
        return rounds, why


def warm_up(run: Callable[[], None], hooks: RoundHooks, rounds: int) -> float | None:
    """Warmup rounds through the same hooks as timed ones (control, memory reset); returns the
    last one's seconds (the step ends in a device synchronize), None without warmup."""
    seconds = None
    for _ in range(rounds):
        hooks.setup()
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        hooks.teardown()
    return seconds


def run_pedantic(
    benchmark: Any,
    step: Callable[[], None],
    hooks: RoundHooks,
    rounds: int,
) -> list[float] | None:
    """Time ``step`` with pytest-benchmark; returns the per-round seconds (None if disabled).
    The warmup ran before (``warm_up``), through the same hooks."""
    benchmark.pedantic(
        step, setup=hooks.setup, teardown=hooks.teardown, rounds=rounds, iterations=1
    )
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: the step ran once, untimed
        return None
    return list(stats.stats.data)


class Job(Protocol):
    """Ranks that measure one case together (distributed.py): a round starts on every rank at
    once and ends when the slowest is done; per-round values are reduced across the ranks."""

    size: int

    def hooks(self, memory: MemoryTracker, control: Control | None) -> RoundHooks: ...

    def timed(self, step: Callable[[], None]) -> Callable[[], None]: ...

    def reduce(self, values: list[float]) -> list[float]: ...

    def barrier(self) -> None: ...

    def keys(self) -> dict[str, Any]:
        """The job's own ``extra_info`` keys, recorded before the measured ones."""
        ...


# ---------------------------------------------------------------------------------------------
# One case


class CountedStep:
    """A step that counts its calls, so that what a step records per call (token timestamps,
    teacher shares) can be matched to the timed rounds by position (``Measured.timed_of``)."""

    def __init__(self, step: Callable[[], None]) -> None:
        self.step = step
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        self.step()


@dataclass(frozen=True)
class Measured:
    """One case's measurements: ``times`` are pytest-benchmark's per-round seconds (``stats.data``,
    None with --benchmark-disable), ``timed`` the step calls that were those rounds."""

    times: list[float] | None
    info: dict[str, Any]
    timed: range
    calls: int

    def timed_of(self, per_call: Sequence[T]) -> list[T]:
        """The entries of the timed rounds, aligned one to one with ``stats.data``, from a list
        with one entry per call of the step (warmup, prepare and settled calls included)."""
        if len(per_call) != self.calls:
            raise ValueError(
                f"{len(per_call)} per-call records for {self.calls} calls of the step: cannot "
                "tell which belong to the timed rounds"
            )
        return list(per_call[self.timed.start : self.timed.stop])


def measure_case(
    benchmark: Any,
    step: CountedStep,
    hooks: RoundHooks,
    plan: RoundPlan,
    work: tuple[int, int],
    *,
    timed_step: Callable[[], None] | None = None,
    reduce: Reduce | None = None,
    base_mb: float | None = None,
) -> Measured:
    """The measuring sequence of every case: timed rounds through the hooks, per-round metrics,
    then the settled memory steps.

    ``plan``: warmup and how many rounds; ``work``: (samples, tokens) of one step. ``timed_step``
    (default ``step``) is what a round runs, e.g. the step and a barrier; it must call ``step``
    once. ``reduce`` combines per-round values across ranks (distributed.py: the slowest rank's
    warm step plans the rounds of all); ``base_mb`` is the base of the footprint
    (``resident_mb``)."""
    run = timed_step or step
    warm_s = None
    if not getattr(benchmark, "disabled", False):  # disabled: pedantic runs the step once
        warm_s = warm_up(run, hooks, plan.warmup)
    if warm_s is not None and reduce is not None:
        warm_s = reduce([warm_s])[0]
    rounds, why = plan.rounds(warm_s)
    times = run_pedantic(benchmark, run, hooks, rounds)
    stop = step.calls
    if times is None:
        return Measured(None, {}, range(stop, stop), step.calls)
    timed = range(stop - len(times), stop)
    hooks.close()
    if reduce is not None:
        hooks.reduce(reduce)
        times = reduce(times)
    info = round_metrics(times, work[0], work[1], hooks)
    info |= {"warm_step_s": warm_s, "rounds_why": why}
    info.update(hooks.settled_memory(run, reduce, base_mb))
    return Measured(times, info, timed, step.calls)


def peak_memory_mb(device: str) -> float | None:
    """Peak memory of this process so far, recorded with an out-of-memory case: CUDA's peak
    allocated on ``device``, the CPU's high-water mark (VmHWM); None when unknown."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return None
        return torch.cuda.max_memory_allocated(torch.device(device)) / MB
    kb = CpuRssTracker._vm_hwm_kb()
    return None if kb is None else kb * 1024 / MB
