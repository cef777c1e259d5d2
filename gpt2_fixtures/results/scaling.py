"""Scaling efficiency of distributed results: JSON arithmetic, no torch (``merge`` uses it)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def scaling_key(info: Mapping[str, Any]) -> tuple[Any, ...]:
    """Results that differ only in world size share this key."""
    keys = ("model", "weights", "dataset", "device_name", "optimization", "strategy")
    return (*(info.get(k) for k in keys), info.get("batch_size"), info.get("seq_len"))


def scaling_efficiency(
    tokens_per_s: float | None, world_size: int, single_rank_tokens_per_s: float | None
) -> float | None:
    """(tokens/s of N ranks / N) / tokens/s of 1 rank, with the per-rank batch fixed (weak
    scaling). 1.0 is linear scaling."""
    if not tokens_per_s or not single_rank_tokens_per_s or world_size < 1:
        return None
    return tokens_per_s / world_size / single_rank_tokens_per_s


def fill_scaling_efficiency(benchmarks: Iterable[dict[str, Any]]) -> int:
    """Fill ``scaling_efficiency`` where it is null and a world-size-1 result of the same case is
    in ``benchmarks`` (e.g. after merging a 1-rank and an N-rank launch); returns how many."""
    benches = list(benchmarks)
    single = {
        scaling_key(b["extra_info"]): b["extra_info"].get("tokens_per_s")
        for b in benches
        if (b.get("extra_info") or {}).get("strategy") and b["extra_info"].get("world_size") == 1
    }
    filled = 0
    for b in benches:
        info = b.get("extra_info") or {}
        if not info.get("strategy") or info.get("scaling_efficiency") is not None:
            continue
        value = scaling_efficiency(
            info.get("tokens_per_s"),
            int(info.get("world_size") or 0),
            single.get(scaling_key(info)),
        )
        if value is not None:
            info["scaling_efficiency"] = value
            filled += 1
    return filled
