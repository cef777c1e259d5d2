"""What /proc/cpuinfo says of the first processor: one reader for the environment fingerprint
and the doctor (no torch import here, so the doctor can read it before torch loads)."""

from __future__ import annotations

import platform


def fields(keys: tuple[str, ...]) -> dict[str, str]:
    """The first processor's ``key: value`` lines for ``keys`` (empty off Linux)."""
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    break  # the first processor's block ends at its blank line
                key, _, value = line.partition(":")
                if key.strip() in keys:
                    found[key.strip()] = value.strip()
    except OSError:
        pass
    return found


def model() -> str:
    """The brand string ("Intel(R) Xeon(R) Processor"); the platform's name elsewhere."""
    return fields(("model name",)).get("model name") or platform.processor() or platform.machine()


def flags() -> tuple[str, ...]:
    """The ISA flags that kernels dispatch on (avx512_bf16, amx_tile, ...)."""
    return tuple(fields(("flags",)).get("flags", "").split())
