"""Pool result files of one grid from separate processes into one result, as pytest-benchmark lays
it out: the rounds concatenated in run order, every per-round list beside them, and every judged
metric (from the registry) pooled. `gpt2-bench ab` and calibrated baselines share this.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from gpt2_fixtures.results.files import UnusableInput
from gpt2_fixtures.results.metrics import EXTRA_METRICS


def pooled_mean_std(parts: Sequence[tuple[float, float, int]]) -> tuple[float, float]:
    """Mean and std of the union of groups given as (mean, std, n): within-group (n-1)s^2 plus
    between-group n(mean - grand mean)^2."""
    n = sum(k for _, _, k in parts)
    mean = sum(m * k for m, _, k in parts) / n
    ss = sum((k - 1) * s * s + k * (m - mean) ** 2 for m, s, k in parts)
    return mean, (ss / (n - 1)) ** 0.5 if n > 1 else 0.0


def round_stats(data: list[float]) -> dict[str, Any]:
    """pytest-benchmark's ``stats`` block for per-round seconds (one iteration per round)."""
    q1, _, q3 = statistics.quantiles(data, n=4) if len(data) > 1 else (data[0],) * 3
    return {
        "min": min(data),
        "max": max(data),
        "mean": statistics.fmean(data),
        "stddev": statistics.stdev(data) if len(data) > 1 else 0.0,
        "median": statistics.median(data),
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "rounds": len(data),
        "iterations": 1,
        "total": sum(data),
        "ops": 1 / statistics.fmean(data),
        "data": data,
    }


def _round_lists(infos: Sequence[Mapping[str, Any]], rounds: Sequence[int]) -> dict[str, Any]:
    """Per-round lists (``control_round_s``, ``ttft_round_ms`` ...) concatenated in run order; a
    list is pooled only when every run has it aligned with its rounds, else it becomes None."""
    keys = {k for info in infos for k, v in info.items() if isinstance(v, list)}
    out: dict[str, Any] = {}
    for key in sorted(keys):
        parts = [info.get(key) for info in infos]
        aligned = all(
            isinstance(p, list) and len(p) == n for p, n in zip(parts, rounds, strict=True)
        )
        out[key] = [x for p in parts if isinstance(p, list) for x in p] if aligned else None
    return out


def _metric(
    key: str, std: str, median: bool, infos: Sequence[Mapping[str, Any]], rounds: Sequence[int]
) -> dict[str, Any]:
    """One metric over the union of the runs' rounds: an exact counter is the median process's
    count; any other metric, memory included, the pooled mean. The gate judges a pooled value
    against k x the between-process std x sqrt(1/m + 1/n), the noise of a difference of means: a
    median of a few processes' lumpy resident readings sat up to two logits buffers from their
    mean (docs/gate.md, "Memory"). Nothing when no run has it, None when some lack it (the first
    run's value alone would pass for all of them)."""
    values = [info.get(key) for info in infos]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return {key: None} if any(v is not None for v in values) else {}
    stds = [info.get(std) for info in infos]
    has_std = all(isinstance(s, int | float) for s in stds)
    parts = [
        (float(v), float(s) if has_std else 0.0, n)  # type: ignore[arg-type]
        for v, s, n in zip(values, stds, rounds, strict=True)
    ]
    mean, pooled_std = pooled_mean_std(parts)
    value = statistics.median(p[0] for p in parts) if median else mean
    return {key: value, std: pooled_std} if has_std else {key: value}


def pool_entry(entries: Sequence[Mapping[str, Any]], label: str) -> dict[str, Any]:
    """One benchmark's entries from several runs as one entry; UnusableInput without rounds."""
    first = entries[0]
    parts = [(e.get("stats") or {}).get("data") or [] for e in entries]
    if not all(parts):
        raise UnusableInput(f"{label}: benchmark {first['name']}: no per-round samples to pool")
    infos = [dict(e.get("extra_info") or {}) for e in entries]
    rounds = [len(p) for p in parts]
    info = dict(infos[0])
    info.update(_round_lists(infos, rounds))
    for m in EXTRA_METRICS:  # every metric the gate judges, from the one registry
        info.update(_metric(m.key, m.std_key, m.test == "counter", infos, rounds))
    return {**first, "stats": round_stats([x for p in parts for x in p]), "extra_info": info}


def by_fullname(docs: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Each benchmark's entries across the documents, in run order."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for doc in docs:
        for bench in doc["benchmarks"]:
            out.setdefault(bench["fullname"], []).append(bench)
    return out


def pool_results(docs: Sequence[Mapping[str, Any]], label: str) -> dict[str, Any]:
    """One result whose benchmarks hold the rounds of all ``docs``, in run order."""
    entries = by_fullname(docs).values()
    return {**docs[0], "benchmarks": [pool_entry(v, label) for v in entries]}
