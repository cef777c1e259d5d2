"""pytest-benchmark's round options as aliases of ours.

The suite times in pedantic mode (explicit warmup and rounds), where pytest-benchmark ignores
``--benchmark-min-rounds`` and ``--benchmark-warmup-iterations``. Given explicitly, they set
``--gpt2-rounds`` / ``--gpt2-warmup`` (one round is one iteration here); a conflicting pair is
refused with one line.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

import pytest

# pytest-benchmark's flag -> (its config.getoption key, our RunOptions field, our flag)
ALIASES = {
    "--benchmark-min-rounds": ("benchmark_min_rounds", "rounds", "--gpt2-rounds"),
    "--benchmark-warmup-iterations": ("benchmark_warmup_iterations", "warmup", "--gpt2-warmup"),
}
TARGETS = tuple(target for _, target, _ in ALIASES.values())


def given_flags(config: pytest.Config) -> set[str]:
    """The aliased flags written on the command line, in PYTEST_ADDOPTS or in ini addopts:
    their values alone cannot tell an explicit 5 from pytest-benchmark's default 5."""
    args = [
        *shlex.split(os.environ.get("PYTEST_ADDOPTS", "")),
        *config.getini("addopts"),
        *config.invocation_params.args,
    ]
    return {name for arg in map(str, args) if (name := arg.split("=", 1)[0]) in ALIASES}


def folded(config: pytest.Config, ours: dict[str, Any]) -> dict[str, Any]:
    """``ours`` (the aliased fields' values) with the explicit aliases applied."""
    out = dict(ours)
    for flag in sorted(given_flags(config)):
        key, target, our_flag = ALIASES[flag]
        value = config.getoption(key)
        least = 1 if target == "rounds" else 0
        if not isinstance(value, int) or value < least:
            raise pytest.UsageError(
                f"gpt2-bench: {flag} {value}: must be a whole number >= {least}"
            )
        if out[target] is not None and out[target] != value:
            raise pytest.UsageError(
                f"gpt2-bench: {flag} {value} conflicts with {our_flag} {out[target]}; give one"
            )
        out[target] = value
    return out
