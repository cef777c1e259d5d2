"""Memory of a step: peak trackers (CUDA allocator, CPU resident set), the host allocator's
setting, settled untimed steps and the case's own footprint (docs/measuring.md, "Memory").
"""

from __future__ import annotations

import ctypes
import functools
import gc
import resource
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from gpt2_fixtures.bench import counters

MB = 1024 * 1024
# Untimed steps that read the memory peak (see settled_peaks); the recorded peak is their max.
# Two, not five as up to 0.4: a round costs as much as a timed one (26.6 s of the one-thread
# default grid's 199 s with five), and the gate judges the peak against its spread between
# processes (calibration), which two rounds' max carries as well; their std is a rough figure.
# One was tried (0.5.2 draft): identical processes then moved training footprints by up to 20%,
# two A/A rows failed against a calibrated baseline (docs/measuring.md, "Memory").
SETTLED_ROUNDS = 2


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
# Never trim on free (mallopt(3): "Setting M_TRIM_THRESHOLD to -1 disables trimming
# completely"). It was 1 GiB before: a case whose freed heap top passed that (training at
# batch 4 x 256 tokens) gave it back and re-faulted 50-200k pages in late timed rounds (1.2-2.3 s
# rounds of a 0.8 s step; docs/measuring.md, "Host allocator"). malloc_trim still returns memory
# between cases.
STEADY_TRIM_THRESHOLD = -1
MALLOC_MODES = ("steady", "system")
_malloc_setting = "system"


def configure_malloc(mode: str) -> str:
    """Make host allocations steady for CPU timing; returns the label machine_info records.

    A warmed-up CPU step must not re-fault memory it freed (docs/measuring.md, "Host allocator").
    """
    global _malloc_setting
    if mode not in MALLOC_MODES:
        raise ValueError(f"malloc mode {mode!r}: expected one of {', '.join(MALLOC_MODES)}")
    if mode == "steady" and _set_glibc_steady():
        _malloc_setting = "glibc mmap_max=0 trim_threshold=never"
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
    step: Callable[[], None], tracker: MemoryTracker, rounds: int | None = None
) -> tuple[list[float], list[float]]:
    """Peaks (and reserved peaks, CUDA) of ``rounds`` extra untimed steps, each started from
    released memory: a trimmed heap on a CPU, an emptied cache on CUDA.

    They run after the timed rounds, once the control workload is gone, so they count the
    step's memory alone. Why not the timed rounds' peaks: docs/measuring.md, "Memory".
    """
    peaks: list[float] = []
    reserved: list[float] = []
    for _ in range(rounds or SETTLED_ROUNDS):
        tracker.release()
        tracker.reset()
        step()
        peak, res = tracker.read()
        peaks.append(peak)
        if res is not None:
            reserved.append(res)
    return peaks, reserved


Reduce = Callable[[list[float]], list[float]]


def _same(values: list[float]) -> list[float]:
    return values


def _std(values: list[float]) -> float | None:
    """The sample std of the settled peaks; None from one step (no spread was measured)."""
    return statistics.stdev(values) if len(values) > 1 else None


def settle(
    step: Callable[[], None],
    tracker: MemoryTracker,
    reduce: Reduce | None = None,
    base_mb: float | None = None,
) -> tuple[dict[str, Any], counters.StepProfile | None]:
    """``peak_memory_mb``, ``peak_memory_mb_std`` (and ``peak_reserved_mb`` on CUDA) from
    settled rounds; nothing where the peak cannot be reset (``cpu_rss_lifetime``). One more
    settled step, profiled, gives the exact counters (counters.py) and, on a CPU,
    ``step_allocated_mb``.

    ``base_mb`` (``resident_mb`` before the case's model was built) gives the case's own
    ``footprint_memory_mb`` = peak - base, which does not depend on what earlier cases left in
    the process. ``reduce`` combines the rounds' values across ranks (every rank must call
    this: ``step`` may hold collectives). Also returns the profiled step (None without one)."""
    if tracker.kind == "cpu_rss_lifetime":
        return {}, None
    peaks, reserved = settled_peaks(step, tracker)
    reduce = reduce or _same
    footprints = None if base_mb is None else reduce([p - base_mb for p in peaks])
    peaks = reduce(peaks)
    info: dict[str, Any] = {"peak_memory_mb": max(peaks), "peak_memory_mb_std": _std(peaks)}
    if footprints is not None:
        info["footprint_memory_mb"] = max(footprints)
        info["footprint_memory_mb_std"] = _std(footprints)
    if reserved:
        info["peak_reserved_mb"] = max(reduce(reserved))
    tracker.release()
    profiled = counters.profile_step(step, cuda=tracker.kind == CudaMemoryTracker.kind)
    if tracker.kind == "cpu_rss":  # CUDA's allocator peak is exact already
        info["step_allocated_mb"] = max(reduce([profiled.peak_bytes / MB]))
    return info | counters.reduced(profiled.counters(), reduce), profiled


def step_allocated_mb(step: Callable[[], None]) -> float:
    """Peak MB of tensor memory one call of ``step`` holds beyond what was alive when it
    started: the running sum of the profiler's allocation events (c10's CPU allocator reports
    every block it hands out and frees). Unlike the resident set it does not move with where
    glibc places a buffer (docs/measuring.md, "Allocated"); it does not see memory held from
    before the step (weights, optimizer state: the footprint does) nor non-tensor memory."""
    return counters.profile_step(step).peak_bytes / MB


_kept = False


def keep_for_good() -> None:
    """Collect, then freeze what is alive (``gc.freeze``): the modules, tokenizer and data a
    process keeps for good. Later collections, untimed (``resident_mb``, ``models.release``,
    once or twice a model), then scan only what came after; with transformers and datasets
    loaded a full collection took 0.17 s here, about 4 s of the one-thread default grid. Call
    it before any model is built: an object frozen is never collected. Once a process."""
    global _kept
    if not _kept:
        gc.collect()
        gc.freeze()
        _kept = True


def resident_mb(device: str) -> float | None:
    """What the process holds before a case's model is built, the base of its footprint: CUDA
    memory allocated on ``device``; on a CPU the resident set (``VmRSS``) of a trimmed heap."""
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated(torch.device(device)) / MB
    gc.collect()
    trim_heap()
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None  # no /proc (macOS): no footprint, the process peak stays


def memory_tracker(device: str) -> MemoryTracker:
    return CudaMemoryTracker(device) if device.startswith("cuda") else CpuRssTracker()
