"""pytest plugin used only by tools/gate_quality.py: inject a known regression into every step.

Loaded with `-p gate_inject` (tools/ on PYTHONPATH); it does nothing unless GPT2_BENCH_INJECT is
set, to a comma-separated list of:
  slow=F  every step sleeps F times its own duration after it ran (F=0.25: 25% slower,
          whatever the machine's load, since the extra time scales with the step's time)
  mem=F   every step first allocates (and fills) a tensor of F times what the process held when
          the benchmark's first step ran (CPU RSS, or CUDA allocated bytes) and frees it when
          the step is done: an activation the step now keeps, in its peak on every reading
          (the settled memory steps' resident set, step_allocated_mb, CUDA's allocator peak)
  reads=N every step reads a scalar tensor N times (``.item()``): N host reads, no time to speak
          of; the exact counters (host_syncs_per_step, ops_per_step) see them
  breaks=1 a forward hook on the model's first block calls torch._dynamo.graph_break(): one more
          graph break under torch.compile (a no-op without it)
  recompile=N from the N-th measured call of the step on (warmup rounds count), a forward hook
          on the first block takes another branch: dynamo's guard on it fails, one recompile
The product code knows nothing about this: the hook wraps gpt2_fixtures.bench.measure.measure_case,
so the timed rounds and the untimed memory steps run the injected step alike.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest

ENV = "GPT2_BENCH_INJECT"
KEYS = ("slow", "mem", "reads", "breaks", "recompile")
# flipped by the N-th measured call (recompile=N); read by the hook on the first block
FLIP = {"on": False}


def parse(spec: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, _, value = part.partition("=")
        if key not in KEYS or not value:
            raise pytest.UsageError(f"{ENV}: cannot parse {part!r}; use slow=F, mem=F, reads=N")
        out[key] = float(value)
    return out


def current_bytes(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.memory_allocated(torch.device(device)))
    with open("/proc/self/statm") as fh:  # resident pages, second field
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def wrap(step: Callable[[], None], spec: dict[str, float], device: str) -> Callable[[], None]:
    """``step`` with the injected regression; the extra memory is sized on its first call."""
    size: list[int] = []
    reads = int(spec.get("reads", 0))
    scalar = None
    if reads:
        import torch

        scalar = torch.zeros(())  # made once: each read is one aten::item, nothing else

    calls = [0]

    def injected() -> None:
        calls[0] += 1
        if spec.get("recompile") and calls[0] >= spec["recompile"]:
            FLIP["on"] = True
        held = None
        if "mem" in spec:
            import torch

            size[:] = size or [int(spec["mem"] * current_bytes(device))]
            held = torch.ones(size[0], dtype=torch.uint8, device=device)  # filled: resident
        start = time.perf_counter()
        for _ in range(reads):
            scalar.item()  # type: ignore[union-attr]
        step()
        if "slow" in spec:
            time.sleep(spec["slow"] * (time.perf_counter() - start))
        del held

    injected.size = size  # type: ignore[attr-defined]  # the bytes added, once sized
    return injected


def pytest_configure(config: pytest.Config) -> None:
    spec = parse(os.environ.get(ENV, ""))
    if not spec:
        return
    from gpt2_fixtures.bench import measure

    original = measure.measure_case

    def measure_case(benchmark: Any, step: Any, hooks: Any, *args: Any, **kwargs: Any) -> Any:
        device = getattr(getattr(hooks, "control", None), "device", "cpu")
        run = kwargs.get("timed_step") or step
        kwargs["timed_step"] = wrap(run, spec, device)
        return original(benchmark, step, hooks, *args, **kwargs)

    measure.measure_case = measure_case  # type: ignore[assignment]
    # Workbench.measure calls the name it imported: patch it there too (without this, since
    # 0.5.0's Workbench the injected runs measured unchanged steps)
    from gpt2_fixtures.bench import workbench

    workbench.measure_case = measure_case  # type: ignore[assignment]
    if spec.get("breaks") or spec.get("recompile"):
        _inject_hook(spec)
    config.stash[_KEY] = spec


def _inject_hook(spec: dict[str, float]) -> None:
    """Before a case's first call (which compiles a compile optimization), hook the model's first
    transformer block: a graph break there (breaks=1), a branch on FLIP (recompile=N)."""
    from gpt2_fixtures.bench import workbench

    original = workbench.prepare

    def hook(module: Any, args: Any, out: Any) -> Any:
        import torch

        # before any break: dynamo guards on the branch it traced, so flipping it recompiles
        # (after a break the rest of the hook has no tensor work, and dynamo skips it)
        out = out * 1 if FLIP["on"] else out
        if spec.get("breaks"):
            torch._dynamo.graph_break()
        return out

    def prepare(step: Any, optimization: Any, model: Any) -> Any:
        inner = getattr(model, "_orig_mod", model)
        blocks = getattr(getattr(inner, "transformer", None), "h", None)
        if blocks is not None and not getattr(blocks[0], "_gate_inject_hook", False):
            FLIP["on"] = False  # a new model: the branch starts unflipped
            blocks[0].register_forward_hook(hook)
            blocks[0]._gate_inject_hook = True
        return original(step, optimization, model)

    workbench.prepare = prepare  # type: ignore[assignment]


_KEY = pytest.StashKey[dict[str, float]]()


def pytest_report_header(config: pytest.Config) -> str | None:
    spec = config.stash.get(_KEY, None)
    return f"gate_inject: {spec} (tools/gate_inject.py)" if spec else None
