"""Before the measured rounds: compile (timed apart as ``compile_s``); after them, which
attention kernel really ran (``attn_kernel``), read from the ops of the profiled step.
docs/optimizations.md is the user's side."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from torch import nn

from gpt2_fixtures.bench import counters
from gpt2_fixtures.config import Optimization

# A torch.compile optimization runs its step at most this many times before the measured
# rounds, until a call compiles nothing new (the first call compiles; guards may force one
# recompilation).
MAX_COMPILE_CALLS = 3


def prepare(
    step: Callable[[], None], optimization: Optimization, model: nn.Module
) -> dict[str, Any]:
    """Untimed calls of ``step`` before pytest-benchmark's rounds.

    ``compile_s``: seconds of the calls that compiled (compile optimizations only, else None): the
    compilation and the first executions for the case's shape, kept out of the measured rounds.
    """
    del model  # the step closes over it; callers pass it for symmetry with ``apply``
    return {"compile_s": compile_step(step) if optimization.compile else None}


def _frames_compiled() -> int | None:
    """Frames torch.compile has compiled (recompilations included) in this process."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    return int(counters["frames"]["total"])


def compile_step(step: Callable[[], None]) -> float:
    """Call ``step`` until a call compiles nothing new; the seconds of the compiling calls.

    Without dynamo's frame counter only the first call counts as compilation.
    """
    total = 0.0
    for _ in range(MAX_COMPILE_CALLS):
        before = _frames_compiled()
        start = time.perf_counter()
        step()
        elapsed = time.perf_counter() - start
        after = _frames_compiled()
        if before is not None and after == before:
            break
        total += elapsed
        if before is None:
            break
    return total


# Every SDPA backend is its own ATen op; the profiler records which one the dispatcher called.
# Names: aten/src/ATen/native/native_functions.yaml (torch 2.13).
_SDPA_PREFIX = "aten::_scaled_dot_product_"
_SDPA_KINDS = ("flash", "efficient", "cudnn", "math", "overrideable")


def kernel_of(op_name: str) -> str | None:
    """``aten::_scaled_dot_product_flash_attention_for_cpu`` -> ``flash``; other ops -> None."""
    if "flash_attn" in op_name and not op_name.startswith("aten::"):
        return "flash_attention_2"  # the flash-attn package's ops, e.g. flash_attn::_flash_attn_*
    if not op_name.startswith(_SDPA_PREFIX):
        return None
    return next((kind for kind in _SDPA_KINDS if kind in op_name), None)


def kernels_in(op_names: list[str]) -> list[str]:
    """The attention kernels among ``op_names``, each once, in order of first appearance."""
    return list(dict.fromkeys(k for k in map(kernel_of, op_names) if k is not None))


def attention_kernel(
    step: Callable[[], None],
    optimization: Optimization,
    profile: counters.StepProfile | None = None,
) -> str:
    """Which attention kernel really ran: the op names of one profiled call of ``step``.

    ``profile`` is that call where the case has one already (the settled step that gives the
    exact counters, memory.settle): then nothing runs here; else one call is profiled.

    A found kernel is reported as ``flash``, ``efficient``, ``cudnn``, ``math`` (SDPA backends),
    or ``flash_attention_2``; several are joined with ``+`` (e.g. ``flash+math`` when a
    distillation teacher and its student take different paths). With no attention op in the
    profile: ``eager`` for eager attention (matmul + softmax in Python), ``inductor`` for a
    compiled model (inductor lowered the attention into its own generated kernels), else
    ``unknown``.
    """
    names = (profile if profile is not None else counters.profile_step(step)).op_names
    found = kernels_in(list(names))
    if found:
        return "+".join(found)
    if optimization.attn_implementation == "eager":
        return "eager"
    return "inductor" if optimization.compile else "unknown"
