"""Measuring: device sync, memory trackers, the control workload, per-round statistics.

pytest-benchmark times each round (``benchmark.pedantic``). Around it, ``RoundHooks`` runs in
pedantic's untimed ``setup``/``teardown``: before a round it times the control workload and
resets the memory peak, after a round it reads the peak. Warmup rounds go through the same
hooks and are dropped afterwards. The recorded memory comes from settled untimed rounds after
the timed ones (``settled_memory``), once the control workload is released.
"""

from __future__ import annotations

import ctypes
import functools
import math
import resource
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

MB = 1024 * 1024
# Untimed steps that read the memory peak (see settled_peaks). Two rounds often agree by
# chance while the next three differ by one logits-sized buffer: five show the spread.
SETTLED_ROUNDS = 5


def synchronize(device: str) -> None:
    """Wait for queued kernels: CUDA launches are asynchronous, a step is done only after this."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


# ---------------------------------------------------------------------------------------------
# Memory


class MemoryTracker(Protocol):
    kind: str

    def reset(self) -> None: ...

    def read(self) -> tuple[float, float | None]:
        """(peak MB since the last reset, peak reserved MB or None)."""
        ...

    def release(self) -> None:
        """Give cached free memory back (CUDA's cache, glibc's heap) before a settled round."""
        ...


class CudaMemoryTracker:
    """Peak allocated and reserved bytes of the caching allocator on one device."""

    kind = "cuda_allocated"

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)

    def reset(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def release(self) -> None:
        torch.cuda.empty_cache()

    def read(self) -> tuple[float, float | None]:
        return (
            torch.cuda.max_memory_allocated(self.device) / MB,
            torch.cuda.max_memory_reserved(self.device) / MB,
        )


class CpuRssTracker:
    """Peak resident set size of this process (Linux ``VmHWM``).

    Writing ``5`` to ``/proc/self/clear_refs`` resets the high-water mark to the current RSS
    (Linux 4.0+, Documentation/filesystems/proc.rst), so each round gets its own peak. Where
    that is not possible the tracker reports the process-lifetime peak (``cpu_rss_lifetime``).
    """

    def __init__(self) -> None:
        self.kind = "cpu_rss" if self._can_reset() else "cpu_rss_lifetime"

    @staticmethod
    def _can_reset() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return CpuRssTracker._vm_hwm_kb() is not None
        except OSError:
            return False

    @staticmethod
    def _vm_hwm_kb() -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def reset(self) -> None:
        if self.kind == "cpu_rss":
            Path("/proc/self/clear_refs").write_text("5")

    def release(self) -> None:
        trim_heap()

    def read(self) -> tuple[float, float | None]:
        kb = self._vm_hwm_kb() if self.kind == "cpu_rss" else None
        if kb is None:  # ru_maxrss is KiB on Linux, bytes on macOS
            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            kb = maxrss // 1024 if sys.platform == "darwin" else maxrss
        return kb / 1024, None


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (mallopt, malloc_trim), else None (musl, macOS)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  a glibc-only symbol
    except (OSError, AttributeError):
        return None
    return libc


def trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere)."""
    libc = glibc()
    if libc is not None:  # elsewhere there is nothing to trim
        libc.malloc_trim(0)


# glibc's mallopt parameters (malloc.h) and the values of the steady setting.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
STEADY_TRIM_THRESHOLD = 1 << 30
MALLOC_MODES = ("steady", "system")
_malloc_setting = "system"


def configure_malloc(mode: str) -> str:
    """Make host allocations steady for CPU timing; returns the label machine_info records.

    glibc serves large blocks (from 128 KiB to 32 MiB, a threshold it retunes as blocks are
    freed) with fresh mappings that are unmapped on free, and gives the freed top of its heap
    back to the OS, so a CPU step re-faults memory that it freed in the step before, and how
    much depends on the heap's history in that process. Measured here: a tiny GPT-2 training
    step took 0 to 44k page faults (median 18-25k), a batch-4 x 256 inference step 50k (its
    205 MB logits), about 45% of its time; the same case ran 124 ms in one process and 212 ms
    in the next. Serving every block from the heap and never trimming it on free keeps a
    warmed-up step at no page faults, as the CUDA caching allocator and jemalloc do;
    ``malloc_trim`` (trim_heap) still gives memory back between cases. "system" leaves the
    allocator alone.
    """
    global _malloc_setting
    if mode not in MALLOC_MODES:
        raise ValueError(f"malloc mode {mode!r}: expected one of {', '.join(MALLOC_MODES)}")
    if mode == "steady" and _set_glibc_steady():
        _malloc_setting = f"glibc mmap_max=0 trim_threshold={STEADY_TRIM_THRESHOLD // MB}MiB"
    return _malloc_setting


def _set_glibc_steady() -> bool:
    libc = glibc()
    if libc is None:
        return False
    # mallopt returns 1 on success; either call also stops glibc retuning its thresholds
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, STEADY_TRIM_THRESHOLD)
    )


def malloc_setting() -> str:
    """The host allocator's setting, as machine_info records it ("system" when untouched)."""
    return _malloc_setting


def settled_peaks(
    step: Callable[[], None], tracker: MemoryTracker, rounds: int = SETTLED_ROUNDS
) -> tuple[list[float], list[float]]:
    """Peaks (and reserved peaks, CUDA) of ``rounds`` extra untimed steps, each started from
    released memory: a trimmed heap on a CPU, an emptied cache on CUDA.

    They run after the timed rounds, once the control workload is gone, so they count the
    step's memory alone (the twin control holds its weights while the rounds run).

    glibc keeps freed blocks, so the peak RSS of a timed round depends on what earlier rounds
    and cases left in the heap: identical processes gave training peaks of 1033-1203 MB. Trimming
    inside the timed rounds would add page faults to the measured time, so memory is read in
    these separate rounds instead. Even from a trimmed heap, whether a large buffer (tiny
    GPT-2's 25 MB logits) lands on pages the step already touched varies from step to step, so
    the rounds' spread is kept: the gate widens its memory threshold by it.
    """
    peaks: list[float] = []
    reserved: list[float] = []
    for _ in range(rounds):
        tracker.release()
        tracker.reset()
        step()
        peak, res = tracker.read()
        peaks.append(peak)
        if res is not None:
            reserved.append(res)
    return peaks, reserved


def settled_memory(
    step: Callable[[], None],
    tracker: MemoryTracker,
    reduce: Callable[[list[float]], list[float]] | None = None,
) -> dict[str, float]:
    """``peak_memory_mb``, ``peak_memory_mb_std`` (and ``peak_reserved_mb`` on CUDA) from
    settled rounds; nothing where the peak cannot be reset (``cpu_rss_lifetime``). ``reduce``
    combines the rounds' peaks across ranks (every rank must call this: ``step`` may hold
    collectives)."""
    if tracker.kind == "cpu_rss_lifetime":
        return {}
    peaks, reserved = settled_peaks(step, tracker)
    reduce = reduce or (lambda values: values)
    peaks = reduce(peaks)
    info = {"peak_memory_mb": max(peaks), "peak_memory_mb_std": statistics.stdev(peaks)}
    if reserved:
        info["peak_reserved_mb"] = max(reduce(reserved))
    return info


def memory_tracker(device: str) -> MemoryTracker:
    return CudaMemoryTracker(device) if device.startswith("cuda") else CpuRssTracker()


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


@dataclass
class RoundHooks:
    """pedantic's setup/teardown: control time and memory peak of every round."""

    memory: MemoryTracker
    control: Control | None
    control_s: list[float] = field(default_factory=list)
    peaks_mb: list[float] = field(default_factory=list)
    reserved_mb: list[float] = field(default_factory=list)

    def setup(self) -> None:
        if self.control is not None:
            self.control_s.append(self.control.run())
        self.memory.reset()

    def teardown(self, *args: Any, **kwargs: Any) -> None:
        peak, reserved = self.memory.read()
        self.peaks_mb.append(peak)
        if reserved is not None:
            self.reserved_mb.append(reserved)

    def measured(self, values: list[float], rounds: int) -> list[float]:
        """Drop the warmup rounds' entries: the last ``rounds`` belong to measured rounds."""
        return values[-rounds:] if values else []

    def settled_memory(
        self,
        step: Callable[[], None],
        reduce: Callable[[list[float]], list[float]] | None = None,
    ) -> dict[str, float]:
        """Release the control (its tensors are no part of the step's memory), then read the
        step's memory in settled rounds (``settled_memory``)."""
        self.control = None
        return settled_memory(step, self.memory, reduce)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0.0 for a single value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def round_metrics(
    times_s: Sequence[float], samples: int, tokens: int, hooks: RoundHooks
) -> dict[str, Any]:
    """Throughput and memory from the per-round times: each round is one step."""
    rounds = len(times_s)
    sps_mean, sps_std = mean_std([samples / t for t in times_s])
    tps_mean, tps_std = mean_std([tokens / t for t in times_s])
    peaks = hooks.measured(hooks.peaks_mb, rounds)
    reserved = hooks.measured(hooks.reserved_mb, rounds)
    control = hooks.measured(hooks.control_s, rounds)
    peak_std = statistics.stdev(peaks) if len(peaks) > 1 else 0.0
    return {
        "samples_per_s": sps_mean,
        "samples_per_s_std": sps_std,
        "tokens_per_s": tps_mean,
        "tokens_per_s_std": tps_std,
        "peak_memory_mb": max(peaks) if peaks else None,
        "peak_memory_mb_std": peak_std if peaks else None,
        "memory_kind": hooks.memory.kind,
        "peak_reserved_mb": max(reserved) if reserved else None,
        "control_round_s": list(control),
        "control_kind": hooks.control.kind if hooks.control is not None else None,
        "time_ratio_median": (
            statistics.median(t / c for t, c in zip(times_s, control, strict=True))
            if control
            else None
        ),
    }


def run_pedantic(
    benchmark: Any,
    step: Callable[[], None],
    hooks: RoundHooks,
    rounds: int,
    warmup_rounds: int,
) -> list[float] | None:
    """Time ``step`` with pytest-benchmark; returns the per-round seconds (None if disabled)."""
    benchmark.pedantic(
        step,
        setup=hooks.setup,
        teardown=hooks.teardown,
        rounds=rounds,
        warmup_rounds=warmup_rounds,
        iterations=1,
    )
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: the step ran once, untimed
        return None
    return list(stats.stats.data)


def finite_or_none(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def peak_memory_mb(device: str) -> float | None:
    """Peak memory of this process so far, recorded with an out-of-memory case: CUDA's peak
    allocated on ``device``, the CPU's high-water mark (VmHWM); None when unknown."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return None
        return torch.cuda.max_memory_allocated(torch.device(device)) / MB
    kb = CpuRssTracker._vm_hwm_kb()
    return None if kb is None else kb * 1024 / MB
