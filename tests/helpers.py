"""Helpers the tests share (fixtures are in conftest.py): the real benchmark files in a pytester
folder and a runner, a stand-in for pytest-benchmark's fixture, the README's documented keys, a
saved checkpoint, and the one builder of result entries."""

from __future__ import annotations

import ast
import functools
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The real benchmark files, so the plugin tests exercise what `pytest benchmarks` runs.
BENCHMARKS = ROOT / "benchmarks"
BENCH_FILES = ("test_training", "test_inference")

SMALL = [
    "--gpt2-batch-sizes",
    "1,2",
    "--gpt2-seq-lens",
    "16,32",
    "--gpt2-rounds",
    "3",
    "--gpt2-warmup",
    "1",
]


def make_bench_dir(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(
        "[pytest]\nmarkers =\n    train: t\n    inference: i\n    generation: g\n"
        "    distillation: d\n"
    )
    pytester.makepyfile(**{name: (BENCHMARKS / f"{name}.py").read_text() for name in BENCH_FILES})
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "gpt2_fixtures.plugin", *args)


def documented_keys() -> set[str]:
    """Every `name` in the README's extra_info section: the keys a result may hold."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## What each case records", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([a-z][a-z0-9_]*)`", section))


class FakeBenchmark:
    """Runs warmup then timed rounds through setup/step/teardown, as pytest-benchmark's pedantic
    does; ``stats.stats.data`` gets one made-up time per timed round (0.1 s, 0.2 s, ...)."""

    def __init__(self) -> None:
        self.stats: Any = None
        self.extra_info: dict[str, Any] = {}

    def pedantic(self, step, setup, teardown, rounds, iterations, warmup_rounds=0):
        assert iterations == 1
        data: list[float] = []
        for i in range(warmup_rounds + rounds):
            setup()
            step()
            teardown()
            if i >= warmup_rounds:
                data.append(0.1 * (len(data) + 1))
        self.stats = SimpleNamespace(stats=SimpleNamespace(data=data))


def count_profile_passes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record every profiler pass of a step (``counters.profile_step``): one entry per pass, its
    ``cuda`` flag."""
    from gpt2_fixtures.bench import counters

    passes: list[bool] = []
    real = counters.profile_step

    def counting(step: Any, cuda: bool = False) -> Any:
        passes.append(cuda)
        return real(step, cuda)

    monkeypatch.setattr(counters, "profile_step", counting)
    return passes


def save_checkpoint(path: Path, vocab_size: int | None = None) -> Path:
    """What most training scripts leave: ``save_pretrained`` of the model alone, no tokenizer; the
    tiny preset, or a micro model of another vocabulary."""
    from transformers import AutoModelForCausalLM, GPT2Config

    from gpt2_fixtures.bench import models

    if vocab_size is None:
        config = models.model_config(models.resolve_model("tiny"))
    else:
        config = GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=64, vocab_size=vocab_size)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return path


def result_entry(
    opt: str = "sdpa-fp32",
    batch: int = 1,
    seq: int = 64,
    median: float = 0.1,
    phase: str = "train",
    function: str = "test_train",
    tail: str = "",
    data: list[float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A benchmark entry in the pytest-benchmark JSON layout, ``extra_info`` as the suite writes
    it; ``data``: the per-round times (default five rounds 2% apart around ``median``: enough for
    a rounds-based interval, tight enough to be significant)."""
    name = f"{function}[{opt}-b{batch}-s{seq}{tail}]"
    info = {
        "phase": phase,
        "model": "tiny",
        "optimization": opt,
        "device": "cpu",
        "batch_size": batch,
        "seq_len": seq,
        "samples_per_s": batch / median,
        "tokens_per_s": batch * seq / median,
        "peak_memory_mb": 100.0 + batch * seq / 10,
        "memory_kind": "cpu_rss",
        **extra,
    }
    rounds = data if data is not None else [median * f for f in (0.96, 0.98, 1.0, 1.02, 1.04)]
    stats: dict[str, Any] = {"median": median}
    stats["mean"] = median if data is None else statistics.fmean(rounds)
    stats |= {"stddev": statistics.stdev(rounds) if len(rounds) > 1 else 0.0}
    stats |= {"rounds": len(rounds), "data": rounds}
    return {
        "name": name,
        "fullname": f"benchmarks/x.py::{name}",
        "params": None,
        "stats": stats,
        "extra_info": info,
    }


def pytest_with_tools(
    plugins: list[str], args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """A ``pytest`` process in the repository with ``tools/`` on PYTHONPATH and its pytest
    plugins loaded (``-p gate_inject``, ``-p bare_loop``, ...), one torch thread, ``env`` added."""
    full = dict(os.environ, OMP_NUM_THREADS="1", **env)
    full["PYTHONPATH"] = os.pathsep.join(
        filter(None, (str(ROOT / "tools"), full.get("PYTHONPATH")))
    )
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *(arg for p in plugins for arg in ("-p", p)),
        "-p",
        "no:cacheprovider",
    ]
    return subprocess.run(
        [*cmd, "-q", *args], cwd=ROOT, env=full, capture_output=True, text=True, check=False,
        timeout=600,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# slow by rule (conftest.py): which functions of a test module start a process

# Calls that start a process: any attribute of the subprocess module, pytester's subprocess run.
SPAWNING_ATTRIBUTES = {"runpytest_subprocess", "spawn_pytest"}


def _spawns_directly(func: ast.AST) -> bool:
    for node in ast.walk(func):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        target = node.func
        if target.attr in SPAWNING_ATTRIBUTES:
            return True
        if isinstance(target.value, ast.Name) and target.value.id == "subprocess":
            return True
    return False


def _called_names(func: ast.AST) -> set[str]:
    return {
        node.func.id
        for node in ast.walk(func)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }


def _functions(path: Path) -> dict[str, ast.AST]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: dict[str, ast.AST] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.setdefault(node.name, node)
    return found


@functools.cache
def _helper_functions() -> dict[str, ast.AST]:
    return _functions(Path(__file__))


@functools.cache
def spawning_functions(path: Path) -> frozenset[str]:
    """Names of the functions of ``path`` (and the helpers) that start a process, transitively."""
    funcs = _helper_functions() | _functions(path)
    spawning = {name for name, func in funcs.items() if _spawns_directly(func)}
    changed = True
    while changed:  # a caller of a spawning function spawns too
        grown = {n for n, f in funcs.items() if _called_names(f) & spawning} | spawning
        changed, spawning = grown != spawning, grown
    return frozenset(spawning)


def load_tool(name: str) -> Any:
    """A script of tools/ imported as a module (tools/ is not a package)."""
    import importlib.util

    path = ROOT / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_for_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
