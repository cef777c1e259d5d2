"""A stand-in for a slower torch release (docs/upgrades.md, "Testing the A/B here").

Loaded at interpreter start through PYTHONPATH by tools/slow_python. When torch is imported, its
matrix products and attention (torch.matmul, mm, bmm, addmm, Tensor.__matmul__,
torch.nn.functional.linear and scaled_dot_product_attention: what GPT-2's Conv1D and attention,
its lm_head and the twin control call) are wrapped with a busy wait of GPT2_BENCH_SLOW_TORCH
times their own duration, and torch.__version__ gets "slow<factor>" as a local version label, so
the results' fingerprint shows a stack change. Only forward calls are wrapped: kernels that
autograd runs in backward are not, so a training step slows less than an inference step.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

FACTOR = float(os.environ.get("GPT2_BENCH_SLOW_TORCH", "0.4"))
_depth = [0]  # a wrapped call inside another (addmm inside linear) waits once, in the outer


def _slowed(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _depth[0]:
            return fn(*args, **kwargs)
        _depth[0] += 1
        try:
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            until = time.perf_counter() + FACTOR * (time.perf_counter() - start)
        finally:
            _depth[0] -= 1
        while time.perf_counter() < until:  # busy: the CPU is held as a slower kernel would
            pass
        return out

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    wrapper.__name__ = getattr(fn, "__name__", "slowed")
    return wrapper


def _slow_down(torch: ModuleType) -> None:
    for name in ("matmul", "mm", "bmm", "addmm"):
        setattr(torch, name, _slowed(getattr(torch, name)))
    functional = torch.nn.functional
    for name in ("linear", "scaled_dot_product_attention"):
        setattr(functional, name, _slowed(getattr(functional, name)))
    torch.Tensor.__matmul__ = _slowed(torch.Tensor.__matmul__)
    version = str(torch.__version__)
    mark = f"slow{FACTOR:g}"
    torch.__version__ = version + ("." if "+" in version else "+") + mark


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        _slow_down(module)


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the loader of the top-level torch package, once."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


if FACTOR > 0:
    sys.meta_path.insert(0, _Finder())
