"""pytest plugin used only by tools/gate_quality.py: inject a known regression into every step.

Loaded with `-p gate_inject` (tools/ on PYTHONPATH); it does nothing unless GPT2_BENCH_INJECT is
set, to a comma-separated list of:
  slow=F  every timed step sleeps F times its own duration after it ran (F=0.25: 25% slower,
          whatever the machine's load, since the extra time scales with the step's time)
  mem=F   before a benchmark's first step, a buffer of F times the process's current memory (CPU
          RSS, or CUDA allocated bytes) is allocated, touched and held through that benchmark's
          rounds, so every round's peak includes it; it is freed when the test ends
The product code knows nothing about this: the hook wraps gpt2_fixtures.bench.measure.run_pedantic.
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

ENV = "GPT2_BENCH_INJECT"
_HELD: list[Any] = []  # the injected memory of the benchmark running now


def parse(spec: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, _, value = part.partition("=")
        if key not in ("slow", "mem") or not value:
            raise pytest.UsageError(f"{ENV}: cannot parse {part!r}; use slow=F and/or mem=F")
        out[key] = float(value)
    return out


def _current_bytes(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.memory_allocated(torch.device(device)))
    with open("/proc/self/statm") as fh:  # resident pages, second field
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hold_memory(fraction: float, device: str) -> None:
    n = int(fraction * _current_bytes(device))
    if device.startswith("cuda"):
        import torch

        _HELD.append(torch.ones(n, dtype=torch.uint8, device=device))
        return
    # An anonymous mapping, not malloc: a large malloc/free would move glibc's dynamic mmap
    # threshold and change how the step's own allocations are placed (and so its peak).
    buf = mmap.mmap(-1, n)
    for offset in range(0, n, mmap.PAGESIZE):  # touch every page so it is resident
        buf[offset] = 1
    _HELD.append(buf)


def _wrap(step: Callable[[], None], spec: dict[str, float], device: str) -> Callable[[], None]:
    def injected() -> None:
        if "mem" in spec and not _HELD:
            _hold_memory(spec["mem"], device)
        start = time.perf_counter()
        step()
        if "slow" in spec:
            time.sleep(spec["slow"] * (time.perf_counter() - start))

    return injected


def pytest_configure(config: pytest.Config) -> None:
    spec = parse(os.environ.get(ENV, ""))
    if not spec:
        return
    from gpt2_fixtures.bench import measure

    original = measure.run_pedantic

    def run_pedantic(
        benchmark: Any, step: Callable[[], None], hooks: Any, *args: Any, **kwargs: Any
    ) -> Any:
        device = getattr(getattr(hooks, "control", None), "device", "cpu")
        _HELD.clear()  # each benchmark gets its own buffer, sized on the process it finds
        return original(benchmark, _wrap(step, spec, device), hooks, *args, **kwargs)

    measure.run_pedantic = run_pedantic  # type: ignore[assignment]
    config.stash[_KEY] = spec


_KEY = pytest.StashKey[dict[str, float]]()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Give the buffer back once its benchmark is done: held on, it would sit in the resident
    set the next case reads as its footprint's base, and so hide from that case's footprint."""
    _HELD.clear()


def pytest_report_header(config: pytest.Config) -> str | None:
    spec = config.stash.get(_KEY, None)
    return f"gate_inject: {spec} (tools/gate_inject.py)" if spec else None
